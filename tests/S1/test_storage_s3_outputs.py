"""DATA_DIR=s3://... beyond the dataset chain (issue 20), against moto's S3 server (the fixtures of
tests/S1/test_s3_storage.py): ``--out s3://`` of S1/historical.py (Binance and Dukascopy) writes the
object, S3's news/sentiment pipeline, S5 parity over symbols and the walk-forward (both fanned out to
local processes), the S7 dashboard's readers and the batch runner (sequential and 2 processes) --
each round trip read back and compared with the same run on a local folder."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from S1.cli import run
from tests.S1.test_s3_storage import BUCKET, _keys, s3_data, s3_server  # noqa: F401  (fixtures)

REPO = Path(__file__).resolve().parents[2]


def _no_local_s3_folder(*roots: Path) -> None:
    """An ``s3://`` path taken as a local one would create a folder named ``s3:``."""
    for root in (Path.cwd(), REPO, *roots):
        assert not (root / "s3:").exists(), root


def _local(monkeypatch, tmp_path, name: str) -> Path:
    """DATA_DIR back to a local folder (the S3 settings stay)."""
    from S1.settings import get_settings

    d = tmp_path / name
    monkeypatch.setenv("DATA_DIR", str(d))
    get_settings.cache_clear()
    return d


def _s3(monkeypatch, url: str) -> None:
    from S1.settings import get_settings

    monkeypatch.setenv("DATA_DIR", str(url))
    get_settings.cache_clear()


# ---------------------------------------------------------------------- --out s3://
def test_historical_out_writes_the_object(s3_data, exchange, tmp_path, capsys):
    from S1.datasets import dataset_path, read_candles, read_metadata
    from S1.historical import main as history
    from S1.storage import as_path

    target = as_path(f"{s3_data}/exports/btc-hourly.parquet")
    argv = ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "30"]
    assert run(history, [*argv, "--out", str(target)]) == 0, capsys.readouterr()
    assert f"{target}" in capsys.readouterr().out
    assert _keys(s3_data) == [f"{s3_data.key.split('/', 1)[1]}/exports/btc-hourly.parquet"]   # that key only
    got = read_candles(target)
    assert read_metadata(target)["symbol"] == "BTCUSDT" and len(got) >= 24 * 29
    assert run(history, argv) == 0                                   # the default file: the same candles
    pd.testing.assert_frame_equal(got, read_candles(dataset_path("BTCUSDT", "1h", 30)))
    assert run(history, [*argv, "--out", str(target)]) == 0          # a re-run reads the object back
    assert "+0 new" in capsys.readouterr().out
    _no_local_s3_folder(tmp_path)


def test_dukascopy_out_writes_the_object(s3_data, duka, tmp_path, capsys):
    from S1.datasets import read_candles, read_metadata
    from S1.historical import main as history
    from S1.storage import as_path

    from tests.S1.test_dukascopy import random_ticks

    duka.add_ticks("EURUSD", random_ticks(), decimals=5)
    target = as_path(f"{s3_data}/fx/eurusd.parquet")
    argv = ["--source", "dukascopy", "--symbol", "EURUSD", "--interval", "1h", "--days", "3",
            "--end", "2024-01-08 12:00"]
    assert run(history, [*argv, "--out", str(target)]) == 0, capsys.readouterr()
    got = read_candles(target)
    meta = read_metadata(target)
    assert meta["exchange"] == "dukascopy" and len(got) > 10
    local = tmp_path / "eurusd.parquet"
    assert run(history, [*argv, "--out", str(local)]) == 0
    pd.testing.assert_frame_equal(got, read_candles(local))
    _no_local_s3_folder(tmp_path)


from tests.S1.test_dukascopy import duka  # noqa: E402,F401  (fixture: the local Dukascopy server)


