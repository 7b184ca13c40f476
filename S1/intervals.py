"""Binance kline intervals and UTC bucket arithmetic (pure functions, integer ms).

Candles are keyed by their open time. Every interval but ``1M`` has a fixed
length; ``1w`` buckets start on Monday 00:00 UTC (as Binance's do) and ``1M``
buckets on the first day of each calendar month.

>>> interval_ms("1h")
3600000
>>> floor_ms(1_700_000_123_456, "1m")
1700000100000
>>> [pd.Timestamp(t, unit="ms", tz="UTC").day_name() for t in [floor_ms(1_700_000_000_000, "1w")]]
['Monday']
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from S1.errors import UserError

_MIN = 60_000
_HOUR = 60 * _MIN
_DAY = 24 * _HOUR

#: Fixed interval lengths in ms; ``1M`` (calendar month) is handled separately.
INTERVAL_MS: dict[str, int] = {
    "1s": 1_000,
    "1m": _MIN, "3m": 3 * _MIN, "5m": 5 * _MIN, "15m": 15 * _MIN, "30m": 30 * _MIN,
    "1h": _HOUR, "2h": 2 * _HOUR, "4h": 4 * _HOUR, "6h": 6 * _HOUR, "8h": 8 * _HOUR,
    "12h": 12 * _HOUR,
    "1d": _DAY, "3d": 3 * _DAY, "1w": 7 * _DAY,
}
INTERVALS: tuple[str, ...] = (*INTERVAL_MS, "1M")

#: Monday 1970-01-05 00:00 UTC: the epoch of weekly buckets.
_WEEK_ORIGIN = 4 * _DAY


def check_interval(interval: str) -> str:
    """Return ``interval`` if Binance supports it, else raise a :class:`UserError`."""
    if interval in INTERVALS:
        return interval
    near = [i for i in INTERVALS if i.lower() == str(interval).lower()]
    hint = f"did you mean {near[0]!r}? " if near else ""
    raise UserError(f"unsupported interval {interval!r}",
                    f"{hint}use one of {', '.join(INTERVALS)} (case-sensitive: 1m is a minute, 1M a month)")


def interval_ms(interval: str) -> int:
    """Length of a fixed interval in ms (``1M`` has none: use :func:`next_open_ms`)."""
    check_interval(interval)
    if interval == "1M":
        raise ValueError("1M has no fixed length; use next_open_ms()")
    return INTERVAL_MS[interval]


def floor_ms(t_ms: int, interval: str) -> int:
    """Open time (ms) of the bucket that contains ``t_ms``."""
    check_interval(interval)
    if interval == "1M":
        ts = pd.Timestamp(int(t_ms), unit="ms", tz="UTC")
        return int(pd.Timestamp(year=ts.year, month=ts.month, day=1, tz="UTC").value // 1_000_000)
    step = INTERVAL_MS[interval]
    origin = _WEEK_ORIGIN if interval == "1w" else 0
    return (int(t_ms) - origin) // step * step + origin


def ceil_ms(t_ms: int, interval: str) -> int:
    """Smallest bucket open time that is ``>= t_ms``."""
    f = floor_ms(t_ms, interval)
    return f if f == t_ms else next_open_ms(f, interval)


def next_open_ms(open_ms: int, interval: str) -> int:
    """Open time of the bucket after the one opening at ``open_ms``."""
    if interval == "1M":
        ts = pd.Timestamp(int(open_ms), unit="ms", tz="UTC") + pd.offsets.MonthBegin(1)
        return int(ts.value // 1_000_000)
    return int(open_ms) + interval_ms(interval)


def close_time_ms(open_ms, interval: str):
    """Binance close time: the last ms of the bucket (works on scalars and arrays)."""
    if interval == "1M":
        arr = np.atleast_1d(np.asarray(open_ms, dtype=np.int64))
        nxt = (pd.to_datetime(arr, unit="ms", utc=True) + pd.offsets.MonthBegin(1))
        out = nxt.as_unit("ms").asi8 - 1
        return out if np.ndim(open_ms) else int(out[0])
    return open_ms + interval_ms(interval) - 1


def open_times(start_ms: int, end_ms: int, interval: str) -> np.ndarray:
    """All bucket open times ``t`` with ``start_ms <= t`` and ``t + len <= end_ms``
    (the candles a window ``[start, end)`` can hold once closed)."""
    first = ceil_ms(start_ms, interval)
    if interval == "1M":
        out = []
        t = first
        while next_open_ms(t, interval) <= end_ms:
            out.append(t)
            t = next_open_ms(t, interval)
        return np.asarray(out, dtype=np.int64)
    step = interval_ms(interval)
    last_open = end_ms - step
    if last_open < first:
        return np.empty(0, dtype=np.int64)
    return np.arange(first, last_open + 1, step, dtype=np.int64)


def to_ms(ts) -> int:
    """UTC milliseconds of a timestamp-like value (naive values are taken as UTC).

    >>> to_ms("2024-01-01"), to_ms("2999-01-01T00:00:00Z")
    (1704067200000, 32472144000000)
    """
    try:
        t = pd.Timestamp(ts)
    except (ValueError, TypeError, OverflowError) as exc:
        raise UserError(f"cannot read the date {ts!r}", "use ISO UTC such as 2024-01-01 or 2024-01-01T12:00") from exc
    if t is pd.NaT:
        raise UserError(f"cannot read the date {ts!r}", "use ISO UTC such as 2024-01-01 or 2024-01-01T12:00")
    t = t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")
    return int(t.as_unit("ms").asm8.view("i8"))


def ms_to_ts(t_ms: int) -> pd.Timestamp:
    return pd.Timestamp(int(t_ms), unit="ms", tz="UTC")


def pandas_freq(interval: str) -> str:
    """The pandas frequency of a Binance interval (``'1h' -> '1h'``, ``'1w' -> '7D'``,
    ``'1M' -> 'MS'``), e.g. for vectorbt's explicit ``freq``."""
    check_interval(interval)
    if interval == "1M":
        return "MS"
    n, unit = int(interval[:-1]), interval[-1]
    mapping = {"s": "s", "m": "min", "h": "h", "d": "D"}
    return f"{7 * n}D" if unit == "w" else f"{n}{mapping[unit]}"
