"""Derive higher intervals from lower ones exactly as Binance builds candles.

UTC-aligned buckets (weeks start on Monday, months on the 1st), first open,
max high, min low, last close, summed volumes, trade counts and taker volumes;
``close_time`` is the bucket's last millisecond. A bucket is emitted only when
the source *covers* its whole span (the window given, not the rows present), so
an exchange gap inside a day still yields that day's candle -- as Binance's own
daily candle does -- while the partial days at the edges of a window are dropped.

>>> from S1.offline import simulate_candles
>>> h = simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-03")
>>> d = resample_candles(h, "1h", "1d")
>>> len(d), bool(d["high"].iloc[0] == h["high"].iloc[:24].max())
(2, True)
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from S1.datasets import candles_from_arrays, validate_candles
from S1.errors import UserError
from S1.intervals import INTERVAL_MS, check_interval, close_time_ms, floor_ms, next_open_ms


def bucket_opens(open_ms: np.ndarray, interval: str) -> np.ndarray:
    """Bucket open time (ms) of every source open time."""
    if interval == "1M":
        ts = pd.to_datetime(open_ms, unit="ms")  # naive UTC
        return (ts.to_period("M").to_timestamp()).as_unit("ms").asi8
    step = INTERVAL_MS[interval]
    origin = 4 * 86_400_000 if interval == "1w" else 0
    return (open_ms - origin) // step * step + origin


def aggregate_rows(rows: np.ndarray, bucket: np.ndarray, interval: str) -> np.ndarray:
    """Aggregate sorted kline rows ``(n, 11)`` by their ``bucket`` open times (pure NumPy)."""
    if len(rows) == 0:
        return np.empty((0, 11))
    starts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    ends = np.r_[starts[1:], len(rows)] - 1
    t = bucket[starts]
    sums = np.add.reduceat(rows[:, [5, 7, 8, 9, 10]], starts, axis=0)
    return np.column_stack([
        t, rows[starts, 1], np.maximum.reduceat(rows[:, 2], starts), np.minimum.reduceat(rows[:, 3], starts),
        rows[ends, 4], sums[:, 0], close_time_ms(t, interval), sums[:, 1], sums[:, 2], sums[:, 3], sums[:, 4],
    ])


def can_derive(source: str, target: str) -> bool:
    """True when every ``target`` bucket is a whole number of ``source`` buckets."""
    if source == target:
        return False
    if target == "1M":
        return source != "1w" and INTERVAL_MS[source] <= 86_400_000
    if source == "1M":
        return False
    s, t = INTERVAL_MS[source], INTERVAL_MS[target]
    return t > s and t % s == 0 and (target != "1w" or 86_400_000 % s == 0 or s == 86_400_000)


def resample_candles(df: pd.DataFrame, source: str, target: str, *,
                     coverage: tuple[int, int] | None = None) -> pd.DataFrame:
    """Candles of ``target`` built from ``df`` (candles of ``source``).

    ``coverage``: the ``[start_ms, end_ms)`` window the source file covers (its
    metadata); default: from the first open to the last close of ``df``.
    """
    check_interval(source)
    check_interval(target)
    if not can_derive(source, target):
        raise UserError(f"cannot derive {target} candles from {source}",
                        "the target must be a whole multiple of the source (e.g. 1m -> 5m, 1h -> 4h/1d)")
    df = validate_candles(df)
    if len(df) == 0:
        return df
    open_ms = df.index.as_unit("ms").asi8
    if coverage is None:
        coverage = (int(open_ms[0]), int(close_time_ms(int(open_ms[-1]), source)) + 1)
    from S1.datasets import candles_to_rows

    rows = candles_to_rows(df)
    buckets = bucket_opens(open_ms, target)
    out = aggregate_rows(rows, buckets, target)
    t = out[:, 0].astype(np.int64)
    ends = np.array([next_open_ms(int(x), target) for x in t]) if target == "1M" else t + INTERVAL_MS[target]
    whole = (t >= floor_ms(coverage[0], target)) & (t >= coverage[0]) & (ends <= coverage[1])
    return candles_from_arrays(out[whole])
