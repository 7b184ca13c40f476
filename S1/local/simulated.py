"""A deterministic simulated market: the same candles for the same symbol, interval
and open time, whatever window is asked for. It feeds the local replay server in
offline mode and the benchmarks; every file made from it is labelled ``simulated``.

The price is a geometric random walk on a 1-minute grid with regime-switching
volatility, seeded from the symbol name, anchored at :data:`ANCHOR`; coarser
intervals aggregate it exactly as Binance builds candles (first open, max high,
min low, last close, summed volumes).

>>> a = simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-02")
>>> b = simulate_candles("BTCUSDT", "1h", "2024-01-01 12:00", "2024-01-02")
>>> bool((a.loc[b.index] == b).all().all()), len(a)
(True, 24)
"""

from __future__ import annotations

import zlib

import numpy as np
import pandas as pd

from S1.datasets import candles_from_arrays
from S1.intervals import close_time_ms, interval_ms, open_times, to_ms
from S1.resample import aggregate_rows, bucket_opens

ANCHOR = "2017-01-01"
_BASE_PRICE = {"BTC": 30_000.0, "ETH": 2_000.0, "SOL": 100.0, "BNB": 300.0, "ADA": 0.5}
_BLOCK = 1440  # minutes per deterministic block (one UTC day)


def _seed(symbol: str, block: int) -> int:
    return zlib.crc32(f"{symbol}:{block}".encode())


def _minute_block(symbol: str, block: int) -> np.ndarray:
    """Log-returns, volumes and trade counts of one UTC day of 1m bars."""
    rng = np.random.default_rng(_seed(symbol, block))
    vol = 0.0006 * np.exp(0.6 * np.sin(block / 17.0) + 0.3 * rng.standard_normal())
    ret = rng.standard_normal(_BLOCK) * vol + 0.000002 * np.sin(block / 45.0)
    # intrabar excursions and activity
    up = np.abs(rng.standard_normal(_BLOCK)) * vol * 0.6
    down = np.abs(rng.standard_normal(_BLOCK)) * vol * 0.6
    volume = rng.gamma(2.0, 5.0, _BLOCK) * (1 + 40 * np.abs(ret))
    trades = rng.poisson(120 * (1 + 40 * np.abs(ret)))
    return np.column_stack([ret, up, down, volume, trades])


def _day_offsets(symbol: str, first_block: int, last_block: int) -> float:
    """Cumulative log-price at the start of ``first_block`` (drift of whole days)."""
    anchor_block = to_ms(ANCHOR) // 86_400_000
    total = 0.0
    for b in range(anchor_block, first_block):
        rng = np.random.default_rng(_seed(symbol, b))
        vol = 0.0006 * np.exp(0.6 * np.sin(b / 17.0) + 0.3 * rng.standard_normal())
        total += float(np.sum(rng.standard_normal(_BLOCK) * vol + 0.000002 * np.sin(b / 45.0)))
    return total


def simulate_minutes(symbol: str, start_ms: int, end_ms: int) -> np.ndarray:
    """1m kline rows (Binance layout) for ``[start_ms, end_ms)``, deterministic."""
    symbol = symbol.upper()
    base = next((p for k, p in _BASE_PRICE.items() if symbol.startswith(k)), 100.0)
    first_block, last_block = start_ms // 86_400_000, (end_ms - 1) // 86_400_000
    level = _day_offsets(symbol, first_block, last_block)
    blocks = [_minute_block(symbol, b) for b in range(first_block, last_block + 1)]
    data = np.vstack(blocks)
    t0 = first_block * 86_400_000
    times = t0 + np.arange(len(data), dtype=np.int64) * 60_000
    logp = level + np.concatenate([[0.0], np.cumsum(data[:-1, 0])])
    # keep prices in a plausible band around the base price
    open_ = base * np.exp(np.tanh(logp / 2.0) * 2.0)
    close = open_ * np.exp(data[:, 0])
    high = np.maximum(open_, close) * np.exp(data[:, 1])
    low = np.minimum(open_, close) * np.exp(-data[:, 2])
    volume = data[:, 3]
    quote = volume * (open_ + close) / 2
    taker = volume * 0.5
    rows = np.column_stack([times, open_, high, low, close, volume, times + 59_999, quote,
                            data[:, 4], taker, taker * (open_ + close) / 2])
    keep = (times >= start_ms) & (times < end_ms)
    return rows[keep]


def simulate_candles(symbol: str, interval: str, start, end) -> pd.DataFrame:
    """Closed candles of ``interval`` whose open time is in ``[start, end)``."""
    start_ms, end_ms = to_ms(start), to_ms(end)
    opens = open_times(start_ms, end_ms + interval_ms(interval) if interval != "1M" else end_ms, interval)
    opens = opens[opens < end_ms]
    if len(opens) == 0:
        return candles_from_arrays(np.empty((0, 11)))
    lo = int(opens[0])
    hi = int(close_time_ms(int(opens[-1]), interval)) + 1
    m = simulate_minutes(symbol, lo, hi)
    if interval == "1m":
        return candles_from_arrays(m)
    return candles_from_arrays(aggregate_rows(m, bucket_opens(m[:, 0].astype(np.int64), interval), interval))
