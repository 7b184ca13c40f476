"""Columns the engine does not compute itself, taken as-of each candle's open time:
S3's sentiment file (:class:`SentimentFeed`, re-read when it changes) and the
precomputed columns of a frame (:class:`FrameFeed`: a replay of an S4 signals file
hands the engine its indicators and ML score this way)."""

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


__all__ = ["FrameFeed", "SentimentFeed"]
