"""Per-asset sentiment series (S3/pipeline.py ``per_symbol``, ``S3/sentiment.py --per-symbol``):
each equals the market-wide computation on the items tagged with that asset, without look-ahead."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from S1.datasets import read_metadata, read_parquet, sentiment_path, write_parquet
from S1.errors import UserError
from S3.items import make_items, read_items
from S3.pipeline import asset_files, build_sentiment

NOW = pd.Timestamp("2024-03-10T00:00Z")
HEADLINES = [
    ("2024-03-01T10:37Z", "Bitcoin surges to an all-time high as ETF inflows soar"),
    ("2024-03-01T13:05Z", "Ethereum exchange hacked, $50 million in ether stolen"),
    ("2024-03-02T09:00Z", "Bitcoin and Ether plunge as liquidations mount"),
    ("2024-03-02T15:00Z", "Crypto markets quiet ahead of the Fed meeting"),
    ("2024-03-03T08:20Z", "Solana outage halts the network; SOL drops"),
    ("2024-03-03T11:00Z", "El sol brilla: crypto conference opens in Madrid"),
    ("2024-03-04T07:45Z", "$BTC rallies as miners report record revenue"),
    ("2024-03-04T18:10Z", "Ether ETF approval sends ETH to a two-year high"),
]


def write_items(path, rows) -> pd.DataFrame:
    items = make_items([{"title": t, "published_at": p, "url": f"https://news.test/{i}"} for i, (p, t) in
                        enumerate(rows)], source="file:test", fetched_at=NOW)
    write_parquet(items, path, metadata={"kind": "news_items"})
    return items


def run(items_path, **kw):
    return build_sentiment(since="2024-03-01", until="2024-03-06", interval="1h", fetch=False,
                           classifier="lexicon", items_path=items_path, progress=False, **kw)


def test_per_asset_series_equal_the_market_computation_on_the_tagged_items(settings_env, tmp_path):
    items = write_items(settings_env.data_dir / "news_items.parquet", HEADLINES)
    market, res = run(settings_env.data_dir / "news_items.parquet", per_symbol=True)
    assert sorted(res.asset_paths) == ["BTC", "ETH", "SOL"]          # the Spanish "sol" headline tags nothing
    assert res.asset_items == {"BTC": 3, "ETH": 3, "SOL": 1}
    assert res.path == sentiment_path("1h") and read_parquet(res.path).equals(market)
    for asset, path in res.asset_paths.items():
        assert path == sentiment_path("1h", asset=asset)
        got = read_parquet(path)
        # the reference: the unchanged market-wide job run on a file holding only the tagged items
        ref_dir = tmp_path / asset
        ref_dir.mkdir()
        tagged = [(p, t) for (p, t), a in zip(HEADLINES, items["assets"]) if asset in a.split(",")]
        write_items(ref_dir / "items.parquet", tagged)
        ref, _ = run(ref_dir / "items.parquet", out_path=ref_dir / "ref.parquet")
        pd.testing.assert_frame_equal(got, ref)
        assert list(got.columns) == list(market.columns) and got.index.equals(market.index)
        meta = read_metadata(path)
        assert meta["scope"] == "asset" and meta["asset"] == asset and meta["items_used"] == len(tagged)
    assert read_metadata(res.path)["scope"] == "market"
    btc, eth = read_parquet(res.asset_paths["BTC"]), read_parquet(res.asset_paths["ETH"])
    # the ETH hack (13:05) moves ETH's series at 14:00 and not BTC's; the market-wide one sees it
    t = pd.Timestamp("2024-03-01T14:00Z")
    assert eth.loc[t, "n_items"] == 1 and btc.loc[t, "n_items"] == 0 and market.loc[t, "n_items"] == 1
    assert eth.loc[t, "sentiment_score"] < 0 < btc.loc[t, "sentiment_score"]


def test_per_asset_series_have_no_look_ahead(settings_env):
    path = settings_env.data_dir / "news_items.parquet"
    write_items(path, HEADLINES)
    run(path, per_symbol=["BTC"])
    btc = read_parquet(sentiment_path("1h", asset="BTC"))
    # 10:37 -> the 11:00 candle, never the 10:00 one
    assert btc.loc["2024-03-01T10:00Z", "n_items"] == 0 and btc.loc["2024-03-01T11:00Z", "n_items"] == 1
    assert btc.loc["2024-03-01T10:00Z", "sentiment_score"] == 0 and btc.loc["2024-03-01T11:00Z", "sentiment_score"] > 0
    # adding BTC news after T changes nothing at or before T
    cut = pd.Timestamp("2024-03-03T00:00Z")
    write_items(path, HEADLINES + [("2024-03-03T00:00Z", "Bitcoin crashes 30% in an hour, exchange halts"),
                                   ("2024-03-02T23:59:59Z", "SOL and Cardano rally")])
    run(path, per_symbol=["BTC"])
    later = read_parquet(sentiment_path("1h", asset="BTC"))
    pd.testing.assert_frame_equal(later.loc[:cut], btc.loc[:cut])
    assert not later.loc[cut:].equals(btc.loc[cut:])


def test_per_symbol_choices_errors_and_stale_files(settings_env, caplog):
    path = settings_env.data_dir / "news_items.parquet"
    write_items(path, HEADLINES)
    _, res = run(path, per_symbol="BTC,xrp")
    assert sorted(res.asset_paths) == ["BTC", "XRP"] and res.asset_items["XRP"] == 0
    assert (read_parquet(res.asset_paths["XRP"])["sentiment_score"] == 0).all()
    with pytest.raises(UserError, match=r"unknown asset\(s\) \['XYZ'\]"):
        run(path, per_symbol=["XYZ"])
    _, res = run(path)                                             # without --per-symbol: old files are reported
    assert [p.name for p in res.stale_asset_files] == ["sentiment_btc_1h.parquet", "sentiment_xrp_1h.parquet"]
    assert "not updated" in caplog.text
    assert asset_files("1h") == res.stale_asset_files and asset_files("4h") == []


def test_retag_uses_the_current_dictionary(settings_env, tmp_path):
    path = settings_env.data_dir / "news_items.parquet"
    items = write_items(path, HEADLINES + [("2024-03-04T20:00Z", "Hashgraph council votes on a new treasury")])
    assert items["assets"].iloc[-1] == ""
    extra = tmp_path / "aliases.yaml"
    extra.write_text("HBAR: {names: [hashgraph]}\n")
    from S3.config import load_config

    cfg = load_config()
    cfg = cfg.model_copy(update={"assets": cfg.assets.model_copy(update={"extra_file": str(extra)})})
    _, res = run(path, per_symbol=["HBAR"], config=cfg)
    assert res.asset_items["HBAR"] == 0                           # stored tags are used...
    _, res = run(path, per_symbol=["HBAR"], config=cfg, retag=True)
    assert res.asset_items["HBAR"] == 1                           # ...unless --retag
    assert read_metadata(res.asset_paths["HBAR"])["retagged"] is True


def test_an_old_items_file_works_with_per_symbol(settings_env):
    path = settings_env.data_dir / "news_items.parquet"
    items = write_items(path, HEADLINES)
    write_parquet(items.drop(columns="assets"), path, metadata={"kind": "news_items"})
    assert read_items(path)["assets"].tolist() == items["assets"].tolist()
    _, res = run(path, per_symbol=True)
    assert res.asset_items == {"BTC": 3, "ETH": 3, "SOL": 1}


def test_script_per_symbol(settings_env, tmp_path, capsys):
    from S3.sentiment import main

    csv = tmp_path / "h.csv"
    pd.DataFrame({"published_at": [p for p, _ in HEADLINES], "headline": [t for _, t in HEADLINES]}).to_csv(csv,
                                                                                                           index=False)
    assert main(["--since", "2024-03-01", "--until", "2024-03-06", "--sources", f"file:{csv}",
                 "--classifier", "lexicon", "--per-symbol"]) == 0
    out = capsys.readouterr().out
    assert "BTC: 3 item(s) -> " in out and "ETH: 3 item(s)" in out and "SOL: 1 item(s)" in out
    for a in ("btc", "eth", "sol"):
        assert (settings_env.data_dir / f"sentiment_{a}_1h.parquet").exists()
    assert np.isfinite(read_parquet(sentiment_path("1h", asset="ETH"))["sentiment_score"]).all()
