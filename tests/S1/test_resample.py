"""Deriving higher intervals as Binance builds them, checked against the exchange's own candles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from S1.errors import UserError
from S1.intervals import to_ms
from S1.local.simulated import simulate_candles
from S1.resample import can_derive, resample_candles


def _pandas_resample(df: pd.DataFrame, rule: str) -> pd.DataFrame:
    """Independent reference: pandas' own resample with Binance's aggregation rules."""
    origin = pd.Timestamp("1970-01-05", tz="UTC")  # a Monday: weekly buckets start on Mondays
    agg = df.resample(rule, label="left", closed="left", origin=origin).agg(
        {"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum",
         "quote_volume": "sum", "trades": "sum", "taker_buy_base": "sum", "taker_buy_quote": "sum"})
    return agg.dropna(subset=["open"])


@pytest.mark.parametrize("source, target, rule", [("1m", "5m", "5min"), ("1m", "1h", "1h"), ("1h", "4h", "4h"),
                                                  ("1h", "1d", "1D"), ("1d", "1w", "7D")])
def test_matches_pandas_reference(source, target, rule):
    src = simulate_candles("ETHUSDC", source, "2024-01-01", "2024-01-29" if source == "1d" else "2024-01-03")
    got = resample_candles(src, source, target)
    ref = _pandas_resample(src, rule)
    ref = ref.loc[got.index]
    for col in ("open", "high", "low", "close"):
        assert np.array_equal(got[col].to_numpy(), ref[col].to_numpy()), col
    for col in ("volume", "quote_volume", "trades", "taker_buy_base"):
        assert np.allclose(got[col].to_numpy(), ref[col].to_numpy(), rtol=1e-12), col
    from S1.intervals import INTERVAL_MS

    span = got["close_time"] - got.index.to_series()
    assert (span == pd.Timedelta(milliseconds=INTERVAL_MS[target] - 1)).all()


def test_partial_buckets_at_the_edges_are_dropped():
    src = simulate_candles("BTCUSDT", "1h", "2024-01-01 05:00", "2024-01-03 18:00")
    got = resample_candles(src, "1h", "1d")
    assert list(got.index.strftime("%Y-%m-%d")) == ["2024-01-02"]


def test_exchange_gap_inside_a_bucket_keeps_the_bucket(btc_1h_real):
    days = resample_candles(btc_1h_real, "1h", "1d", coverage=(to_ms("2023-01-01"), to_ms("2023-06-01")))
    assert len(days) == 151
    day = btc_1h_real.loc["2023-03-24"]
    assert len(day) == 23  # the real halt at 13:00
    assert days.loc["2023-03-24", "volume"] == pytest.approx(day["volume"].sum())


def test_1h_to_1d_equals_the_exchanges_own_daily_candles(shared_dir):
    """Real BTCUSDT 1h -> 1d against Binance's daily candles (CryptoDataDownload files)."""
    from S1.kline_files import sniff_and_read

    base = shared_dir / "data/klines/cryptodatadownload"
    hourly = sniff_and_read(base / "Binance_BTCUSDT_1h.csv", "1h")
    daily = sniff_and_read(base / "Binance_BTCUSDT_d.csv", "1d")
    derived = resample_candles(hourly, "1h", "1d")
    # 2021: the hourly rows carry full precision (older rows are rounded by the source)
    common = derived.index.intersection(daily.index)
    recent = common[common >= pd.Timestamp("2021-01-01", tz="UTC")]
    assert len(recent) >= 150
    for col in ("open", "high", "low", "close"):
        assert np.array_equal(derived.loc[recent, col].to_numpy(), daily.loc[recent, col].to_numpy()), col
    vol_ok = np.isclose(derived.loc[recent, "volume"], daily.loc[recent, "volume"], rtol=1e-6)
    assert vol_ok.mean() > 0.99
    # over all 2019-2020 days, high/low/close still agree on >= 96 % of days
    older = common[(common >= pd.Timestamp("2019-01-01", tz="UTC")) & (common < pd.Timestamp("2021-01-01", tz="UTC"))]
    for col in ("high", "low", "close"):
        assert np.isclose(derived.loc[older, col], daily.loc[older, col]).mean() > 0.96, col


def test_invalid_derivations_are_refused():
    assert not can_derive("1h", "1m") and not can_derive("3d", "1w") and can_derive("1h", "1M")
    with pytest.raises(UserError, match="cannot derive 1m candles from 1h"):
        resample_candles(simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-02"), "1h", "1m")
