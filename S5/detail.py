"""Lower-timeframe candles (``--detail 1m``) to resolve what happened inside a bar.

The decided backtest checks the stop-loss and take-profit on **closed** bars and fills the
exit at the next open (as paper trading does), so a bar that touched both levels exits at the
same price either way -- only the *reason* depends on which came first. Without
lower-timeframe candles the assumption is the worst case: the **stop first**. With them
(:class:`Detail`, freqtrade's ``--timeframe-detail`` idea) the first 1m candle that touches a
level names it; a 1m candle touching both is again counted stop first; a bar with no 1m
candles keeps the worst case.

>>> import pandas as pd
>>> from S4.decide import Position
>>> t = pd.date_range("2024-01-01", periods=3, freq="1min", tz="UTC")
>>> m = pd.DataFrame({"high": [101.0, 112.0, 100.0], "low": [99.0, 100.0, 90.0]}, index=t)
>>> d = Detail(m, "1h")
>>> d.first_touch(t[0], Position(qty=1, entry_price=100, stop=95, take_profit=110))    # TP at :01, stop at :02
'take_profit'
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from S1.datasets import Dataset
from S1.errors import UserError


class Detail:
    """1m (or any lower interval) highs and lows, indexed by open time (UTC)."""

    def __init__(self, frame: pd.DataFrame, interval: str, detail_interval: str = "1m"):
        from S1.intervals import interval_ms

        if interval_ms(detail_interval) >= interval_ms(interval):
            raise UserError(f"--detail {detail_interval} is not below the backtest's interval {interval}",
                            "use a lower timeframe, e.g. --detail 1m")
        idx = pd.DatetimeIndex(frame.index)
        idx = idx.tz_localize("UTC") if idx.tz is None else idx.tz_convert("UTC")
        self.t = idx.as_unit("ns").asi8
        self.high = frame["high"].to_numpy(np.float64)
        self.low = frame["low"].to_numpy(np.float64)
        self.step_ns = interval_ms(interval) * 1_000_000
        self.interval, self.detail_interval = interval, detail_interval
        self.resolved = 0      #: bars where the detail decided (counts, for the report)

    @classmethod
    def load(cls, dataset: Dataset, detail_interval: str = "1m") -> Detail:
        """``data/<symbol>_<detail>_<days>d.parquet`` (S1/historical.py); a clear line when missing."""
        from dataclasses import replace

        from S1.datasets import dataset_path, history_command, read_parquet

        path = dataset_path(replace(dataset, interval=detail_interval))
        if not path.exists():
            raise UserError(f"no {detail_interval} candles for --detail ({path})",
                            f"download them: {history_command(replace(dataset, interval=detail_interval))} "
                            f"(or drop --detail: the stop is then "
                            "assumed first)")
        return cls(read_parquet(path), dataset.interval, detail_interval)

    def first_touch(self, bar_time, position) -> str | None:
        """``stop_loss`` / ``take_profit``: which level the lower-timeframe candles of the bar
        opening at ``bar_time`` touched first (None: no candles there, or neither touched)."""
        start = pd.Timestamp(bar_time).as_unit("ns").value
        a, b = np.searchsorted(self.t, [start, start + self.step_ns], side="left")
        if a == b:
            return None
        h, lo = self.high[a:b], self.low[a:b]
        short = position.side == "short"
        stop = (h >= position.stop) if short else (lo <= position.stop)
        tp = (lo <= position.take_profit) if short else (h >= position.take_profit)
        i_stop = int(np.argmax(stop)) if stop.any() else None
        i_tp = int(np.argmax(tp)) if tp.any() else None
        if i_stop is None and i_tp is None:
            return None
        self.resolved += 1
        if i_tp is not None and (i_stop is None or i_tp < i_stop):
            return "take_profit"
        return "stop_loss"


__all__ = ["Detail"]
