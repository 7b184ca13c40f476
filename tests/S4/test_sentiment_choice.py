"""S4/signals.py: which sentiment series a symbol's rules read -- the base asset's
per-asset series (S3 --per-symbol) in ``auto`` when present and current, else the
market-wide one; ``market`` / ``asset`` force it; the choice is recorded."""

from __future__ import annotations

import numpy as np
import pytest

from S1.datasets import Dataset, read_metadata, read_parquet, sentiment_path, write_parquet
from S1.errors import UserError
from S4.signals import (
    base_asset,
    build_signals,
    choose_sentiment_file,
    find_sentiment_file,
    join_sentiment,
    load_rule_inputs,
)
from tests.S4.helpers import RULE_FILES, make_sentiment, write_market

SENT_RULES = RULE_FILES[0]          # rules.yaml reads sentiment_score


@pytest.mark.parametrize("symbol,base", [("BTCUSDT", "BTC"), ("ethusdc", "ETH"), ("ETH/BTC", "ETH"),
                                         ("SOLFDUSD", "SOL"), ("BNBTRY", "BNB"), ("USDCUSDT", "USDC"),
                                         ("1INCHUSDT", "1INCH"), ("BTCEUR", "BTC"), ("PEPE", "PEPE")])
def test_base_asset(symbol, base):
    assert base_asset(symbol) == base


@pytest.fixture
def market(settings_env, btc_1h):
    write_market(settings_env.data_dir, btc_1h)
    sent = make_sentiment(btc_1h.index, seed=1)
    write_parquet(sent, sentiment_path("1h"), metadata={"kind": "sentiment", "scope": "market"})
    return sent


def test_without_a_per_asset_file_nothing_changes(market):
    inputs = load_rule_inputs(Dataset("BTCUSDT", "1h", 150), SENT_RULES)
    assert inputs.sources["sentiment"] == "sentiment_1h.parquet" and inputs.sources["sentiment_scope"] == "market"
    assert inputs.sentiment["requested"] == "auto" and inputs.sentiment["asset"] == "BTC"
    ref = join_sentiment(inputs.frame.drop(columns=["sentiment_score"]), market, columns=["sentiment_score"])
    np.testing.assert_array_equal(inputs.frame["sentiment_score"], ref["sentiment_score"])
    assert find_sentiment_file("1h", None) == sentiment_path("1h")           # S5 / S7 callers: unchanged
    with pytest.raises(UserError, match=r"sentiment_btc_1h.parquet does not exist -- .*--per-symbol BTC"):
        load_rule_inputs(Dataset("BTCUSDT", "1h", 150), SENT_RULES, sentiment_scope="asset")
    with pytest.raises(UserError, match="unknown sentiment scope 'coin'"):
        load_rule_inputs(Dataset("BTCUSDT", "1h", 150), SENT_RULES, sentiment_scope="coin")


def test_auto_reads_the_base_assets_series(market, btc_1h):
    btc = make_sentiment(btc_1h.index, seed=2)
    eth = make_sentiment(btc_1h.index, seed=3)
    write_parquet(btc, sentiment_path("1h", asset="BTC"), metadata={"scope": "asset", "asset": "BTC"})
    write_parquet(eth, sentiment_path("1h", asset="ETH"), metadata={"scope": "asset", "asset": "ETH"})
    res = build_signals(Dataset("BTCUSDT", "1h", 150), SENT_RULES)
    ta = read_parquet(res.path)
    np.testing.assert_array_equal(res.frame["sentiment_score"],
                                  join_sentiment(ta.drop(columns=["sentiment_score"]), btc,
                                                 columns=["sentiment_score"])["sentiment_score"])
    assert not np.allclose(res.frame["sentiment_score"].fillna(0),
                           join_sentiment(ta, market, columns=["sentiment_score"])["sentiment_score"].fillna(0))
    meta = read_metadata(res.path)["signals"]
    assert meta["sources"]["sentiment"] == "sentiment_btc_1h.parquet"
    assert meta["sources"]["sentiment_scope"] == "asset:BTC"
    assert meta["sentiment"] == {"requested": "auto", "used": "asset", "asset": "BTC",
                                 "file": "sentiment_btc_1h.parquet", "reason": "news tagged BTC"}
    forced = build_signals(Dataset("BTCUSDT", "1h", 150), SENT_RULES, sentiment_scope="market", write=False)
    assert forced.sources["sentiment"] == "sentiment_1h.parquet" and forced.metadata["signals"]["sentiment"][
        "requested"] == "market"
    own = build_signals(Dataset("BTCUSDT", "1h", 150), SENT_RULES, sentiment_file=sentiment_path("1h", asset="ETH"),
                        write=False)
    assert own.sources["sentiment_scope"] == "file" and own.sources["sentiment"] == "sentiment_eth_1h.parquet"
    # another symbol reads its own asset; an asset without a file falls back to the market-wide series
    assert choose_sentiment_file("1h", None, symbol="ETHUSDC").path == sentiment_path("1h", asset="ETH")
    sol = choose_sentiment_file("1h", None, symbol="SOLUSDT")
    assert sol.path == sentiment_path("1h") and sol.used == "market" and "no per-asset file for SOL" in sol.reason


def test_a_per_asset_file_that_stopped_updating_is_not_used_in_auto(market, btc_1h, caplog):
    btc = make_sentiment(btc_1h.index, seed=2).iloc[:-100]          # ends 100 hours before the market-wide one
    write_parquet(btc, sentiment_path("1h", asset="BTC"))
    c = choose_sentiment_file("1h", None, symbol="BTCUSDT")
    assert c.used == "market" and c.path == sentiment_path("1h") and "not refreshed" in c.reason
    assert "--per-symbol" in caplog.text
    assert choose_sentiment_file("1h", None, symbol="BTCUSDT", scope="asset").path == sentiment_path("1h", asset="BTC")


def test_per_asset_without_market_file_and_interval_fallback(settings_env, btc_1h):
    write_market(settings_env.data_dir, btc_1h)
    write_parquet(make_sentiment(btc_1h.index), sentiment_path("1h", asset="BTC"))
    c = choose_sentiment_file("4h", None, symbol="BTCUSDT")          # the 1h file serves any interval
    assert c.used == "asset" and c.path.name == "sentiment_btc_1h.parquet"
    with pytest.raises(UserError, match="sentiment_1h.parquet does not exist"):
        choose_sentiment_file("1h", None, symbol="BTCUSDT", scope="market")
    with pytest.raises(UserError, match="needs the symbol"):
        choose_sentiment_file("1h", None, scope="asset")


def test_decision_cli_sentiment_flag(market, btc_1h, capsys):
    from S4.decision import main

    write_parquet(make_sentiment(btc_1h.index, seed=2), sentiment_path("1h", asset="BTC"))
    args = ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "150", "--rules", str(SENT_RULES), "--no-plot"]
    assert main(args) == 0
    assert "sentiment: sentiment_btc_1h.parquet (asset, --sentiment auto" in capsys.readouterr().out
    assert main([*args, "--sentiment", "market"]) == 0
    assert "sentiment: sentiment_1h.parquet (market, --sentiment market" in capsys.readouterr().out
    from S1.datasets import Dataset, dataset_path

    meta = read_metadata(dataset_path(Dataset("BTCUSDT", "1h", 150), "signals"))["signals"]
    assert meta["sentiment"]["used"] == "market" and meta["sources"]["sentiment_scope"] == "market"
    own = sentiment_path("1h", asset="BTC")
    assert main([*args, "--sentiment", str(own)]) == 0
    assert "(file, --sentiment file" in capsys.readouterr().out
