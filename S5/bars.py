"""The bars a backtest runs on: OHLC arrays with their UTC open times and explicit interval."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from S1.errors import UserError
from S1.intervals import check_interval, interval_ms, pandas_freq
from S5 import metrics as M

PRICE_COLUMNS = ("open", "high", "low", "close")


def bars_per_year(interval: str) -> float:
    """Bars in a 365-day year for a Binance interval (``'1h'`` -> 8760, ``'1M'`` -> 12)."""
    check_interval(interval)
    if interval == "1M":
        return 12.0
    return M.periods_per_year(pandas_freq(interval))


@dataclass(frozen=True)
class Bars:
    """OHLC arrays of the bars (index = UTC open times) and their explicit interval."""

    index: pd.DatetimeIndex
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    interval: str

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, interval: str) -> Bars:
        """Take ``open high low close`` of a candle/signals frame, checked up front."""
        check_interval(interval)
        if not isinstance(frame, pd.DataFrame):
            raise UserError(f"expected a DataFrame of bars, got {type(frame).__name__}",
                            "pass the _signals frame (index open_time)")
        missing = [c for c in PRICE_COLUMNS if c not in frame.columns]
        if missing:
            raise UserError(f"the frame lacks the price column(s) {missing}",
                            "pass the _signals file written by S4/decision.py (it keeps the candles)")
        idx = frame.index
        if not isinstance(idx, pd.DatetimeIndex):
            raise UserError("the frame's index must be the UTC open time", "use frame.set_index('open_time')")
        idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
        if not (idx.is_monotonic_increasing and idx.is_unique):
            raise UserError("the bars are not in strictly increasing time order",
                            "sort and deduplicate: frame[~frame.index.duplicated()].sort_index()")
        if len(frame) < 2:
            raise UserError(f"{len(frame)} bar(s): too few to backtest", "load a longer window (more --days)")
        if interval != "1M":
            step = int(np.median(np.diff(idx.as_unit("ns").asi8)))
            if step != interval_ms(interval) * 1_000_000:
                raise UserError(f"the bars are {pd.Timedelta(step, unit='ns')} apart but the interval is {interval}",
                                "pass the interval the file was made with (it is in the file name)")
        arrays = {}
        for c in PRICE_COLUMNS:
            a = np.ascontiguousarray(frame[c].to_numpy(dtype=np.float64, na_value=np.nan))
            bad = ~(np.isfinite(a) & (a > 0))
            if bad.any():
                i = int(np.argmax(bad))
                raise UserError(f"column {c} has {int(bad.sum())} missing or non-positive price(s), first at "
                                f"{idx[i]}", "re-download the window with S1/historical.py")
            arrays[c] = a
        return cls(idx, arrays["open"], arrays["high"], arrays["low"], arrays["close"], interval)

    def __len__(self) -> int:
        return len(self.close)

    def slice(self, start: int, stop: int) -> Bars:
        s = slice(start, stop)
        return Bars(self.index[s], self.open[s], self.high[s], self.low[s], self.close[s], self.interval)

    @property
    def freq(self) -> str:
        return pandas_freq(self.interval)

    @property
    def periods_per_year(self) -> float:
        return bars_per_year(self.interval)


# ------------------------------------------------------------------------ simulation
