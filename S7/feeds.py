"""Columns the engine does not compute with its base indicators, taken as-of each candle's
open time: S3's sentiment file (:class:`SentimentFeed`, re-read when it changes), the
precomputed columns of a frame (:class:`FrameFeed`: a replay of an S4 signals file
hands the engine its indicators and ML score this way), and the higher-timeframe
("informative") columns ``rsi14_4h``, ``close_1d`` ... computed live from the engine's own
candle window with S2's functions (:class:`InformativeFeed`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from S1.errors import UserError


class SentimentFeed:
    """S3's sentiment file, re-read when it changes, joined as-of the candle's open time."""

    def __init__(self, path: str | Path, columns: list[str]):
        self.path, self.columns = Path(path), list(columns)
        self._mtime: float | None = None
        self._frame: pd.DataFrame | None = None

    def frame(self) -> pd.DataFrame:
        from S1.datasets import read_parquet

        mtime = self.path.stat().st_mtime if self.path.exists() else None
        if mtime is None and self._frame is None:
            from S1.errors import UserError

            raise UserError(f"sentiment file {self.path} disappeared", "re-create it with python S3/sentiment.py")
        if mtime is not None and mtime != self._mtime:
            self._frame, self._mtime = read_parquet(self.path), mtime
        return self._frame  # type: ignore[return-value]

    def join(self, frame: pd.DataFrame) -> pd.DataFrame:
        from S4.signals import join_sentiment

        return join_sentiment(frame, self.frame(), columns=self.columns)

    def arrays(self, open_ms: np.ndarray) -> dict[str, np.ndarray]:
        """The sentiment columns as-of each open time (S4's rule: the last row at or before it)."""
        from S4.signals import asof_positions

        sent = self.frame()
        pos = asof_positions(pd.DatetimeIndex(pd.to_datetime(open_ms, unit="ms", utc=True)), sent.index)
        out = {}
        for c in self.columns:
            vals = sent[c].to_numpy(dtype=np.float64, na_value=np.nan)
            col = np.full(len(open_ms), np.nan)
            col[pos >= 0] = vals[pos[pos >= 0]]
            out[c] = col
        return out


class FrameFeed:
    """Precomputed columns of a frame (index: open times, UTC) taken as-of each candle's
    open time -- what a replay of an S4 signals file hands the engine (indicators, ML
    score) instead of computing them."""

    def __init__(self, frame: pd.DataFrame, columns: list[str]):
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise UserError(f"the feature frame lacks {missing}", "pass the S4 signals file of the same candles")
        self.columns = list(columns)
        self._ms = frame.index.as_unit("ms").asi8.astype(np.int64)
        self._values = {c: frame[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in self.columns}

    def arrays(self, open_ms: np.ndarray) -> dict[str, np.ndarray]:
        pos = np.searchsorted(self._ms, np.asarray(open_ms, dtype=np.int64), side="right") - 1
        out = {}
        for c, vals in self._values.items():
            col = np.full(len(pos), np.nan)
            col[pos >= 0] = vals[pos[pos >= 0]]
            out[c] = col
        return out


class InformativeFeed:
    """The informative columns a rule file reads (``rsi14_4h``, ``close_4h`` ...), computed from the
    live engine's window of closed base candles by S2's own function
    (:func:`S2.informative.ensure_informative`: Binance-style resampling of the window, S2's indicator
    kernels on the higher-timeframe candles, each base row aligned to the last higher-timeframe candle
    closed by the time it closes) -- the same values ``python S2/indicators.py --informative 4h``
    writes, given a window long enough for the indicators to forget their seed
    (:func:`informative_window`).

    The higher-timeframe values only change when one of their candles closes, so the work is
    done once per closed higher-timeframe candle; the rows in between take the values of the
    last computation (exactly what a recomputation would give them).

    >>> from S1.offline import simulate_candles
    >>> h = simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-10")
    >>> feed = InformativeFeed(["close_4h"], base_interval="1h")
    >>> t = h.index.as_unit("ms").asi8
    >>> got = feed.arrays(t, {c: h[c].to_numpy(float) for c in h.columns if c != "close_time"})
    >>> bool(got["close_4h"][3] == h["close"].iloc[3]), bool(np.isnan(got["close_4h"][2]))
    (True, True)
    """

    def __init__(self, columns: list[str], *, base_interval: str):
        from S1.intervals import interval_ms
        from S2.informative import informative_intervals, parse_intervals, split_informative

        self.columns = [c for c in dict.fromkeys(columns) if split_informative(c) is not None]
        if not self.columns:
            raise UserError("no informative column given", "e.g. rsi14_4h (an S2 column + _<interval>)")
        self.base_interval = base_interval
        self.intervals = parse_intervals(list(informative_intervals(self.columns)))
        self._base_ms = interval_ms(base_interval)
        self._key: tuple | None = None
        self._ms = np.empty(0, dtype=np.int64)
        self._values: dict[str, np.ndarray] = {}
        # fail now, in one line, on a column S2 cannot build (unknown name, interval below the base)
        self._compute(np.arange(2, dtype=np.int64) * self._base_ms,
                      {c: np.ones(2) for c in ("open", "high", "low", "close", "volume")})

    def _frame(self, open_ms: np.ndarray, window: dict[str, np.ndarray]) -> pd.DataFrame:
        from S1.datasets import CANDLE_COLUMNS

        idx = pd.DatetimeIndex(pd.to_datetime(np.asarray(open_ms, dtype=np.int64), unit="ms", utc=True),
                               name="open_time")
        data = {}
        for c in CANDLE_COLUMNS:
            if c == "close_time":
                data[c] = idx + pd.Timedelta(milliseconds=self._base_ms - 1)
            else:
                data[c] = window[c] if c in window else np.zeros(len(idx))
        return pd.DataFrame(data, index=idx)

    def _compute(self, open_ms: np.ndarray, window: dict[str, np.ndarray]) -> None:
        from S2.informative import ensure_informative

        frame = ensure_informative(self._frame(open_ms, window), self.columns, base_interval=self.base_interval)
        self._ms = np.asarray(open_ms, dtype=np.int64).copy()
        self._values = {c: frame[c].to_numpy(dtype=np.float64, na_value=np.nan) for c in self.columns}

    def key(self, last_open_ms: int) -> tuple:
        """Which higher-timeframe candles have closed when the base candle opening at
        ``last_open_ms`` closes (one boundary per interval): the values change with it only."""
        from S1.intervals import floor_ms

        end = int(last_open_ms) + self._base_ms
        return tuple(floor_ms(end, i) for i in self.intervals)

    def arrays(self, open_ms: np.ndarray, window: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The informative columns at each row of the engine's window (``open_ms``: its open times,
        ascending; ``window``: its candle columns)."""
        open_ms = np.asarray(open_ms, dtype=np.int64)
        if not len(open_ms):
            return {c: np.empty(0) for c in self.columns}
        key = (self.key(int(open_ms[-1])), int(open_ms[0]) >= (int(self._ms[0]) if len(self._ms) else 0))
        if key != self._key or not key[1]:
            self._compute(open_ms, window)
            self._key = key
        pos = np.searchsorted(self._ms, open_ms, side="right") - 1
        have = pos >= 0
        out = {}
        for c, vals in self._values.items():
            col = np.full(len(open_ms), np.nan)
            col[have] = vals[pos[have]]
            out[c] = col
        return out


def informative_columns_of(rules_path) -> list[str]:
    """The informative columns (``rsi14_4h`` ...) a rule file reads: what the live engine computes
    with :class:`InformativeFeed` besides its configured indicators."""
    from S2.informative import split_informative
    from S4.rules import load_rules

    try:
        cols = load_rules(rules_path).required_columns()
    except UserError:
        return []          # the executor's own load of the file reports the problem, in its words
    return [c for c in cols if split_informative(c) is not None]


def informative_window(columns: list[str], base_interval: str, *, htf_candles: int = 300) -> int:
    """Base candles the engine keeps so every informative column has ``max(htf_candles, 3 x its
    warm-up + 10)`` closed higher-timeframe candles behind it (plus the bucket in progress): enough
    for S2's recursive indicators (Wilder RSI / ATR, EMAs) to forget their seed, so the live values
    equal those of ``S2/indicators.py --informative`` computed on the whole history. 0 without
    informative columns.

    >>> informative_window(["rsi14_4h"], "1h")
    1204
    """
    from S1.intervals import interval_ms
    from S2.informative import OHLCV, _with_siblings, split_informative
    from S2.ta import config_from_columns, warmup_rows

    need = 0
    by: dict[str, list[str]] = {}
    for c in columns:
        s = split_informative(c)
        if s is not None:
            by.setdefault(s[1], []).append(s[0])
    for interval, bases in by.items():
        warm = warmup_rows(config_from_columns(_with_siblings(bases)))
        longest = max([warm.get(b, 0) for b in bases if b not in OHLCV] or [0])
        ratio = max(1, -(-_approx_ms(interval) // interval_ms(base_interval)))
        need = max(need, ratio * (max(htf_candles, 3 * longest + 10) + 1))
    return need


def _approx_ms(interval: str) -> int:
    from S1.intervals import INTERVAL_MS

    return INTERVAL_MS.get(interval, 31 * 86_400_000)     # 1M: the longest month


__all__ = ["FrameFeed", "InformativeFeed", "SentimentFeed", "informative_columns_of", "informative_window"]
