"""Higher-timeframe ("informative") columns: indicators and OHLCV of 4h / 1d ... candles
on the rows of a lower-interval frame, without look-ahead.

For every informative interval ``I`` the columns ``open_I high_I low_I close_I volume_I``
and every indicator of the config with the suffix ``_I`` are added (``rsi14_4h``,
``sma50_1d``, ``close_4h`` ...). They are computed on the higher-timeframe candles,
which are **resampled from the base frame itself** exactly as Binance builds them
(:func:`S1.resample.resample_candles`: UTC buckets, first open, max high, min low, last
close, summed volumes; a bucket is emitted only when the base frame's window covers its
whole span, so the partial bucket at either edge never exists).

**Alignment.** A base candle opening at ``t`` closes at ``t + base`` (its ``close_time``
+ 1 ms). It gets the values of the **last higher-timeframe candle that has closed by
then**: the candle opening at ``T`` with the largest ``T`` such that ``T + I <= t + base``
(``1M``: the next month's first instant). A candle still forming is never used: with 1h
rows and 4h candles, rows 00:00, 01:00 and 02:00 get the 4h candle of the previous day's
20:00 (it closed at 00:00), the row 03:00 -- which closes at 04:00 -- gets the 00:00 one.
Rows before the first closed candle, and rows while the higher-timeframe indicator warms
up, are NaN.

**Gaps.** A base candle missing inside a bucket (BTCUSDT 1h has none at 2023-03-24 13:00)
does not remove the bucket: it is built from the rows that exist (Binance's own 4h candle
exists too; its values include the trades of the missing hour, ours cannot). The bucket
is used only once its whole span has passed, like any other. A bucket with no base row
at all (an outage longer than ``I``) has no candle and the series skips it, as S2 does
with gaps. Because every bucket is built from rows that opened before it closed and is
used only after it closed, cutting the base frame after any row changes no informative
value at or before that row (the tests and ``S5/lookahead_check.py`` check it).

Why resampled rather than read from the 4h file: one source of truth (the same rows the
base indicators use), the look-ahead check can rebuild it from any truncation, and
S1's 1h -> 1d resampling equals Binance's daily candles (verified in S1's tests).

>>> from S1.offline import simulate_candles
>>> h = simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-03")
>>> out = add_informative(h, ["4h"], config=None)
>>> bool(out.loc["2024-01-01 03:00", "close_4h"] == h.loc["2024-01-01 03:00", "close"])
True
>>> bool(out.loc[:"2024-01-01 02:00", "close_4h"].isna().all())
True
>>> split_informative("rsi14_4h"), split_informative("BBL_20_2.0_1d"), split_informative("rsi14")
(('rsi14', '4h'), ('BBL_20_2.0', '1d'), None)
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from S1.datasets import CANDLE_COLUMNS
from S1.errors import UserError
from S1.intervals import INTERVAL_MS, INTERVALS, check_interval, next_open_ms
from S1.resample import can_derive, resample_candles
from S2.ta import IndicatorConfig, compute_indicators, config_from_columns

#: The candle columns every informative interval carries (plus every indicator).
OHLCV = ("open", "high", "low", "close", "volume")
_SUFFIX = re.compile(r"^(?P<base>.+)_(?P<interval>" + "|".join(map(re.escape, INTERVALS)) + r")$")
_MS_TO_INTERVAL = {v: k for k, v in INTERVAL_MS.items()}

__all__ = [
    "OHLCV",
    "add_informative",
    "align_closed",
    "base_end_ms",
    "ensure_informative",
    "infer_interval",
    "informative_candles",
    "informative_columns",
    "informative_frame",
    "informative_intervals",
    "parse_intervals",
    "split_informative",
]


# ----------------------------------------------------------------------------- names
def split_informative(name: str) -> tuple[str, str] | None:
    """``'rsi14_4h' -> ('rsi14', '4h')``; ``None`` for a name without an interval suffix."""
    m = _SUFFIX.match(str(name))
    return (m["base"], m["interval"]) if m else None


def informative_columns(config: IndicatorConfig | None, interval: str) -> list[str]:
    """The columns :func:`add_informative` adds for one interval, in order.

    >>> informative_columns(IndicatorConfig(), "1d")[:6]
    ['open_1d', 'high_1d', 'low_1d', 'close_1d', 'volume_1d', 'sma50_1d']
    """
    config = config or IndicatorConfig()
    return [f"{c}_{interval}" for c in (*OHLCV, *config.columns())]


def informative_intervals(columns: Iterable[str]) -> tuple[str, ...]:
    """The informative intervals that ``columns`` (e.g. a rule file's) refer to, in order of
    first appearance.

    >>> informative_intervals(["rsi14", "close_4h", "sma50_1d", "rsi14_4h"])
    ('4h', '1d')
    """
    out: dict[str, None] = {}
    for c in columns:
        s = split_informative(c)
        if s is not None:
            out[s[1]] = None
    return tuple(out)


def parse_intervals(values: Sequence[str] | str | None) -> tuple[str, ...]:
    """``['4h', '1d']`` / ``'4h,1d'`` -> ``('4h', '1d')`` checked (one-line error otherwise).

    >>> parse_intervals(["4h,1d", "4h"])
    ('4h', '1d')
    """
    if values is None:
        return ()
    if isinstance(values, str):
        values = [values]
    out: dict[str, None] = {}
    for v in values:
        for part in str(v).replace(" ", "").split(","):
            if part:
                out[check_interval(part)] = None
    return tuple(out)


# ------------------------------------------------------------------------- intervals
def infer_interval(frame: pd.DataFrame) -> str:
    """The Binance interval of a candle frame: the most common ``close_time - open_time + 1 ms``
    of its rows (Binance closes a candle early now and then, e.g. at an outage).

    >>> from S1.offline import simulate_candles
    >>> infer_interval(simulate_candles("BTCUSDT", "4h", "2024-01-01", "2024-01-03"))
    '4h'
    """
    if "close_time" not in frame.columns or len(frame) == 0:
        raise UserError("cannot tell the base interval of a frame without rows or close_time",
                        "pass base_interval='1h' (the interval of the frame's candles)")
    open_ms = frame.index.as_unit("ms").asi8
    close_ms = pd.DatetimeIndex(frame["close_time"]).as_unit("ms").asi8
    lengths, counts = np.unique(close_ms - open_ms + 1, return_counts=True)
    common = int(lengths[np.argmax(counts)])  # the most common: a rare early close (an outage) is no interval
    if common in _MS_TO_INTERVAL:
        return _MS_TO_INTERVAL[common]
    opens = frame.index.tz_convert("UTC") if frame.index.tz is not None else frame.index
    if ((opens.day == 1) & (opens.hour == 0) & (opens.minute == 0)).all() and lengths.min() >= 28 * 86_400_000:
        return "1M"
    raise UserError(f"the frame's candles have mixed lengths ({sorted(set(lengths.tolist()))[:4]} ms)",
                    "pass base_interval='1h' (the interval of the frame's candles)")


def _check_pair(base: str, interval: str) -> None:
    check_interval(interval)
    if not can_derive(base, interval):
        raise UserError(f"informative interval {interval} cannot be built from {base} candles",
                        f"use an interval that is a whole multiple above {base}, e.g. --informative 4h 1d")


# -------------------------------------------------------------------------- building
def informative_candles(frame: pd.DataFrame, interval: str, *, base_interval: str | None = None) -> pd.DataFrame:
    """The **closed** ``interval`` candles resampled from ``frame``'s candle columns
    (partial buckets at the edges of the frame's window are dropped)."""
    base = base_interval or infer_interval(frame)
    _check_pair(base, interval)
    return resample_candles(frame.loc[:, list(CANDLE_COLUMNS)], base, interval)


def informative_frame(frame: pd.DataFrame, interval: str, *, config: IndicatorConfig | None = None,
                      base_interval: str | None = None) -> pd.DataFrame:
    """Higher-timeframe candles with their indicators, indexed by their own open time:
    ``close_time``, OHLCV and the indicators of ``config`` (NaN in warm-up rows; no error
    when there are fewer candles than a warm-up: the values are simply NaN)."""
    config = config or IndicatorConfig()
    htf = informative_candles(frame, interval, base_interval=base_interval)
    ind = compute_indicators(htf["high"].to_numpy(np.float64), htf["low"].to_numpy(np.float64),
                             htf["close"].to_numpy(np.float64), config)
    out = htf.loc[:, ["close_time", *OHLCV]]
    return pd.concat([out, pd.DataFrame(ind, index=htf.index)], axis=1)


def align_closed(base_end_ms: np.ndarray, htf_end_ms: np.ndarray) -> np.ndarray:
    """For every base candle ending (exclusive) at ``base_end_ms``, the position of the last
    higher-timeframe candle with ``end <= base end`` (``-1``: none yet). Both ascending.

    >>> h = 3_600_000
    >>> align_closed(np.array([1, 2, 3, 4, 5, 8]) * h, np.array([4, 8]) * h).tolist()
    [-1, -1, -1, 0, 0, 1]
    """
    return np.searchsorted(np.asarray(htf_end_ms), np.asarray(base_end_ms), side="right") - 1


def base_end_ms(index: pd.DatetimeIndex, base_interval: str) -> np.ndarray:
    """Where each base candle ends: its open time + the base interval (``1M``: the next
    month's first instant) -- not its recorded ``close_time``, which an outage can cut short."""
    open_ms = index.as_unit("ms").asi8
    if base_interval == "1M":
        return np.array([next_open_ms(int(t), "1M") for t in open_ms], dtype=np.int64)
    return open_ms + INTERVAL_MS[base_interval]


def _aligned(frame: pd.DataFrame, htf: pd.DataFrame, columns: Sequence[str], suffix: str,
             base: str) -> dict[str, np.ndarray]:
    base_end = base_end_ms(frame.index, base)
    htf_end = pd.DatetimeIndex(htf["close_time"]).as_unit("ms").asi8 + 1
    pos = align_closed(base_end, htf_end)
    have = pos >= 0
    out = {}
    for c in columns:
        src = htf[c].to_numpy(np.float64)
        vals = np.full(len(frame), np.nan)
        vals[have] = src[pos[have]]
        out[f"{c}_{suffix}"] = vals
    return out


def add_informative(frame: pd.DataFrame, intervals: Sequence[str] | str, *,
                    config: IndicatorConfig | None = None, base_interval: str | None = None,
                    only: Iterable[str] | None = None) -> pd.DataFrame:
    """A copy of ``frame`` (a candle or ``_ta`` frame; every column kept) with the
    informative columns of each interval appended (replacing columns of the same name).

    ``config``: the indicator lengths (default S2's defaults); ``base_interval``: the
    frame's interval (default: inferred from ``close_time``); ``only``: add just these
    informative column names (the rest of the interval's columns are not added).
    """
    intervals = parse_intervals(intervals)
    if not intervals:
        return frame.copy()
    missing = [c for c in CANDLE_COLUMNS if c not in frame.columns]
    if missing:
        raise UserError(f"informative columns need the candle columns; missing {missing}",
                        "pass the S1 candle frame or the _ta frame (it keeps every candle column)")
    base = base_interval or infer_interval(frame)
    config = config or IndicatorConfig()
    wanted = set(only) if only is not None else None
    new: dict[str, np.ndarray] = {}
    for interval in intervals:
        _check_pair(base, interval)
        cols = [c for c in (*OHLCV, *config.columns()) if wanted is None or f"{c}_{interval}" in wanted]
        if not cols:
            continue
        htf = informative_frame(frame, interval, config=config, base_interval=base)
        new.update(_aligned(frame, htf, cols, interval, base))
    keep = frame.drop(columns=[c for c in new if c in frame.columns])
    return pd.concat([keep, pd.DataFrame(new, index=frame.index)], axis=1)


def _with_siblings(names: list[str]) -> list[str]:
    """MACD and Bollinger columns come in groups (``MACDh_12_26_9`` needs ``MACD_12_26_9`` and
    ``MACDs_12_26_9`` for :func:`S2.ta.config_from_columns` to see the lengths)."""
    out = list(names)
    for n in names:
        m = re.match(r"^MACD[hs]?_(\d+_\d+_\d+)$", n)
        if m:
            out += [f"MACD_{m[1]}", f"MACDh_{m[1]}", f"MACDs_{m[1]}"]
        m = re.match(r"^BB[LMUBP]_(\d+_[\d.]+)$", n)
        if m:
            out += [f"BB{p}_{m[1]}" for p in "LMUBP"]
    return list(dict.fromkeys(out))


def ensure_informative(frame: pd.DataFrame, columns: Iterable[str], *,
                       base_interval: str | None = None) -> pd.DataFrame:
    """``frame`` with every informative column named in ``columns`` that it lacks computed
    from its own candle columns (lengths taken from the names: ``sma200_1d`` -> SMA 200 of
    daily candles). Used by S5's look-ahead check, which rebuilds everything from
    truncated candles. Returns ``frame`` itself when nothing is missing.

    >>> from S1.offline import simulate_candles
    >>> h = simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-20")
    >>> ensure_informative(h, ["rsi7_4h", "close"]).columns[-1]
    'rsi7_4h'
    """
    need: dict[str, list[str]] = {}
    for c in columns:
        s = split_informative(c)
        if s is not None and c not in frame.columns:
            need.setdefault(s[1], []).append(c)
    if not need:
        return frame
    out = frame
    for interval, names in need.items():
        bases = [split_informative(n)[0] for n in names]
        config = config_from_columns(_with_siblings(bases))
        bad = [b for b in bases if b not in OHLCV and b not in config.columns()]
        if bad:
            raise UserError(f"unknown informative column(s) {[f'{b}_{interval}' for b in bad]}",
                            "use a candle column (open high low close volume) or an S2 indicator "
                            "name plus _<interval>, e.g. rsi14_4h")
        out = add_informative(out, [interval], config=config,
                              base_interval=base_interval, only=names)
    return out
