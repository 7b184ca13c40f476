"""The look-ahead check passes on every example rule file and catches leaks."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from S1.cli import run
from S1.datasets import Dataset, dataset_path, sentiment_path, write_parquet
from S1.errors import UserError
from S4.rules import load_rules, parse_rules
from S5.lookahead import add_default_indicators, choose_cuts, lookahead_check


@pytest.fixture(scope="module")
def candles():
    from S1.local.simulated import simulate_candles

    return simulate_candles("ETHUSDC", "1h", "2023-01-01", "2023-02-15")


def synthetic_sentiment(index: pd.DatetimeIndex, seed: int = 1) -> pd.DataFrame:
    """Scores published at irregular times (not on the hour), as S3 writes them."""
    rng = np.random.default_rng(seed)
    t = index[0] + pd.to_timedelta(np.cumsum(rng.integers(20, 200, 2000)), unit="min")
    t = t[t < index[-1] + pd.Timedelta(hours=2)]
    score = np.clip(np.cumsum(rng.normal(0, 0.15, len(t))) * 0.2, -1, 1)
    return pd.DataFrame({"sentiment_score": score, "n_items": rng.integers(1, 9, len(t)).astype(float)},
                        index=pd.DatetimeIndex(t, name="time"))


def test_passes_on_the_ta_only_rules(candles):
    rep = lookahead_check(candles, load_rules("S4/rules_ta_only.yaml"), cuts=30)
    assert rep.passed, rep.changes.head()
    assert {"rsi14", "sma50", "MACDh_12_26_9", "entry", "exit", "signal", "rule"} <= set(rep.columns)
    assert len(rep.cuts) >= 20 and rep.rows_compared > 10_000


def test_passes_on_the_sentiment_rules(candles):
    rules = load_rules("S4/rules.yaml")
    sent = synthetic_sentiment(candles.index)
    rep = lookahead_check(candles, rules, sentiment=sent, cuts=30)
    assert rep.passed, rep.changes.head()
    assert "sentiment_score" in rep.columns


def test_passes_on_the_ml_rules_file_and_refit(candles):
    from S4.ml_score import WalkForward, ml_frame, ml_scores

    rules = load_rules("S4/rules_ml.yaml")
    plan = WalkForward(horizon=4, train_bars=300, test_bars=150)
    ta = add_default_indicators(candles)
    ml = ml_frame(ta, ml_scores(ta, plan))
    rep = lookahead_check(candles, rules, ml=ml, cuts=20)
    assert rep.passed and "ml_proba" in rep.columns and rep.notes
    refit = lookahead_check(candles, rules, ml_fn=lambda t: ml_frame(t, ml_scores(t, plan)), cuts=4,
                            min_rows=500)
    assert refit.passed, refit.changes.head()


def test_catches_a_feature_that_reads_the_next_close(candles):
    rules = parse_rules("entry: {col: future_close, op: '>', other: close}\nexit: {col: rsi14, op: '>', value: 60}",
                        columns=["future_close", "close", "rsi14"])

    def leaky(df):
        return add_default_indicators(df).assign(future_close=df["close"].shift(-1))

    rep = lookahead_check(candles, rules, indicators=leaky, cuts=20)
    assert not rep.passed
    by = rep.by_column()
    assert "future_close" in by.index
    # the last kept bar of every cut loses its value once the future is gone
    fc = rep.changes[rep.changes["column"] == "future_close"]
    assert (fc["time"] == fc["cut"]).all() and fc["truncated"].isna().all()
    assert {"entry", "signal"} & set(by.index)


def test_catches_a_centred_window(candles):
    rules = parse_rules("entry: {col: smooth, op: crosses_above, other: sma50}\n"
                        "exit: {col: rsi14, op: '>', value: 70}",
                        columns=["smooth", "sma50", "rsi14"])

    def centred(df):
        return add_default_indicators(df).assign(smooth=df["close"].rolling(5, center=True).mean())

    rep = lookahead_check(candles, rules, indicators=centred, cuts=20)
    assert not rep.passed and "smooth" in rep.by_column().index


def test_catches_a_sentiment_join_that_peeks(candles, monkeypatch):
    """A join that takes the news of the coming hour (the bug S4's as-of join avoids)."""
    import S4.signals as sig

    real = sig.asof_positions

    def peeking(left, right):
        return real(left + pd.Timedelta(minutes=59), right)

    monkeypatch.setattr(sig, "asof_positions", peeking)
    rules = load_rules("S4/rules.yaml")
    rep = lookahead_check(candles, rules, sentiment=synthetic_sentiment(candles.index), cuts=20)
    assert not rep.passed and "sentiment_score" in rep.by_column().index


def test_choose_cuts():
    cuts = choose_cuts(1000, np.array([10, 500, 998, 999]), cuts=10, min_rows=100)
    assert cuts.min() >= 100 and cuts.max() == 999 and 501 in cuts and 999 in cuts
    with pytest.raises(UserError, match="too few"):
        choose_cuts(50, np.array([]), cuts=10, min_rows=100)


def _main(argv):
    from S5.lookahead_check import main

    return run(main, argv)


def test_cli(settings_env, candles, capsys):
    assert _main(["--symbol", "ETHUSDC", "--interval", "1h", "--days", "45", "--rules", "S4/rules_ta_only.yaml"]) == 2
    assert "python S1/historical.py --symbol ETHUSDC --interval 1h --days 45" in capsys.readouterr().err
    write_parquet(candles, dataset_path(Dataset("ETHUSDC", "1h", 45)), metadata={"simulated": True})
    assert _main(["--symbol", "ETHUSDC", "--interval", "1h", "--days", "45", "--rules", "S4/rules_ta_only.yaml",
                  "--cuts", "12"]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out
    assert (settings_env.reports_dir / "ethusdc_1h_45d__rules_ta_only_lookahead.json").exists()
    assert _main(["--symbol", "ETHUSDC", "--interval", "1h", "--days", "45", "--rules", "S4/rules.yaml"]) == 2
    assert "python S3/sentiment.py" in capsys.readouterr().err
    write_parquet(synthetic_sentiment(candles.index), sentiment_path("1h"), metadata={"simulated": True})
    assert _main(["--symbol", "ETHUSDC", "--interval", "1h", "--days", "45", "--rules", "S4/rules.yaml",
                  "--cuts", "12"]) == 0