# --------------------------------------------------------------- S3 sentiment pipeline
def test_news_and_sentiment_pipeline_on_s3(s3_data, monkeypatch, tmp_path, capsys):
    from S1.datasets import news_items_path, read_metadata, read_parquet, sentiment_path
    from S3.sentiment import main as sentiment

    news = tmp_path / "news.csv"
    news.write_text("published_at,title\n2024-01-01T10:37:00Z,Exchange hacked and funds stolen\n"
                    "2024-01-01T12:00:00Z,Bitcoin ETF approval sends BTC to a record high\n"
                    "2024-01-01T13:10:00Z,Ethereum upgrade goes live smoothly\n")
    argv = ["--since", "2024-01-01", "--until", "2024-01-01 16:00", "--sources", f"file:{news}",
            "--classifier", "lexicon", "--half-life", "2h"]
    got = {}
    for where in ("s3", "local"):
        if where == "local":
            _local(monkeypatch, tmp_path, "local")
        assert run(sentiment, argv) == 0, capsys.readouterr()
        got[where] = (read_parquet(sentiment_path("1h")), read_parquet(news_items_path()),
                      read_metadata(sentiment_path("1h")))
        assert str(sentiment_path("1h")).startswith(str(s3_data)) == (where == "s3")
    names = [k.rsplit("/", 1)[-1] for k in _keys(s3_data)]
    assert {"sentiment_1h.parquet", "news_items.parquet"} <= set(names)
    pd.testing.assert_frame_equal(got["s3"][0], got["local"][0])
    items_s3, items_local = got["s3"][1], got["local"][1]
    assert items_s3["title"].tolist() == items_local["title"].tolist() and len(items_s3) == 3
    assert got["s3"][2]["classifier"] == "lexicon"
    _s3(monkeypatch, str(s3_data))                                    # a re-run appends nothing to the object
    assert run(sentiment, argv) == 0
    assert "0 new item(s) appended, 3 stored" in capsys.readouterr().out
    _no_local_s3_folder(tmp_path)


# ------------------------------------------------------------------- S5 on S3
def _market_on(data_dir, symbols=("BTCUSDT", "ETHUSDT")) -> None:
    from S1.local.simulated import simulate_candles
    from tests.S4.helpers import write_market

    for s in symbols:
        write_market(data_dir, simulate_candles(s, "1h", "2023-01-01", "2023-03-02"), symbol=s, days=60,
                     simulated=True)


def test_parity_over_symbols_on_s3(s3_data, capsys):
    from S5.parity import main as parity

    _market_on(s3_data)
    argv = ["--symbols", "BTCUSDT,ETHUSDT", "--interval", "1h", "--days", "60", "--rules", "S4/rules_ta_only.yaml"]
    assert run(parity, [*argv, "--workers", "2"]) == 0        # the worker processes read and write the bucket
    out = capsys.readouterr().out
    assert out.strip().splitlines()[-1].startswith("total: 2 symbols") and "0 mismatches" in out
    docs = {p.name: json.loads(p.read_text()) for p in s3_data.glob("*_parity.json")}
    assert sorted(docs) == ["btcusdt_1h_60d__rules_ta_only_parity.json", "ethusdt_1h_60d__rules_ta_only_parity.json"]
    assert all(d["ok"] and d["mismatches"] == [] for d in docs.values())
    assert all(len(d["backtest"]) > 0 for d in docs.values())
    for name in docs:
        assert f"{s3_data}/{name}" in out


def test_walk_forward_reads_s3_and_writes_reports_once(s3_data, monkeypatch, tmp_path):
    from S1.datasets import dataset_path, read_parquet, write_parquet
    from S1.offline import simulate_candles
    from S2.ta import add_indicators
    from S5.optimize import main as optimize

    ta = add_indicators(simulate_candles("BTCUSDT", "1h", "2023-01-01", "2023-03-15"))
    write_parquet(ta, dataset_path("BTCUSDT", "1h", 60, "ta"), metadata={"simulated": True})
    argv = ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "60", "--rules", "S4/rules_ta_only.yaml",
            "--walk-forward", "2", "--wf-test", "200", "--trials", "3", "--min-trades", "1", "--no-html",
            "--storage", f"sqlite:///{tmp_path / 'wf.db'}"]
    outs = {}
    for name, extra in (("seq", []), ("par", ["--workers", "2"])):
        from S1.settings import get_settings

        monkeypatch.setenv("REPORTS_DIR", str(tmp_path / f"reports-{name}"))
        get_settings.cache_clear()
        assert run(optimize, [*argv, *extra]) == 0
        files = sorted((tmp_path / f"reports-{name}").iterdir())
        assert len(files) == 3, files                                  # JSON + folds + equity, local reports
        outs[name] = {p.name: (read_parquet(p) if p.suffix == ".parquet" else None) for p in files}
    assert outs["seq"].keys() == outs["par"].keys()
    for k, v in outs["seq"].items():
        if v is not None:
            pd.testing.assert_frame_equal(v, outs["par"][k], check_exact=True)
    assert [k for k in _keys(s3_data) if not k.endswith("_ta.parquet")] == []    # nothing else in the bucket


