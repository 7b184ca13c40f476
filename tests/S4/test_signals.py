"""S4/signals.py: the sentiment as-of join (no value from the future), the ML join,
and the file job behind S4/decision.py (inputs, errors naming the right command,
atomic output, metadata)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from S1.datasets import Dataset, dataset_path, read_metadata, read_parquet, sentiment_path, write_parquet
from S1.errors import UserError
from S4.rules import load_rules, parse_rules
from S4.signals import asof_positions, build_signals, join_ml, join_sentiment, signals_frame
from tests.S4.helpers import RULE_FILES, make_sentiment, write_market


def hours(start: str, n: int) -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq="1h", tz="UTC", name="open_time")


# ------------------------------------------------------------------------ as-of join
def spike_at(grid: pd.DatetimeIndex, t: pd.Timestamp) -> pd.DataFrame:
    score = np.where(grid == t, 0.9, 0.0)
    return pd.DataFrame({"sentiment_score": score, "n_items": (score > 0).astype(np.int64)}, index=grid)


def test_a_sentiment_spike_is_seen_from_its_own_bucket_on_never_before():
    candles = pd.DataFrame({"close": np.arange(10.0)}, index=hours("2024-01-01", 10))
    grid = hours("2023-12-31 20:00", 20)
    t = candles.index[5]
    got = join_sentiment(candles, spike_at(grid, t))["sentiment_score"].to_numpy()
    assert got.tolist() == [0, 0, 0, 0, 0, 0.9, 0, 0, 0, 0]
    # move the spike one hour later: the candle at t no longer sees it, the next one does
    later = join_sentiment(candles, spike_at(grid, t + pd.Timedelta(hours=1)))["sentiment_score"].to_numpy()
    assert later[5] == 0 and later[6] == 0.9 and later.sum() == 0.9
    # a spike recorded one second after an open reaches the *next* candle only
    off = pd.DataFrame({"sentiment_score": [0.0, 0.9]}, index=pd.DatetimeIndex([grid[0], t + pd.Timedelta(seconds=1)]))
    got = join_sentiment(candles, off, columns=["sentiment_score"])["sentiment_score"].to_numpy()
    assert got[5] == 0 and (got[6:] == 0.9).all()


def test_asof_join_never_reads_a_later_row_on_random_times():
    rng = np.random.default_rng(5)
    candles = pd.DataFrame({"close": 1.0}, index=hours("2024-01-01", 500))
    times = pd.DatetimeIndex(np.sort(rng.choice(pd.date_range("2023-12-30", "2024-01-22", freq="min", tz="UTC"),
                                                300, replace=False)))
    sent = pd.DataFrame({"sentiment_score": rng.uniform(-1, 1, 300)}, index=times)
    pos = asof_positions(candles.index, sent.index)
    for i, p in enumerate(pos):
        t = candles.index[i]
        if p >= 0:
            assert sent.index[p] <= t
            assert p == len(sent) - 1 or sent.index[p + 1] > t  # the *last* one known
        else:
            assert sent.index[0] > t
    got = join_sentiment(candles, sent)["sentiment_score"].to_numpy()
    ref = pd.merge_asof(candles.reset_index(), sent.rename_axis("t").reset_index(), left_on="open_time",
                        right_on="t", direction="backward")["sentiment_score"].to_numpy()
    assert np.array_equal(got, ref, equal_nan=True)


def test_asof_join_before_first_row_max_age_and_column_choice():
    candles = pd.DataFrame({"close": 1.0}, index=hours("2024-01-01", 6))
    sent = pd.DataFrame({"sentiment_score": [0.1, 0.2], "n_items": [1, 2], "evidence": [0.5, 0.6]},
                        index=pd.DatetimeIndex(["2024-01-01 01:00", "2024-01-01 02:00"], tz="UTC"))
    out = join_sentiment(candles, sent)
    assert list(out.columns) == ["close", "sentiment_score", "n_items", "evidence"]
    assert out["sentiment_score"].tolist()[:3] == [pytest.approx(np.nan, nan_ok=True), 0.1, 0.2]
    assert out["sentiment_score"].iloc[5] == 0.2
    aged = join_sentiment(candles, sent, columns=["sentiment_score"], max_age="2h")["sentiment_score"]
    assert aged.isna().tolist() == [True, False, False, False, False, True]  # 05:00 is 3h after 02:00


def test_sentiment_frame_errors():
    candles = pd.DataFrame({"close": 1.0}, index=hours("2024-01-01", 3))
    bad = pd.DataFrame({"sentiment_score": [0.1, 0.2]},
                       index=pd.DatetimeIndex(["2024-01-01 02:00", "2024-01-01 01:00"], tz="UTC"))
    with pytest.raises(UserError, match="not strictly increasing -- re-create it with python S3/sentiment.py"):
        join_sentiment(candles, bad)
    with pytest.raises(UserError, match=r"no column\(s\) \['sentiment_score'\]"):
        join_sentiment(candles, bad.sort_index().rename(columns={"sentiment_score": "s"}), columns=["sentiment_score"])
    with pytest.raises(UserError, match="must be UTC timestamps"):
        join_sentiment(candles, bad.reset_index(drop=True))


def test_join_ml_matches_exact_open_times():
    candles = pd.DataFrame({"close": 1.0}, index=hours("2024-01-01", 4))
    ml = pd.DataFrame({"ml_proba": [0.6, 0.7]}, index=candles.index[[1, 3]])
    assert join_ml(candles, ml)["ml_proba"].tolist()[1::2] == [0.6, 0.7]
    assert join_ml(candles, ml)["ml_proba"].isna().tolist() == [True, False, True, False]
    with pytest.raises(UserError, match="no ml_proba column"):
        join_ml(candles, ml.rename(columns={"ml_proba": "p"}))


def test_signals_frame_joins_what_the_rules_need(btc_ta, btc_sentiment):
    r = load_rules(RULE_FILES[0])  # rules.yaml: sentiment
    out = signals_frame(btc_ta, r, sentiment=btc_sentiment)
    assert list(out.columns) == [*btc_ta.columns, "sentiment_score", "entry", "exit", "signal", "rule"]
    assert out["sentiment_score"].iloc[:24].isna().all() and out["sentiment_score"].iloc[24:].notna().all()
    with pytest.raises(UserError, match="no sentiment was given"):
        signals_frame(btc_ta, r)
    with pytest.raises(UserError, match="no ML frame was given -- .*python S4/model.py"):
        signals_frame(btc_ta, load_rules(RULE_FILES[1]))
    ta_only = signals_frame(btc_ta, load_rules(RULE_FILES[2]))
    assert list(ta_only.columns) == [*btc_ta.columns, "entry", "exit", "signal", "rule"]


# ------------------------------------------------------------------------ files
def test_build_signals_writes_the_inputs_plus_signals(settings_env, btc_1h, btc_sentiment):
    data = settings_env.data_dir
    write_market(data, btc_1h, simulated=True)
    write_parquet(btc_sentiment, sentiment_path("1h"), metadata={"kind": "sentiment"})
    res = build_signals(Dataset("BTCUSDT", "1h", 150), RULE_FILES[0])
    path = dataset_path(Dataset("BTCUSDT", "1h", 150), "signals")
    assert res.path == path and path.exists()
    df = read_parquet(path)
    ta = read_parquet(dataset_path(Dataset("BTCUSDT", "1h", 150), "ta"))
    assert df.index.equals(ta.index) and str(df.index.tz) == "UTC" and df.index.name == "open_time"
    pd.testing.assert_frame_equal(df[ta.columns], ta)
    assert df["entry"].dtype == bool and df["exit"].dtype == bool and set(df["signal"].unique()) <= {-1, 0, 1}
    assert set(df["rule"].dropna().unique()) <= set(res.rules.rule_names)
    assert (df["signal"] != 0).sum() == df["entry"].sum() + df["exit"].sum() > 0
    meta = read_metadata(path)
    assert meta["simulated"] is True and meta["symbol"] == "BTCUSDT"
    assert meta["signals"]["sources"] == {"ta": "btcusdt_1h_150d_ta.parquet", "sentiment": "sentiment_1h.parquet",
                                          "sentiment_scope": "market"}
    assert meta["signals"]["sentiment"]["requested"] == "auto" and meta["signals"]["sentiment"]["used"] == "market"
    assert meta["signals"]["params"] == res.rules.params
    assert parse_rules(meta["signals"]["rules_yaml"]) == res.rules
    assert 0.99 < res.coverage["sentiment_score"] < 1.0  # the first 24 hours have no sentiment


def test_build_signals_real_flag_params_and_ml(settings_env, btc_1h):
    data = settings_env.data_dir
    write_market(data, btc_1h, simulated=False)
    ta = read_parquet(dataset_path(Dataset("BTCUSDT", "1h", 150), "ta"))
    proba = pd.DataFrame({"ml_proba": np.linspace(0.3, 0.8, len(ta))}, index=ta.index)
    write_parquet(proba, dataset_path(Dataset("BTCUSDT", "1h", 150), "ml"), metadata={"simulated": False})
    res = build_signals(Dataset("BTCUSDT", "1h", 150), RULE_FILES[1], params={"proba_buy": 0.6})
    assert res.simulated is False and read_metadata(res.path)["simulated"] is False
    assert res.rules.params["proba_buy"] == 0.6
    np.testing.assert_allclose(res.frame["ml_proba"], proba["ml_proba"])
    assert res.sources["ml"] == "btcusdt_1h_150d_ml.parquet"
    with pytest.raises(UserError, match="0.9 is above its high 0.7"):
        build_signals(Dataset("BTCUSDT", "1h", 150), RULE_FILES[1], params={"proba_buy": 0.9})


def test_missing_inputs_name_the_exact_command(settings_env, btc_1h):
    with pytest.raises(UserError) as exc:
        build_signals(Dataset("BTCUSDT", "1h", 150), RULE_FILES[2])
    assert str(exc.value).endswith("create it first with: python S2/indicators.py --symbol BTCUSDT "
                                   "--interval 1h --days 150")
    write_market(settings_env.data_dir, btc_1h)
    with pytest.raises(UserError) as exc:
        build_signals(Dataset("BTCUSDT", "1h", 150), RULE_FILES[0])
    assert str(exc.value).endswith("create it first with: python S3/sentiment.py --since 2023-01-01 --interval 1h")
    with pytest.raises(UserError) as exc:
        build_signals(Dataset("BTCUSDT", "1h", 150), RULE_FILES[1])
    assert str(exc.value).endswith("create it first with: python S4/model.py --symbol BTCUSDT --interval 1h "
                                   "--days 150")


def test_a_failed_run_leaves_the_previous_signals_file_intact(settings_env, btc_1h, tmp_path):
    write_market(settings_env.data_dir, btc_1h)
    first = build_signals(Dataset("BTCUSDT", "1h", 150), RULE_FILES[2]).path
    before = first.read_bytes()
    bad = tmp_path / "bad.yaml"
    bad.write_text("entry: {col: sma200, op: '>', value: 1}\n")
    with pytest.raises(UserError, match=r"unknown column 'sma200'.*available columns: open, high"):
        build_signals(Dataset("BTCUSDT", "1h", 150), bad)
    assert first.read_bytes() == before
    assert sorted(p.name for p in first.parent.iterdir() if p.name.startswith(".")) == []


def test_sentiment_file_fallback_and_explicit_path(settings_env, btc_1h, tmp_path):
    write_market(settings_env.data_dir, btc_1h)
    sent = make_sentiment(btc_1h.index, seed=1)
    own = tmp_path / "my_sentiment.parquet"
    write_parquet(sent, own)
    res = build_signals(Dataset("BTCUSDT", "1h", 150), RULE_FILES[0], sentiment_file=own, write=False)
    assert res.path is None and res.sources["sentiment"] == "my_sentiment.parquet"
    assert res.frame["sentiment_score"].iloc[-1] == sent["sentiment_score"].iloc[-1]
    with pytest.raises(UserError, match="sentiment file .*nope.parquet does not exist"):
        build_signals(Dataset("BTCUSDT", "1h", 150), RULE_FILES[0], sentiment_file=tmp_path / "nope.parquet")


# ------------------------------------------------------------------ shared loader
def test_load_rule_inputs_is_what_build_signals_evaluates(settings_env, btc_1h, btc_sentiment):
    from S4.signals import load_rule_inputs

    write_market(settings_env.data_dir, btc_1h, simulated=False)
    write_parquet(btc_sentiment, sentiment_path("1h"), metadata={"simulated": True})
    ta = read_parquet(dataset_path(Dataset("BTCUSDT", "1h", 150), "ta"))
    inputs = load_rule_inputs(Dataset("BTCUSDT", "1h", 150), str(RULE_FILES[0]))   # a path works too
    frame, simulated, sources = inputs                                       # unpacks as a 3-tuple
    need = [c for c in inputs.rules.required_columns() if c in ("sentiment_score", "n_items", "evidence")]
    assert need and list(frame.columns) == [*ta.columns, *need] and inputs.joined == tuple(need)
    pd.testing.assert_frame_equal(frame[ta.columns], ta)
    np.testing.assert_array_equal(frame["sentiment_score"].to_numpy(),
                                  join_sentiment(ta, btc_sentiment, columns=need)["sentiment_score"].to_numpy())
    assert simulated is True                       # the sentiment file says so, the _ta file does not
    assert sources == {"ta": "btcusdt_1h_150d_ta.parquet", "sentiment": "sentiment_1h.parquet",
                       "sentiment_scope": "market"}
    built = build_signals(Dataset("BTCUSDT", "1h", 150), RULE_FILES[0], write=False)
    pd.testing.assert_frame_equal(built.frame[frame.columns], frame)
    assert built.coverage == inputs.coverage and built.sources == sources and built.simulated is simulated
    ta_only = load_rule_inputs(Dataset("BTCUSDT", "1h", 150), load_rules(RULE_FILES[2]))
    assert ta_only.joined == () and ta_only.sources == {"ta": "btcusdt_1h_150d_ta.parquet"}
    pd.testing.assert_frame_equal(ta_only.frame, ta)


def test_load_rule_inputs_errors(settings_env, btc_1h, tmp_path):
    from S4.signals import load_rule_inputs

    with pytest.raises(UserError, match="create it first with: python S2/indicators.py"):
        load_rule_inputs(Dataset("BTCUSDT", "1h", 150), RULE_FILES[2])
    write_market(settings_env.data_dir, btc_1h)
    with pytest.raises(UserError, match="create it first with: python S4/model.py --symbol BTCUSDT"):
        load_rule_inputs(Dataset("BTCUSDT", "1h", 150), RULE_FILES[1])
    with pytest.raises(UserError, match="0.9 is above its high 0.7"):
        load_rule_inputs(Dataset("BTCUSDT", "1h", 150), RULE_FILES[1], params={"proba_buy": 0.9})
    bad = tmp_path / "bad.yaml"
    bad.write_text("entry: {col: sma200, op: '>', value: 1}\n")
    with pytest.raises(UserError, match=r"unknown column 'sma200'.*available columns: open, high"):
        load_rule_inputs(Dataset("BTCUSDT", "1h", 150), bad)
    with pytest.raises(UserError, match=r"lacks the column\(s\) \['sma200'\].*python S2/indicators.py"):
        load_rule_inputs(Dataset("BTCUSDT", "1h", 150), parse_rules("entry: {col: sma200, op: '>', value: 1}"))
    with pytest.raises(UserError, match="RuleSet or a rule file path"):
        load_rule_inputs(Dataset("BTCUSDT", "1h", 150), 42)
