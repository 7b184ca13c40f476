"""Higher-timeframe ("informative") columns (S2/informative.py, issue 16): a hand-computed
alignment, an independent pandas implementation (``resample`` + ``merge_asof`` on close
times) on real BTCUSDT 1h with its real gap, truncation / changed-future invariance, the
gap rules, the rule vocabulary, S5's look-ahead checker on S4/rules_mtf.yaml (and that it
catches a forming-candle implementation), and the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from S1.cli import run
from S1.datasets import Dataset, dataset_path, read_metadata, read_parquet, write_parquet
from S1.errors import UserError
from S1.local.simulated import simulate_candles
from S2.informative import (
    add_informative,
    align_closed,
    ensure_informative,
    infer_interval,
    informative_columns,
    informative_intervals,
    split_informative,
)
from S2.ta import IndicatorConfig, add_indicators, compute_indicators

H = pd.Timedelta(hours=1)
GAP = pd.Timestamp("2023-03-24 13:00", tz="UTC")  # a real missing BTCUSDT 1h candle


def hand_frame(n: int = 12, start: str = "2024-01-01 00:00") -> pd.DataFrame:
    """1h candles with values that identify their row: open=100+i, high=200+i, low=50-i/10,
    close=150+i, volume=i+1."""
    idx = pd.date_range(start, periods=n, freq="1h", tz="UTC", name="open_time")
    i = np.arange(n, dtype=float)
    return pd.DataFrame({
        "open": 100 + i, "high": 200 + i, "low": 50 - i / 10, "close": 150 + i, "volume": i + 1,
        "close_time": idx + H - pd.Timedelta(milliseconds=1), "quote_volume": (i + 1) * 150,
        "trades": np.arange(n, dtype=np.int64) + 5, "taker_buy_base": i / 2, "taker_buy_quote": i * 75,
    }, index=idx)


# ------------------------------------------------------------------ hand-computed
def test_hand_computed_alignment_1h_rows_4h_candles():
    """Row t closes at t+1h; the 4h candle opening at T is usable once T+4h <= t+1h.
    Rows 00:00-02:00 have no closed 4h candle inside the data (the previous one, opening
    at 20:00 the day before, is not covered by the frame) -> NaN; 03:00 closes at 04:00,
    exactly when the 00:00 candle closes -> that candle; 04:00-06:00 still that one; 07:00
    gets the 04:00 candle; 11:00 the 08:00 one."""
    df = hand_frame(12)
    out = add_informative(df, ["4h"])
    expect_bucket = [None, None, None, 0, 0, 0, 0, 4, 4, 4, 4, 8]  # first base row of the candle used
    for row, b in enumerate(expect_bucket):
        got = out.iloc[row][["open_4h", "high_4h", "low_4h", "close_4h", "volume_4h"]].to_numpy(float)
        if b is None:
            assert np.isnan(got).all(), row
        else:  # open of the first hour, max high, min low, close of the last hour, summed volume
            want = [100 + b, 200 + b + 3, 50 - (b + 3) / 10, 150 + b + 3, sum(range(b + 1, b + 5))]
            assert got.tolist() == pytest.approx(want, abs=1e-12), row
    assert out.columns[-len(informative_columns(None, "4h")):].tolist() == informative_columns(None, "4h")
    assert df.columns.tolist() == out.columns[:len(df.columns)].tolist(), "every input column kept, in place"


def test_hand_computed_alignment_with_a_frame_starting_mid_bucket():
    """Data from 02:00: the 00:00-04:00 bucket is partial (00:00, 01:00 missing at the edge
    of the window) and is never built; the first value is the 04:00 candle, at row 07:00."""
    out = add_informative(hand_frame(12, "2024-01-01 02:00"), ["4h"])
    assert out["close_4h"].first_valid_index() == pd.Timestamp("2024-01-01 07:00", tz="UTC")
    assert out.loc["2024-01-01 07:00", "open_4h"] == 100 + 2  # the 04:00 row is the frame's 3rd


def test_align_closed_boundary_is_inclusive():
    h = 3_600_000
    # base candles ending at 3h, 4h, 4h+1ms -> only a candle ending at <= the base end counts
    assert align_closed(np.array([3 * h, 4 * h, 4 * h + 1]), np.array([4 * h])).tolist() == [-1, 0, 0]
    assert align_closed(np.array([4 * h - 1]), np.array([4 * h])).tolist() == [-1]


# -------------------------------------------------------------- second implementation
def reference_informative(base: pd.DataFrame, rule: str, length: pd.Timedelta, config: IndicatorConfig,
                          base_len: pd.Timedelta = H) -> pd.DataFrame:
    """Independent: pandas ``resample`` into Binance buckets (weeks from Monday), drop empty
    buckets and buckets that start before the data or end after it, indicators on that
    series, then ``merge_asof`` of each base row's close time onto the candles' close times
    (backward, exact match allowed: a candle closing at the same instant is closed)."""
    kw = {"label": "left", "closed": "left"}
    g = base.resample(rule, **kw)
    htf = pd.DataFrame({"open": g["open"].first(), "high": g["high"].max(), "low": g["low"].min(),
                        "close": g["close"].last(), "volume": g["volume"].sum(), "n": g["close"].count()})
    htf = htf[(htf["n"] > 0) & (htf.index >= base.index[0]) & (htf.index + length <= base.index[-1] + base_len)]
    ind = compute_indicators(htf["high"].to_numpy(), htf["low"].to_numpy(), htf["close"].to_numpy(), config)
    htf = htf.drop(columns="n").assign(**ind)
    htf["ct"] = htf.index + length - pd.Timedelta(milliseconds=1)
    left = pd.DataFrame({"ct": base.index + base_len - pd.Timedelta(milliseconds=1)}, index=base.index)
    m = pd.merge_asof(left, htf.add_suffix(f"_{rule}").rename(columns={f"ct_{rule}": "ct"}), on="ct",
                      direction="backward", allow_exact_matches=True)
    return m.drop(columns="ct").set_index(base.index)


@pytest.mark.parametrize("interval,rule,length", [("4h", "4h", pd.Timedelta(hours=4)),
                                                  ("1d", "1D", pd.Timedelta(days=1)),
                                                  ("1w", "W-MON", pd.Timedelta(days=7))])
def test_equals_pandas_resample_and_merge_asof_on_btc(btc_1h, interval, rule, length):
    config = IndicatorConfig(sma=(5, 20), ema=(9,), rsi=(7, 14), atr=(3,), bbands=(10, 2.5), macd=(3, 8, 4))
    got = add_informative(btc_1h, [interval], config=config)
    ref = reference_informative(btc_1h, rule, length, config)
    cols = informative_columns(config, interval)
    assert len(cols) == 5 + len(config.columns())
    for c in cols:
        r = ref[c.replace(f"_{interval}", f"_{rule}")].to_numpy(float)
        g = got[c].to_numpy(float)
        np.testing.assert_allclose(g, r, rtol=1e-12, atol=0, equal_nan=True, err_msg=c)
        assert np.isfinite(g).sum() > 0, c
    # the check discriminates: taking the candle still forming (the bucket containing t) differs
    forming = btc_1h["close"].resample(rule, label="left", closed="left").last().reindex(btc_1h.index, method="ffill")
    assert not np.allclose(forming.to_numpy(), got[f"close_{interval}"].to_numpy(), equal_nan=True)


def test_equals_the_reference_on_15m_rows_with_1h_and_4h(btc_1h_sim):
    m15 = simulate_candles("BTCUSDT", "15m", "2024-01-01 00:45", "2024-01-12 10:30")
    got = add_informative(m15, ["1h", "4h"])
    for interval, length in (("1h", H), ("4h", 4 * H)):
        ref = reference_informative(m15, interval, length, IndicatorConfig(), base_len=pd.Timedelta(minutes=15))
        for c in informative_columns(None, interval):
            np.testing.assert_allclose(got[c], ref[c], rtol=1e-12, equal_nan=True, err_msg=c)


# -------------------------------------------------------------------- truncation
def _informative_cols(df):
    return [c for c in df.columns if split_informative(c)]


def test_cutting_the_base_after_row_k_never_changes_rows_up_to_k(btc_1h):
    full = add_informative(btc_1h, ["4h", "1d"])
    cols = _informative_cols(full)
    n = len(btc_1h)
    ks = set(np.linspace(1, n, 60).astype(int)) | set(range(90, 100))  # every position inside a 4h bucket
    if GAP - H in btc_1h.index:  # around the real gap
        g = btc_1h.index.get_loc(GAP - H)
        ks |= set(range(g - 3, g + 6))
    checked = 0
    for k in sorted(ks):
        part = add_informative(btc_1h.iloc[:k], ["4h", "1d"])
        a, b = full[cols].iloc[:k].to_numpy(float), part[cols].to_numpy(float)
        np.testing.assert_array_equal(a, b, err_msg=f"cut after row {k} ({btc_1h.index[k - 1]})")
        checked += np.isfinite(b).sum()
    assert checked > 100_000


def test_a_different_future_changes_nothing_before_it(btc_1h):
    cut = 1500
    other = btc_1h.copy()
    factor = np.exp(np.cumsum(np.random.default_rng(3).normal(0, 0.02, len(other) - cut)))
    for c in ("open", "high", "low", "close"):
        other.iloc[cut:, other.columns.get_loc(c)] = other[c].to_numpy()[cut:] * factor
    a, b = add_informative(btc_1h, ["4h", "1d"]), add_informative(other, ["4h", "1d"])
    cols = _informative_cols(a)
    np.testing.assert_array_equal(a[cols].iloc[:cut].to_numpy(float), b[cols].iloc[:cut].to_numpy(float))
    assert not np.allclose(a[cols].iloc[cut:].to_numpy(float), b[cols].iloc[cut:].to_numpy(float), equal_nan=True)


# --------------------------------------------------------------------------- gaps
def test_the_real_gap_keeps_its_4h_candle_used_only_once_closed(btc_1h_real):
    """BTCUSDT 1h lacks 2023-03-24 13:00. The 12:00-16:00 candle is built from 12:00, 14:00
    and 15:00 (Binance has its own 4h candle there too) and first used by the row that
    closes at 16:00; rows 12:00 and 14:00 still see the 08:00 candle."""
    df = btc_1h_real
    assert GAP not in df.index and GAP - H in df.index
    out = add_informative(df, ["4h"])
    day = "2023-03-24 "
    prev = df.loc[day + "08:00":day + "11:00"]
    for t in ("12:00", "14:00"):
        assert out.loc[day + t, "close_4h"] == prev["close"].iloc[-1]
    rows = df.loc[day + "12:00":day + "15:00"]
    assert len(rows) == 3
    got = out.loc[day + "15:00", ["open_4h", "high_4h", "low_4h", "close_4h", "volume_4h"]].tolist()
    assert got == pytest.approx([rows["open"].iloc[0], rows["high"].max(), rows["low"].min(),
                                 rows["close"].iloc[-1], rows["volume"].sum()], rel=1e-12)


def test_a_bucket_with_no_base_row_has_no_candle():
    """00:00-11:00 minus 04:00..07:00 (a whole 4h outage): no 04:00 candle exists; rows
    after the outage keep the 00:00 candle until the 08:00 one closes."""
    df = hand_frame(16)
    df = df.drop(df.index[4:8])
    out = add_informative(df, ["4h"])
    assert out.loc["2024-01-01 08:00":"2024-01-01 10:00", "close_4h"].tolist() == [153.0] * 3
    assert out.loc["2024-01-01 11:00", "close_4h"] == 150 + 11


def test_an_early_close_time_does_not_change_the_base_interval(btc_1h_real):
    """Binance closed the 2023-03-24 12:00 candle early (an outage): its close_time is not
    an hour after its open. The base interval is still 1h and that row is aligned by
    open + 1h (the rule), not by the short close_time."""
    ct = btc_1h_real.loc[GAP - H, "close_time"]
    assert ct - (GAP - H) != H - pd.Timedelta(milliseconds=1)
    assert infer_interval(btc_1h_real) == "1h"


# ------------------------------------------------------------------- vocabulary
def test_rule_vocabulary_accepts_informative_names():
    from S4.rule_model import column_allowed
    from S4.rules import parse_rules

    for ok in ("rsi14_4h", "sma50_1d", "close_4h", "volume_1w", "BBL_20_2.0_4h", "MACDh_12_26_9_1d", "open_1M"):
        assert column_allowed(ok), ok
    for bad in ("trades_4h", "rsi14_5h", "rsi14_4H", "foo_4h", "close_", "sentiment_score_4h"):
        assert not column_allowed(bad), bad
    r = parse_rules("entry: {all: [{col: close_4h, op: '>', other: ema21_4h}, {col: rsi14_4h, op: '<', value: 30}]}")
    assert informative_intervals(r.required_columns()) == ("4h",)
    with pytest.raises(UserError, match="unknown column"):
        parse_rules("entry: {col: rsi14_4x, op: '<', value: 30}")


def test_ensure_informative_adds_only_what_is_missing():
    df = add_indicators(simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-02-15"))
    out = ensure_informative(df, ["rsi14", "close_4h", "sma200_1d", "MACD_8_21_5_4h"])
    assert [c for c in out.columns if c not in df.columns] == ["close_4h", "MACD_8_21_5_4h", "sma200_1d"]
    full = add_informative(df, ["4h"], config=IndicatorConfig(macd=(8, 21, 5)))
    np.testing.assert_array_equal(out["MACD_8_21_5_4h"], full["MACD_8_21_5_4h"])
    assert out["sma200_1d"].isna().all(), "45 daily candles: SMA 200 still warming up (NaN, no error)"
    assert ensure_informative(out, ["close_4h"]) is out


def test_bad_intervals_are_one_line_errors():
    df = hand_frame(12)
    with pytest.raises(UserError, match="cannot be built from 1h"):
        add_informative(df, ["30m"])
    with pytest.raises(UserError, match="cannot be built from 1h"):
        add_informative(df, ["1h"])
    with pytest.raises(UserError, match="unsupported interval"):
        add_informative(df, ["5h"])
    with pytest.raises(UserError, match="missing"):
        add_informative(df.drop(columns="close_time"), ["4h"])


# ------------------------------------------------------------ look-ahead checker
def test_lookahead_checker_passes_rules_mtf_and_catches_a_forming_candle():
    from S4.rules import load_rules
    from S5.lookahead import add_default_indicators, lookahead_check

    candles = simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-02-20")
    rules = load_rules("S4/rules_mtf.yaml")
    rep = lookahead_check(candles, rules, cuts=30)
    assert rep.passed, rep.by_column()
    assert {"close_4h", "ema21_4h", "rsi14_4h"} <= set(rep.columns)

    def forming(df):  # the 4h candle containing t (still forming): a classic MTF leak
        out = add_default_indicators(df)
        g = df.resample("4h", label="left", closed="left")
        htf = pd.DataFrame({"high": g["high"].max(), "low": g["low"].min(), "close": g["close"].last()}).dropna()
        ind = compute_indicators(htf["high"].to_numpy(), htf["low"].to_numpy(), htf["close"].to_numpy(),
                                 IndicatorConfig())
        htf = htf.assign(**ind)
        for c in ("close", "ema21", "rsi14"):
            out[f"{c}_4h"] = htf[c].reindex(df.index, method="ffill").to_numpy()
        return out

    rep = lookahead_check(candles, rules, indicators=forming, cuts=30)
    assert not rep.passed
    assert {"close_4h", "rsi14_4h"} <= set(rep.by_column().index)


def test_lookahead_check_cli_on_rules_mtf(settings_env, capsys):
    from S5.lookahead_check import main

    candles = simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-02-15")
    write_parquet(candles, dataset_path(Dataset("BTCUSDT", "1h", 45)), metadata={"simulated": True})
    args = ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "45", "--rules", "S4/rules_mtf.yaml", "--cuts", "10"]
    assert run(main, args) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "rsi14_4h" in out


# ----------------------------------------------------------------------------- CLI
def test_cli_writes_informative_columns(settings_env, capsys):
    from S2.indicators import main

    candles = simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-03-01")
    write_parquet(candles, dataset_path(Dataset("BTCUSDT", "1h", 60)), metadata={"simulated": True})
    assert run(main, ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "60", "--informative", "4h", "1d"]) == 0
    out = capsys.readouterr().out
    assert "+ 4h:" in out and "+ 1d:" in out
    path = dataset_path(Dataset("BTCUSDT", "1h", 60), "ta")
    ta = read_parquet(path)
    want = add_informative(add_indicators(candles), ["4h", "1d"])
    for c in ("rsi14_4h", "sma50_1d", "close_4h", "volume_1d", "BBP_20_2.0_4h"):
        np.testing.assert_array_equal(ta[c].to_numpy(float), want[c].to_numpy(float), err_msg=c)
    meta = read_metadata(path)
    assert meta["informative"]["intervals"] == ["4h", "1d"] and meta["simulated"] is True
    assert "rsi14_4h" in meta["informative"]["columns"]
    before = path.read_bytes()
    assert run(main, ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "60", "--informative", "30m"]) == 2
    err = capsys.readouterr().err
    assert "30m cannot be built from 1h" in err and len(err.strip().splitlines()) == 1
    assert path.read_bytes() == before, "a failed run leaves the previous _ta file intact"


def test_s4_fills_informative_columns_a_ta_file_lacks(settings_env):
    """S4 reads a _ta file made without --informative: the *_4h columns rules_mtf.yaml reads are
    computed from that file's candles -- the same values as S2/indicators.py --informative 4h."""
    from S2.ta_io import make_ta_file
    from S4.signals import build_signals, load_rule_inputs

    candles = simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-04-01")
    write_parquet(candles, dataset_path(Dataset("BTCUSDT", "1h", 90)), metadata={"simulated": True})
    make_ta_file(Dataset("BTCUSDT", "1h", 90))
    plain = load_rule_inputs(Dataset("BTCUSDT", "1h", 90), "S4/rules_mtf.yaml").frame
    make_ta_file(Dataset("BTCUSDT", "1h", 90), informative=["4h"])
    mtf = load_rule_inputs(Dataset("BTCUSDT", "1h", 90), "S4/rules_mtf.yaml").frame
    for c in ("close_4h", "ema21_4h", "rsi14_4h"):
        np.testing.assert_array_equal(plain[c].to_numpy(float), mtf[c].to_numpy(float), err_msg=c)
    res = build_signals(Dataset("BTCUSDT", "1h", 90), "S4/rules_mtf.yaml", write=False)
    assert res.frame["entry"].sum() > 0