# -------------------------------------------------------------- S7 dashboard readers
def test_dashboard_readers_on_s3_match_a_local_folder(s3_data, monkeypatch, tmp_path):
    from S1.datasets import sentiment_path, write_parquet
    from S7.dashboard_files import coverage_table, has_any_data, sentiment_files
    from S7.dashboard_market import indicator_sources
    from tests.S4.helpers import make_sentiment

    local = tmp_path / "localdata"
    for d in (s3_data, local):
        _market_on(d, symbols=("BTCUSDT",))
        idx = pd.date_range("2023-01-01", periods=48, freq="h", tz="UTC", name="open_time")
        write_parquet(make_sentiment(idx), sentiment_path("1h", data_dir=d), metadata={"simulated": True})
    a, b = coverage_table(data_dir=s3_data), coverage_table(data_dir=local)
    assert len(a) == 3 and a["note"].fillna("").eq("").all(), a
    same = [c for c in a.columns if c not in ("size_mb", "modified")]
    pd.testing.assert_frame_equal(a[same], b[same])
    assert (a["modified"] > pd.Timestamp("2024-01-01", tz="UTC")).all()
    assert has_any_data(data_dir=s3_data) and [iv for iv, _ in sentiment_files(data_dir=s3_data)] == ["1h"]
    sa, sb = indicator_sources(data_dir=s3_data), indicator_sources(data_dir=local)
    assert [(s.symbol, s.interval, s.days) for s in sa] == [(s.symbol, s.interval, s.days) for s in sb] != []
    from S7.dashboard_market import load_indicators

    pd.testing.assert_frame_equal(load_indicators(sa[0]), load_indicators(sb[0]))


# ------------------------------------------------------------------- the batch runner
BATCH = """
defaults: {source: rest, end: "2023-05-01"}
jobs:
  - symbols: [BTCUSDT]
    intervals: [1h]
    days: [20, 10]
"""


def test_batch_runner_on_s3_sequential_and_processes(s3_data, exchange, monkeypatch, tmp_path):
    from S1.batch import main as batch
    from S1.datasets import data_dir, read_candles, read_metadata

    cfg = tmp_path / "batch.yaml"
    cfg.write_text(BATCH)
    got = {}
    for name, extra in (("seq", []), ("par", ["--workers", "2"])):
        _s3(monkeypatch, f"{s3_data}/{name}")
        assert run(batch, ["--config", str(cfg), "--derive", "4h", *extra]) == 0
        objs = sorted(p.name for p in data_dir().iterdir())
        assert objs == ["btcusdt_1h_10d.parquet", "btcusdt_1h_20d.parquet", "btcusdt_4h_10d.parquet",
                        "btcusdt_4h_20d.parquet"], objs
        got[name] = {n: (read_candles(data_dir() / n),
                         {k: v for k, v in read_metadata(data_dir() / n).items() if k not in ("updated_at",
                                                                                               "written_at")})
                     for n in objs}
    for n, (df, meta) in got["seq"].items():
        assert df.equals(got["par"][n][0]) and meta == got["par"][n][1] and len(df), n
    assert os.environ["DATA_DIR"].startswith("s3://")
    _no_local_s3_folder(tmp_path)
