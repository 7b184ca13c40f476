"""The streamer's figures: a fixed-memory latency :class:`Histogram`, the run's counters
(:class:`StreamStats`, with the periodic status line) and the end-of-run :class:`StreamSummary`."""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from S1.intervals import ms_to_ts


class Histogram:
    """Fixed-memory latency histogram (ms): 1 %-wide log buckets from 0.01 ms to ~9 h.

    >>> h = Histogram(); h.add(np.array([1.0, 2.0, 3.0, 100.0])); round(h.quantile(0.5), 1)
    2.0
    """

    LO, RATIO, N = 0.01, 1.01, 2200

    def __init__(self):
        self.counts = np.zeros(self.N, dtype=np.int64)
        self.n = 0
        self.max = 0.0

    def add(self, ms: np.ndarray) -> None:
        if len(ms) == 0:
            return
        ms = np.maximum(ms, self.LO)
        idx = np.minimum((np.log(ms / self.LO) / math.log(self.RATIO)).astype(np.int64), self.N - 1)
        self.counts += np.bincount(idx, minlength=self.N)
        self.n += len(ms)
        self.max = max(self.max, float(ms.max()))

    def quantile(self, q: float) -> float:
        if self.n == 0:
            return float("nan")
        i = int(np.searchsorted(np.cumsum(self.counts), q * self.n, side="left"))
        return min(self.LO * self.RATIO ** (i + 0.5), self.max)

    def reset(self) -> None:
        self.counts[:] = 0
        self.n, self.max = 0, 0.0


@dataclass
class StreamStats:
    """Counters of one run (``window_*``: since the last status line)."""

    messages: int = 0
    closed_stream: int = 0
    closed_rest: int = 0
    in_progress_rows: int = 0
    incomplete_minutes: int = 0
    connections: int = 0
    reconnects: int = 0
    failed_connects: int = 0
    backfills: int = 0
    rows_committed: int = 0
    commits: int = 0
    write_ms: Histogram = field(default_factory=Histogram)      # message received -> row committed
    commit_ms: Histogram = field(default_factory=Histogram)     # time inside one SQLite transaction
    lag_ms: Histogram = field(default_factory=Histogram)        # exchange event time -> row committed
    window_write_ms: Histogram = field(default_factory=Histogram)
    window_lag_ms: Histogram = field(default_factory=Histogram)
    window_start: float = field(default_factory=time.monotonic)
    window_messages: int = 0
    window_closed: int = 0
    window_reconnects: int = 0

    def status_line(self, label: str, complete_to: int | None) -> str:
        now = time.monotonic()
        secs = max(1e-9, now - self.window_start)
        msgs = self.messages - self.window_messages
        closed = self.closed_stream + self.closed_rest - self.window_closed
        rec = self.reconnects - self.window_reconnects
        line = (f"{label}: {msgs / secs:,.1f} msg/s, {closed:,} candles closed "
                f"(total {self.closed_stream:,} stream + {self.closed_rest:,} REST), "
                f"{rec} reconnect{'s' if rec != 1 else ''} (total {self.reconnects}), "
                f"lag event->row p50 {fmt_ms(self.window_lag_ms.quantile(0.5))} p99 {fmt_ms(self.window_lag_ms.quantile(0.99))}, "
                f"write p99 {fmt_ms(self.window_write_ms.quantile(0.99))}")
        if complete_to is not None:
            line += f", complete to {ms_to_ts(complete_to):%Y-%m-%d %H:%M} UTC"
        self.window_start, self.window_messages = now, self.messages
        self.window_closed, self.window_reconnects = self.closed_stream + self.closed_rest, self.reconnects
        self.window_write_ms.reset()
        self.window_lag_ms.reset()
        return line


def fmt_ms(x: float) -> str:
    if math.isnan(x):
        return "-"
    return f"{x:.0f} ms" if x < 10_000 else f"{x / 1000:.1f} s"


@dataclass(frozen=True)
class StreamSummary:
    db_path: Path
    seconds: float
    stop_reason: str
    messages: int
    closed_stream: int
    closed_rest: int
    in_progress_rows: int
    reconnects: int
    failed_connects: int
    backfills: int
    incomplete_minutes: int
    rows_committed: int
    commits: int
    write_ms_p50: float
    write_ms_p99: float
    write_ms_max: float
    commit_ms_p99: float
    commit_ms_max: float
    lag_ms_p50: float
    lag_ms_p99: float
    closed_rows_in_db: int
    complete_to: dict[str, int]

    def line(self) -> str:
        return (f"{self.db_path}: {self.closed_rows_in_db:,} closed candles; this run {self.seconds:.1f}s "
                f"({self.stop_reason}): {self.messages:,} messages, {self.closed_stream:,} candles closed on the "
                f"stream + {self.closed_rest:,} via REST backfill, {self.reconnects} reconnects, "
                f"write p99 {fmt_ms(self.write_ms_p99)}")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["db_path"] = str(self.db_path)
        return d
