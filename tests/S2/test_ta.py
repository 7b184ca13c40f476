"""S2/ta.py: every indicator against an independent numpy implementation of its
textbook definition (tests/S2/reference.py), on real BTCUSDT 1h prices when
../shared is present (simulated otherwise), plus tiny prices, flat markets,
warm-up rows, the config object and the one-line input errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import talib

from S1.errors import UserError
from S1.local.simulated import simulate_candles
from S2 import ta as T
from S2.ta import IndicatorConfig, add_indicators, load_config, warmup_rows
from tests.S2 import reference as R

DEFAULT_COLUMNS = ["sma50", "ema21", "rsi14", "MACD_12_26_9", "MACDh_12_26_9", "MACDs_12_26_9",
                   "BBL_20_2.0", "BBM_20_2.0", "BBU_20_2.0", "BBB_20_2.0", "BBP_20_2.0", "atr14", "natr14"]
RTOL = 1e-9  # relative to the column's scale; measured errors are <= 3e-12


def reference_frame(df: pd.DataFrame, cfg: IndicatorConfig) -> dict[str, np.ndarray]:
    c, h, low = (df[k].to_numpy(np.float64) for k in ("close", "high", "low"))
    out: dict[str, np.ndarray] = {}
    for n in cfg.sma:
        out[f"sma{n}"] = R.sma(c, n)
    for n in cfg.ema:
        out[f"ema{n}"] = R.ema(c, n)
    for n in cfg.rsi:
        out[f"rsi{n}"] = R.rsi(c, n)
    out.update(zip(cfg.macd_names, R.macd(c, *cfg.macd)))
    out.update(zip(cfg.bb_names, R.bbands(c, *cfg.bbands)))
    for n in cfg.atr:
        out[f"atr{n}"] = R.atr(h, low, c, n)
        out[f"natr{n}"] = R.natr(h, low, c, n)
    return out


def assert_matches_reference(ta: pd.DataFrame, ref: dict[str, np.ndarray]) -> None:
    for col, expected in ref.items():
        got = ta[col].to_numpy()
        assert np.array_equal(np.isnan(got), np.isnan(expected)), f"{col}: NaN pattern differs"
        m = ~np.isnan(expected)
        scale = max(np.abs(expected[m]).max(), 1e-300)
        err = np.abs(got[m] - expected[m]).max()
        assert err <= RTOL * scale, f"{col}: max error {err:.3g} > {RTOL:g} x {scale:.3g}"


# -------------------------------------------------------------------- the definitions
def test_every_default_indicator_matches_textbook_on_real_prices(btc_1h):
    cfg = IndicatorConfig()
    ta = add_indicators(btc_1h, config=cfg)
    assert ta.columns.tolist() == list(btc_1h.columns) + DEFAULT_COLUMNS
    ref = reference_frame(btc_1h, cfg)
    assert list(ref) == DEFAULT_COLUMNS
    assert_matches_reference(ta, ref)


def test_other_lengths_match_textbook(btc_1h):
    cfg = IndicatorConfig(sma=(5, 200), ema=(9, 100), rsi=(2, 7, 30), macd=(5, 35, 5), bbands=(10, 2.5),
                          atr=(1, 7, 21))
    ta = add_indicators(btc_1h, config=cfg)
    assert {"sma200", "ema9", "rsi2", "MACD_5_35_5", "BBL_10_2.5", "BBP_10_2.5", "atr1", "natr21"} <= set(ta)
    assert_matches_reference(ta, reference_frame(btc_1h, cfg))


def test_bands_use_population_std_and_rsi_atr_use_wilder(btc_1h):
    """The reference itself discriminates: a sample std or an EMA-style smoothing
    would be far outside the tolerance."""
    ta = add_indicators(btc_1h)
    c = btc_1h["close"].to_numpy()
    width = (ta["BBU_20_2.0"] - ta["BBM_20_2.0"]).to_numpy()[19:] / 2.0
    windows = np.lib.stride_tricks.sliding_window_view(c, 20)
    np.testing.assert_allclose(width, windows.std(axis=1, ddof=0), rtol=1e-8)
    assert not np.allclose(width, windows.std(axis=1, ddof=1), rtol=1e-3)
    # RSI with alpha = 2/(n+1) (a plain EMA) instead of Wilder's 1/n is clearly different
    change = np.diff(c)
    g = pd.Series(np.where(change > 0, change, 0.0)).ewm(span=14, adjust=False).mean()
    lo = pd.Series(np.where(change < 0, -change, 0.0)).ewm(span=14, adjust=False).mean()
    ema_rsi = (100 - 100 / (1 + g / lo)).to_numpy()
    assert np.nanmax(np.abs(ema_rsi[200:] - ta["rsi14"].to_numpy()[201:])) > 1.0


def test_natr_equals_talib_natr(btc_1h):
    ta = add_indicators(btc_1h)
    h, low, c = (btc_1h[k].to_numpy() for k in ("high", "low", "close"))
    np.testing.assert_allclose(ta["natr14"], talib.NATR(h, low, c, 14), rtol=1e-13, equal_nan=True)


def test_macd_is_textbook_not_talib_macd_seeding(btc_1h):
    """talib.MACD seeds the fast EMA later: it differs from the textbook at first and
    converges; ours is the textbook from the first row (see S2/ta.py)."""
    c = btc_1h["close"].to_numpy()
    ours = add_indicators(btc_1h)["MACD_12_26_9"].to_numpy()
    talib_line = talib.MACD(c, 12, 26, 9)[0]
    assert abs(ours[33] - talib_line[33]) > 1e-3 * abs(R.macd(c, 12, 26, 9)[0][33])
    np.testing.assert_allclose(ours[400:], talib_line[400:], rtol=1e-9, atol=1e-9)


def test_tiny_prices_and_1m_candles_match_textbook():
    """ADABTC-like prices (~5e-5) and 1m candles: no precision floor in the kernels."""
    m = simulate_candles("ADABTC", "1m", "2023-01-01", "2023-01-03")
    for c in ("open", "high", "low", "close"):
        m[c] = m[c] * 1e-4
    assert m["close"].max() < 1e-3
    assert_matches_reference(add_indicators(m), reference_frame(m, IndicatorConfig()))


def test_flat_market_conventions():
    """No NaN after warm-up on a market that does not move: RSI 50 while nothing has
    moved (0/0), 100 after a rise with no fall; %B 0.5 with zero-width bands."""
    idx = pd.date_range("2024-01-01", periods=120, freq="1min", tz="UTC", name="open_time")
    close = np.r_[np.full(60, 100.0), np.full(60, 101.0)]
    df = pd.DataFrame({"high": close, "low": close, "close": close}, index=idx)
    ta = add_indicators(df)
    assert (ta["rsi14"].iloc[14:60] == 50.0).all() and (ta["rsi14"].iloc[60:] == 100.0).all()
    assert (ta["BBP_20_2.0"].iloc[19:60] == 0.5).all() and (ta["BBB_20_2.0"].iloc[19:60] == 0).all()
    assert (ta["BBP_20_2.0"].iloc[80:] == 0.5).all()
    assert ta.iloc[:, 3:].iloc[49:].notna().all().all()
    assert_matches_reference(ta, reference_frame(df, IndicatorConfig()))
    # a real fall after a flat start is RSI 0, not the flat-market 50
    df2 = df.assign(close=np.r_[np.full(20, 100.0), 100.0 - np.arange(1, 101) * 0.1])
    df2["high"] = df2["low"] = df2["close"]
    assert add_indicators(df2)["rsi14"].iloc[-1] == 0.0


# ------------------------------------------------------------------------ warm-up
def test_nan_only_in_warmup_rows(btc_1h):
    cfg = IndicatorConfig(sma=(20, 50), macd=(8, 30, 12), atr=(3,))
    ta = add_indicators(btc_1h, config=cfg)
    warm = warmup_rows(cfg)
    assert list(warm) == cfg.columns()
    for col, n in warm.items():
        isna = ta[col].isna().to_numpy()
        assert isna[:n].all() and not isna[n:].any(), col
    assert warm["MACDs_8_30_12"] == 29 + 11 and warm["atr3"] == 3


def test_minimum_rows_is_longest_warmup_plus_one(btc_1h):
    cfg = IndicatorConfig()
    need = max(warmup_rows(cfg).values()) + 1
    ok = add_indicators(btc_1h.iloc[:need], config=cfg)
    assert ok.iloc[-1][DEFAULT_COLUMNS].notna().all()
    with pytest.raises(UserError, match=rf"{need - 1} rows, fewer than the {need} that sma50 needs"):
        add_indicators(btc_1h.iloc[: need - 1], config=cfg)


# ------------------------------------------------------------------------ the wrapper
def test_input_frame_untouched_and_rerun_replaces_columns(btc_1h):
    before = btc_1h.copy()
    ta = add_indicators(btc_1h)
    pd.testing.assert_frame_equal(btc_1h, before)
    again = add_indicators(ta)  # an existing _ta frame: columns replaced, not duplicated
    assert again.columns.tolist() == ta.columns.tolist()
    pd.testing.assert_frame_equal(again, ta)
    other = add_indicators(ta, config=IndicatorConfig(rsi=7))
    assert "rsi7" in other and "rsi14" in other  # other lengths are added beside


def test_any_candle_frame_last_rows_and_extra_columns(btc_1h):
    tail = btc_1h[["high", "low", "close"]].iloc[-300:].assign(note="x")
    ta = add_indicators(tail)
    assert ta.columns.tolist() == ["high", "low", "close", "note"] + DEFAULT_COLUMNS
    assert_matches_reference(ta, reference_frame(tail, IndicatorConfig()))
    # SMA windows do not depend on history: the tail's SMA equals the full frame's
    full = add_indicators(btc_1h)
    np.testing.assert_allclose(ta["sma50"].iloc[49:], full["sma50"].iloc[-251:], rtol=1e-12)


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d.drop(columns=["low"]), r"missing columns \['low'\]"),
    (lambda d: d.iloc[::-1], "open times are not increasing -- sort with df.sort_index()"),
    (lambda d: pd.concat([d.iloc[:100], d.iloc[99:]]), "1 duplicate open times"),
    (lambda d: d.assign(close=d["close"].where(d.index != d.index[500])), "column close has 1 missing"),
    (lambda d: d.assign(high=d["high"].mask(d.index == d.index[7], -1.0)), "column high has 1 missing or non-pos"),
    (lambda d: d.assign(low=d["low"].mask(d.index == d.index[9], np.inf)), "column low has 1 missing"),
    (lambda d: d.iloc[:10], "10 rows, fewer than the 50"),
])
def test_bad_frames_raise_one_line_user_error(btc_1h, mutate, message):
    with pytest.raises(UserError, match=message) as info:
        add_indicators(mutate(btc_1h.iloc[:1000]))
    assert "\n" not in str(info.value) and info.value.fix


def test_bad_config_argument():
    df = simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-05")
    with pytest.raises(UserError, match="config must be an IndicatorConfig"):
        add_indicators(df, config={"rsi": 14})


# ------------------------------------------------------------------------ config
def test_config_defaults_yaml_and_names():
    assert load_config() == IndicatorConfig()  # S2/config.yaml holds the defaults
    assert IndicatorConfig().columns() == DEFAULT_COLUMNS
    cfg = IndicatorConfig(sma="20, 200", ema=[9], rsi=7, macd={"fast": 5, "slow": 35, "signal": 5},
                          bbands={"length": 10, "std": 2.5}, atr=[7, 14])
    assert cfg.sma == (20, 200) and cfg.rsi == (7,) and cfg.macd == (5, 35, 5)
    assert cfg.bb_names == ("BBL_10_2.5", "BBM_10_2.5", "BBU_10_2.5", "BBB_10_2.5", "BBP_10_2.5")
    assert IndicatorConfig(bbands="20,2").bb_names[0] == "BBL_20_2.0"
    assert IndicatorConfig(**cfg.to_dict()) == cfg
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.rsi = (3,)  # type: ignore[misc]


def test_yaml_file_and_overrides(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("sma: [10, 30]\nrsi: 9\nmacd: {fast: 6, slow: 13, signal: 4}\n")
    cfg = load_config(p, rsi="21", atr=None)
    assert cfg.sma == (10, 30) and cfg.rsi == (21,) and cfg.macd == (6, 13, 4) and cfg.atr == (14,)


@pytest.mark.parametrize("text, message", [
    ("smaa: [10]\n", r"unknown key\(s\) \['smaa'\]"),
    ("sma: [10\n", "is not valid YAML"),
    ("- 1\n- 2\n", "must hold a mapping"),
    ("macd: {fast: 12, slow: 26, sig: 9}\n", r"macd: unknown key\(s\) \['sig'\]"),
    ("bbands: {length: 20, std: -1}\n", "std -1.0 is out of range"),
    ("rsi: [14, 14]\n", "duplicate length"),
    ("ema: [1]\n", "length 1 is out of range"),
    ("atr: [2.5]\n", "is not a length"),
    ("sma: []\n", "no length given"),
    ("macd: [12, 26]\n", "expected fast,slow,signal"),
])
def test_bad_yaml_one_line_errors(tmp_path, text, message):
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(UserError, match=message) as info:
        load_config(p)
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")


def test_find_columns_any_lengths():
    cfg = IndicatorConfig(sma=(200, 20), rsi=(7,), macd=(5, 35, 5), bbands=(10, 2.5), atr=(7, 14))
    found = T.find_columns(["open", "close", *cfg.columns(), "smash", "rsi_x"])
    assert found.sma == ("sma20", "sma200") and found.rsi == ("rsi7",) and found.ema == ("ema21",)
    assert found.macd == cfg.macd_names and found.bbands == cfg.bb_names
    assert found.atr == ("atr7", "atr14") and found.natr == ("natr7", "natr14")
    assert T.find_columns(["close"]).macd is None


def test_config_from_columns_round_trip():
    for cfg in (IndicatorConfig(), IndicatorConfig(sma=(20, 200), ema=(9, 50), rsi=(2, 7), macd=(5, 35, 5),
                                                    bbands=(10, 2.5), atr=(1, 21))):
        assert T.config_from_columns(["open", "close", *cfg.columns()]) == cfg
    assert T.config_from_columns(["close", "rsi7"]) == IndicatorConfig(rsi=7)


def test_module_doctests():
    import doctest

    res = doctest.testmod(T)
    assert res.attempted > 0 and res.failed == 0


def test_config_yaml_is_next_to_module():
    assert T.DEFAULT_CONFIG_PATH == Path(T.__file__).with_name("config.yaml")
