"""Live klines into SQLite without losing a closed candle (the engine of ``S1/streamer.py``).

One combined-stream WebSocket connection for every symbol
(``<BINANCE_WS_URL>/stream?streams=btcusdt@kline_1m/ethusdc@kline_1m``) feeds
:class:`S1.stream_store.KlineStore`; REST (:class:`S1.rest_client.BinanceRest`)
fills whatever the stream could not deliver.

**Never losing a closed candle.** Per symbol the streamer keeps a *watermark*
``W``: every closed candle the exchange has with open time before ``W`` is in the
table (it is stored in ``kline_watermark`` in the same transaction as the rows).

- After every (re)connect -- and at start -- a REST backfill fetches ``[W, S)``
  where ``S`` is the exchange's clock read *after* the connection opened, writes
  the candles whose close time has passed, and sets ``W = floor(S)``. Anything
  that closes later arrives on the open connection.
- A closed stream candle at ``W`` advances ``W`` by one interval; one *after*
  ``W`` (a hole, or a real exchange halt) triggers another backfill, so a gap
  stays in the table only when the exchange has it too.
- A trade-built minute is written as closed only when contiguous trade ids
  prove no trade was missed; otherwise that minute comes from REST.
- Upserts make every write idempotent; an in-progress update never overwrites a
  closed row.

**Connection.** Server pings are answered by ``websockets``; the client pings
too (a silent, half-open connection is noticed within ``ping_interval +
ping_timeout``). Drops, the 24 h disconnect, ``serverShutdown`` events (we leave
at once instead of waiting to be cut), refused handshakes and DNS/network errors
all lead to a reconnect: at once after a healthy session, else with exponential
backoff and jitter (tenacity), giving up with one line after ``max_failures``
consecutive failures. Each reconnect is logged.

**Why ``websockets`` directly, not python-binance's sockets.** python-binance
1.0.37's ``BinanceSocketManager``/``ReconnectingWebsocket`` (built on
``websockets``) has no public way to set the stream base URL (only the
``STREAM_URL`` class attribute), no reconnect notification (the backfill needs
one; only the private ``_after_connect`` hook exists), a hard-coded policy of
5 reconnects with whole-second waits (``MAX_RECONNECTS``, private
``_get_reconnect_wait``), swallows the reason of failed reconnects, treats a full
queue (100 messages by default) as a fatal error, and ignores ``serverShutdown``.
Overriding private methods of a pinned dependency would be more fragile than the
~100 lines below.

Use it from a notebook::

    from S1.stream_client import StreamConfig, KlineStreamer
    summary = await KlineStreamer(StreamConfig(symbols=("BTCUSDT",), duration=120)).run()
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import os
import random
import signal
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential, wait_random
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI
from websockets.uri import parse_uri

from S1.datasets import normalize_symbol, realtime_db_path
from S1.errors import NetworkError, UserError
from S1.intervals import check_interval, floor_ms, ms_to_ts, next_open_ms
from S1.rest_client import BinanceRest
from S1.settings import Settings, get_settings
from S1.stream_store import KlineStore, rows_from_klines

try:  # orjson comes with ccxt; plain json otherwise
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    _loads = json.loads

log = logging.getLogger("S1.streamer")

STREAMS = ("kline", "trades")
TRADE_STREAMS = ("aggTrade", "trade")
MAX_STREAMS = 1024  # per connection (Binance limit)
_MINUTE = 60_000


# --------------------------------------------------------------------------- config
@dataclass(frozen=True, kw_only=True)
class StreamConfig:
    """What to stream and how (validated; every bad value names its fix).

    >>> StreamConfig(symbols=("btcusdt", "ETH/USDC")).streams
    ('btcusdt@kline_1m', 'ethusdc@kline_1m')
    """

    symbols: tuple[str, ...] = ("BTCUSDT",)
    interval: str = "1m"
    db_path: Path | None = None
    stream: str = "kline"
    trade_stream: str = "aggTrade"
    duration: float | None = None
    backfill_minutes: float = 60.0
    status_every: float = 60.0
    max_failures: int = 10
    backoff_initial: float = 0.5
    backoff_max: float = 60.0
    write_in_progress: bool = True
    commit_interval: float = 0.01
    commit_rows: int = 5000
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    open_timeout: float = 10.0
    healthy_after: float = 10.0
    trade_close_grace_ms: int = 2000
    #: file-name prefix of the exchange (``S1.ccxt_source.Venue.token``); ``None`` = Binance spot
    exchange: str | None = None

    def __post_init__(self):
        syms = (self.symbols,) if isinstance(self.symbols, str) else tuple(self.symbols)
        if not syms:
            raise UserError("no symbol given", "pass --symbol BTCUSDT or --symbols BTCUSDT,ETHUSDC")
        syms = tuple(dict.fromkeys(normalize_symbol(s) for s in syms))
        object.__setattr__(self, "symbols", syms)
        check_interval(self.interval)
        if self.stream not in STREAMS:
            raise UserError(f"unknown --stream {self.stream!r}", f"use one of {', '.join(STREAMS)}")
        if self.trade_stream not in TRADE_STREAMS:
            raise UserError(f"unknown trade stream {self.trade_stream!r}", f"use one of {', '.join(TRADE_STREAMS)}")
        if self.stream == "trades" and self.interval != "1m":
            raise UserError(f"--stream trades builds 1m candles, not {self.interval}",
                            "use --aggregate 1m (or --stream kline for other intervals)")
        if len(syms) > MAX_STREAMS:
            raise UserError(f"{len(syms)} symbols on one connection", f"Binance allows {MAX_STREAMS} streams; split them")
        for name, lo in (("duration", 0), ("status_every", 0), ("backoff_initial", 0), ("backoff_max", 0),
                         ("commit_interval", 0), ("ping_interval", 0), ("ping_timeout", 0), ("open_timeout", 0)):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or not v > lo):
                raise UserError(f"--{name.replace('_', '-')} must be a positive number of seconds, got {v!r}",
                                f"e.g. --{name.replace('_', '-')} 60")
        if not isinstance(self.backfill_minutes, (int, float)) or self.backfill_minutes < 0:
            raise UserError(f"--backfill-minutes must be >= 0, got {self.backfill_minutes!r}", "e.g. --backfill-minutes 60")
        if not isinstance(self.max_failures, int) or self.max_failures < 1:
            raise UserError(f"--max-failures must be a whole number >= 1, got {self.max_failures!r}",
                            "e.g. --max-failures 10")
        if self.db_path is None:
            db = realtime_db_path(list(syms), "1m" if self.stream == "trades" else self.interval,
                                  kind="trades" if self.stream == "trades" else "kline", exchange=self.exchange)
            object.__setattr__(self, "db_path", db)
        object.__setattr__(self, "db_path", Path(self.db_path))

    @property
    def streams(self) -> tuple[str, ...]:
        kind = f"kline_{self.interval}" if self.stream == "kline" else self.trade_stream
        return tuple(f"{s.lower()}@{kind}" for s in self.symbols)

    def url(self, ws_base: str) -> str:
        base = ws_base.rstrip("/")
        for suffix in ("/ws", "/stream"):
            base = base.removesuffix(suffix)
        return f"{base}/stream?streams={'/'.join(self.streams)}"


# ---------------------------------------------------------------------------- stats
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
                f"lag event->row p50 {_ms(self.window_lag_ms.quantile(0.5))} p99 {_ms(self.window_lag_ms.quantile(0.99))}, "
                f"write p99 {_ms(self.window_write_ms.quantile(0.99))}")
        if complete_to is not None:
            line += f", complete to {ms_to_ts(complete_to):%Y-%m-%d %H:%M} UTC"
        self.window_start, self.window_messages = now, self.messages
        self.window_closed, self.window_reconnects = self.closed_stream + self.closed_rest, self.reconnects
        self.window_write_ms.reset()
        self.window_lag_ms.reset()
        return line


def _ms(x: float) -> str:
    if x != x:  # nan
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
                f"write p99 {_ms(self.write_ms_p99)}")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["db_path"] = str(self.db_path)
        return d


# --------------------------------------------------------------------------- writer
class BatchWriter:
    """Collects rows on the event loop and commits them in batches: a batch is
    committed at most ``commit_interval`` s after its first row, or as soon as it has
    ``commit_rows`` rows. Rows of one candle in one batch collapse to the newest
    (a closed row is never replaced by an in-progress one).

    Commits run on the event loop thread itself: a 100-row upsert takes ~0.5 ms,
    whereas a writer thread pays a GIL hand-over for every row (Python's sqlite3
    releases the GIL around each ``sqlite3_step``) -- on a busy 2-core machine that
    raised the p99 message-to-row latency from ~46 ms to 80-140 ms. The one slow
    disk operation, the WAL checkpoint with its fsync, runs on the store's own
    thread. A database locked by another program keeps the rows buffered and
    retries (for ``lock_patience`` s) instead of losing them.
    """

    def __init__(self, path: Path, *, commit_interval: float, commit_rows: int, stats: StreamStats,
                 clock_offset: Callable[[], float] = lambda: 0.0, lock_patience: float = 60.0):
        self.path = path
        self.commit_interval, self.commit_rows = commit_interval, commit_rows
        self.stats = stats
        self.clock_offset = clock_offset
        self.lock_patience = lock_patience
        self.store: KlineStore | None = None
        self._rows: dict[tuple, tuple] = {}
        self._marks: dict[tuple[str, str], int] = {}
        self._recv: list[float] = []
        self._events: list[int] = []
        self._first_at: float | None = None
        self._locked_since: float | None = None
        self._wake = asyncio.Event()
        self._full = asyncio.Event()

    def open(self) -> None:
        self.store = KlineStore(self.path, busy_timeout_s=0.1)

    def put(self, row: tuple, recv: float | None = None, event_ms: int | None = None) -> None:
        key = row[:3]
        old = self._rows.get(key)
        if old is None or row[13] >= old[13]:
            self._rows[key] = row
        if recv is not None:
            self._recv.append(recv)
            self._events.append(event_ms if event_ms is not None else -1)
        if self._first_at is None:
            self._first_at = time.monotonic()
            self._wake.set()
        if len(self._rows) >= self.commit_rows:
            self._full.set()

    def mark(self, symbol: str, interval: str, watermark: int) -> None:
        key = (symbol, interval)
        self._marks[key] = max(watermark, self._marks.get(key, watermark))
        if self._first_at is None:
            self._first_at = time.monotonic()
            self._wake.set()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            delay = (self._first_at or time.monotonic()) + self.commit_interval - time.monotonic()
            if self._locked_since is not None:
                delay = max(delay, 0.2)  # another program holds the lock: do not spin
            if delay > 0 and not self._full.is_set():
                try:
                    await asyncio.wait_for(self._full.wait(), delay)
                except TimeoutError:
                    pass
            self.flush()

    def flush(self) -> None:
        """Commit what is buffered (synchronously, in one transaction)."""
        rows, marks, recv, events = self._rows, self._marks, self._recv, self._events
        self._rows, self._marks, self._recv, self._events = {}, {}, [], []
        self._first_at = None
        self._wake.clear()
        self._full.clear()
        if not rows and not marks:
            return
        t_commit = time.perf_counter()
        try:
            self.store.write(list(rows.values()), marks)
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise UserError(f"cannot write to {self.path} ({exc})",
                                "check free disk space and the file's permissions") from exc
            self._keep(rows, marks, recv, events)
            now = time.monotonic()
            if self._locked_since is None:
                self._locked_since = now
                log.warning("%s is locked by another program; keeping %d rows in memory and retrying",
                            self.path, len(rows))
            elif now - self._locked_since > self.lock_patience:
                raise UserError(f"{self.path} stayed locked by another program for {self.lock_patience:.0f}s",
                                "stop the other writer (only one streamer per file); nothing received is "
                                "lost if you restart") from exc
            return
        except sqlite3.Error as exc:
            raise UserError(f"cannot write to {self.path} ({exc})",
                            "check free disk space and the file's permissions") from exc
        self._locked_since = None
        done = time.monotonic()
        self.stats.commit_ms.add(np.array([(time.perf_counter() - t_commit) * 1000.0]))
        self.stats.rows_committed += len(rows)
        self.stats.commits += 1
        if recv:
            write = (done - np.asarray(recv)) * 1000.0
            self.stats.write_ms.add(write)
            self.stats.window_write_ms.add(write)
            ev = np.asarray(events, dtype=np.float64)
            ev = ev[ev >= 0]
            if len(ev):
                lag = time.time() * 1000.0 + self.clock_offset() - ev
                self.stats.lag_ms.add(lag)
                self.stats.window_lag_ms.add(lag)

    def _keep(self, rows: dict, marks: dict, recv: list, events: list) -> None:
        """Put an uncommitted batch back in front of what arrived since."""
        for key, row in rows.items():
            newer = self._rows.get(key)
            if newer is None or row[13] > newer[13]:
                self._rows[key] = row
        for key, w in marks.items():
            self._marks[key] = max(w, self._marks.get(key, w))
        self._recv[:0], self._events[:0] = recv, events
        if self._first_at is None:
            self._first_at = time.monotonic()
        self._wake.set()

    def close(self) -> None:
        """Commit what is buffered and close the file (checkpointing the WAL)."""
        if self.store is None:
            return
        try:
            self.flush()
        finally:
            self.store.close()
            self.store = None


# ----------------------------------------------------------------- trades -> candles
class MinuteAggregator:
    """1m candles of one symbol from its trade stream, Binance's way: open = first
    price, high/low, close = last price, volume = sum of quantities, quote volume =
    sum of price x quantity, trades = number of trade ids, taker-buy volumes from the
    trades whose buyer was the taker (``m`` false).

    A minute closes when a trade of a later minute arrives, or (:meth:`close_due`)
    when the exchange clock passes its end while the connection stayed up. It is
    *complete* -- written as closed -- only when trade ids are contiguous from a
    trade before the minute to its last one; a minute with no trade between two
    contiguous trades is a flat candle at the last price. Anything else is reported
    as incomplete (the streamer takes it from REST).

    >>> agg = MinuteAggregator("BTCUSDT")
    >>> agg.add(59_000, 10.0, 1.0, False, 1, 1, epoch=1)        # before: unknown -> incomplete
    ([], [])
    >>> agg.add(60_500, 11.0, 2.0, True, 2, 3, epoch=1)
    ([], [0])
    >>> rows, bad = agg.add(181_000, 12.0, 1.0, False, 4, 4, epoch=1)
    >>> [(r[2], r[4], r[7], r[12]) for r in rows], bad          # minute 1 complete, minute 2 flat
    ([(60000, 11.0, 11.0, 2), (120000, 11.0, 11.0, 0)], [])
    """

    def __init__(self, symbol: str):
        self.symbol = symbol
        self.cur: list | None = None   # [t, o, h, l, c, v, q, V, Q, n, complete, epoch]
        self.last_id: int | None = None
        self.last_price: float | None = None
        self.last_minute: int | None = None  # open time of the last minute that had trades

    def _row(self, b: list, closed: int) -> tuple:
        return (self.symbol, "1m", b[0], b[0] + _MINUTE - 1, b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8],
                b[9], closed)

    def current_row(self) -> tuple | None:
        return None if self.cur is None else self._row(self.cur, 0)

    def add(self, time_ms: int, price: float, qty: float, buyer_maker: bool, first_id: int, last_id: int,
            *, epoch: int) -> tuple[list[tuple], list[int]]:
        """Take one trade (or aggregate trade ``first_id..last_id``); returns the closed
        rows and the open times of minutes that closed incomplete."""
        if self.last_id is not None and last_id <= self.last_id:
            return [], []  # already seen
        contiguous = self.last_id is not None and first_id == self.last_id + 1
        t = time_ms - time_ms % _MINUTE
        closed: list[tuple] = []
        bad: list[int] = []
        cur = self.cur
        if cur is not None and t != cur[0]:
            if contiguous and cur[10]:
                closed.append(self._row(cur, 1))
            else:
                bad.append(cur[0])
            self.cur = cur = None
        if cur is None:
            if contiguous and self.last_minute is not None and self.last_price is not None:
                m = self.last_minute + _MINUTE
                while m < t:  # minutes without a trade, proven by contiguous ids
                    p = self.last_price
                    closed.append((self.symbol, "1m", m, m + _MINUTE - 1, p, p, p, p, 0.0, 0.0, 0.0, 0.0, 0, 1))
                    m += _MINUTE
            self.cur = cur = [t, price, price, price, price, 0.0, 0.0, 0.0, 0.0, 0, contiguous, epoch]
        elif not contiguous:
            cur[10] = False
        cur[2] = max(cur[2], price)
        cur[3] = min(cur[3], price)
        cur[4] = price
        quote = price * qty
        cur[5] += qty
        cur[6] += quote
        if not buyer_maker:
            cur[7] += qty
            cur[8] += quote
        cur[9] += last_id - first_id + 1
        cur[11] = epoch
        self.last_id, self.last_price, self.last_minute = last_id, price, t
        return closed, bad

    def close_due(self, now_ms: float, grace_ms: int, *, epoch: int, connected: bool
                  ) -> tuple[list[tuple], list[int]]:
        """Close the open minute once the exchange clock ``now_ms`` is ``grace_ms`` past
        its end -- only if the connection stayed up since its last trade (else the
        next trade's id decides)."""
        cur = self.cur
        if cur is None or now_ms < cur[0] + _MINUTE + grace_ms or not connected or cur[11] != epoch:
            return [], []
        self.cur = None
        if cur[10]:
            return [self._row(cur, 1)], []
        return [], [cur[0]]


def parse_trade(event: dict) -> tuple[int, float, float, bool, int, int]:
    """A ``trade`` or ``aggTrade`` event -> ``(time_ms, price, qty, buyer_maker, first_id, last_id)``.

    >>> parse_trade({"e": "aggTrade", "p": "0.5", "q": "2", "f": 7, "l": 9, "T": 60_001, "m": False})
    (60001, 0.5, 2.0, False, 7, 9)
    """
    if event["e"] == "aggTrade":
        first, last = event["f"], event["l"]
    else:
        first = last = event["t"]
    return int(event["T"]), float(event["p"]), float(event["q"]), bool(event["m"]), int(first), int(last)


# ------------------------------------------------------------------------- streamer
class _ConnectFailed(Exception):
    """A connection attempt failed before the session became healthy (retried)."""


class KlineStreamer:
    """The streamer. ``await KlineStreamer(config).run()``; :meth:`stop` ends it cleanly."""

    def __init__(self, config: StreamConfig, *, settings: Settings | None = None):
        self.config = config
        self.settings = settings or get_settings()
        self._check_url()
        self.stats = StreamStats()
        self.stop_reason = ""
        self._symbols = set(config.symbols)
        self._W: dict[str, int] = {}
        self._aggs = {s: MinuteAggregator(s) for s in config.symbols} if config.stream == "trades" else {}
        self._epoch = 0
        self._connected = False
        self._offset_ms = 0.0          # exchange clock - our wall clock
        self._offset_quality = (float("inf"), 0.0)  # (round trip s, when) of that estimate
        self._last_event = (0, 0.0)    # (E, monotonic) of the newest event
        self._stop_event: asyncio.Event | None = None
        self._backfill_needed: asyncio.Event | None = None
        self.writer: BatchWriter | None = None
        self.api: BinanceRest | None = None
        self._label = f"{','.join(config.symbols[:3])}{'...' if len(config.symbols) > 3 else ''} {config.interval}" + (
            f" from {config.trade_stream}" if config.stream == "trades" else "")

    def _check_url(self) -> None:
        self.url = self.config.url(self.settings.binance_ws_url)
        try:
            parse_uri(self.url)
        except InvalidURI as exc:
            raise UserError(f"BINANCE_WS_URL {self.settings.binance_ws_url!r} is not a WebSocket URL ({exc})",
                            "set it to wss://stream.binance.com:9443 (or ws://127.0.0.1:PORT for a local server)") from None

    def _open_rest(self):
        """The REST client (an async context manager): server time, symbol check, closed klines of a range."""
        return BinanceRest(self.settings)

    # ------------------------------------------------------------------ control
    def stop(self, reason: str = "stopped") -> None:
        """Ask the streamer to flush and finish (safe from signal handlers)."""
        if not self.stop_reason:
            self.stop_reason = reason
        if self._stop_event is not None:
            self._stop_event.set()

    @property
    def watermarks(self) -> dict[str, int]:
        return dict(self._W)

    def exchange_now_ms(self) -> float:
        """Best estimate of the exchange clock (REST offset, newest event time)."""
        e, at = self._last_event
        return max(time.time() * 1000.0 + self._offset_ms, e + (time.monotonic() - at) * 1000.0 if e else 0.0)

    async def run(self) -> StreamSummary:
        cfg = self.config
        t0 = time.monotonic()
        self._stop_event = asyncio.Event()
        self._backfill_needed = asyncio.Event()
        if self.stop_reason:
            self._stop_event.set()
        self.writer = BatchWriter(cfg.db_path, commit_interval=cfg.commit_interval, commit_rows=cfg.commit_rows,
                                  stats=self.stats, clock_offset=lambda: self._offset_ms)
        self.writer.open()  # a bad --db fails here, before any network
        fatal: BaseException | None = None
        tasks: list[asyncio.Task] = []
        try:
            async with self._open_rest() as api:
                self.api = api
                # start-up (symbol check, watermarks) can take a while on a bad network:
                # Ctrl-C / SIGTERM interrupts it too
                startup = asyncio.create_task(self._startup())
                stopped = asyncio.create_task(self._stop_event.wait())
                await asyncio.wait([startup, stopped], return_when=asyncio.FIRST_COMPLETED)
                if not startup.done():
                    startup.cancel()
                    await asyncio.gather(startup, return_exceptions=True)
                    return self._summary(time.monotonic() - t0)
                stopped.cancel()
                startup.result()
                self._backfill_needed.set()
                tasks = [asyncio.create_task(c, name=n) for n, c in (
                    ("writer", self.writer.run()), ("connection", self._connection_loop()),
                    ("backfill", self._backfill_loop()), ("status", self._status_loop()))]
                if self._aggs:
                    tasks.append(asyncio.create_task(self._trade_clock_loop(), name="trade-clock"))
                timer = (asyncio.get_running_loop().call_later(cfg.duration, self.stop, "duration reached")
                         if cfg.duration else None)
                waiter = asyncio.create_task(self._stop_event.wait())
                done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
                if timer is not None:
                    timer.cancel()
                for t in done:
                    if t is not waiter and not t.cancelled() and t.exception() is not None:
                        fatal = t.exception()
                        self.stop_reason = self.stop_reason or f"error: {fatal}"
                waiter.cancel()
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            if cfg.write_in_progress:
                for agg in self._aggs.values():
                    if (row := agg.current_row()) is not None:
                        self.writer.put(row)
            try:
                self.writer.close()
            except Exception:
                if fatal is None:
                    raise
        if fatal is not None:
            raise fatal
        return self._summary(time.monotonic() - t0)

    def _summary(self, seconds: float) -> StreamSummary:
        s = self.stats
        store = KlineStore(self.config.db_path, checkpoint_every_s=None)
        try:
            n_closed = store.count(closed=True)
        finally:
            store.close()
        return StreamSummary(
            db_path=self.config.db_path, seconds=seconds, stop_reason=self.stop_reason or "stopped",
            messages=s.messages, closed_stream=s.closed_stream, closed_rest=s.closed_rest,
            in_progress_rows=s.in_progress_rows, reconnects=s.reconnects, failed_connects=s.failed_connects,
            backfills=s.backfills, incomplete_minutes=s.incomplete_minutes, rows_committed=s.rows_committed,
            commits=s.commits, write_ms_p50=s.write_ms.quantile(0.5), write_ms_p99=s.write_ms.quantile(0.99),
            write_ms_max=s.write_ms.max, commit_ms_p99=s.commit_ms.quantile(0.99), commit_ms_max=s.commit_ms.max,
            lag_ms_p50=s.lag_ms.quantile(0.5), lag_ms_p99=s.lag_ms.quantile(0.99),
            closed_rows_in_db=n_closed, complete_to=dict(self._W))

    async def _startup(self) -> None:
        cfg = self.config
        await asyncio.gather(*(self.api.check_symbol(s) for s in cfg.symbols))
        await self._init_watermarks()
        log.info("streaming %s into %s (%d stream%s on one connection)", self._label, cfg.db_path,
                 len(cfg.streams), "s" if len(cfg.streams) > 1 else "")

    # --------------------------------------------------------------- watermarks
    async def _server_time(self, samples: int = 1) -> int:
        """The exchange clock; also refreshes our estimate of its offset from the
        local clock, NTP style: the sample with the shortest round trip wins (an
        estimate is replaced by a slower one only after 10 minutes)."""
        server = 0
        for _ in range(samples):
            t1 = time.time()
            server = await self.api.server_time()
            t2 = time.time()
            rtt = t2 - t1
            best_rtt, at = self._offset_quality
            if rtt <= best_rtt or t2 - at > 600:
                self._offset_ms = server - (t1 + t2) * 500.0
                self._offset_quality = (rtt, t2)
        return server

    async def _init_watermarks(self) -> None:
        cfg = self.config
        now = await self._server_time(samples=3)
        store = self.writer.store
        for s in cfg.symbols:
            w = store.watermark(s, cfg.interval)
            if w is None:
                last = store.last_closed_open_ms(s, cfg.interval)
                w = (next_open_ms(last, cfg.interval) if last is not None
                     else floor_ms(int(now - cfg.backfill_minutes * _MINUTE), cfg.interval))
            self._W[s] = w

    def _closed(self, symbol: str, open_ms: int) -> None:
        """A closed candle was written: advance the watermark if it is the next one."""
        w = self._W[symbol]
        if open_ms == w:
            self._W[symbol] = nxt = next_open_ms(open_ms, self.config.interval)
            self.writer.mark(symbol, self.config.interval, nxt)
        elif open_ms > w:
            self._backfill_needed.set()

    async def _backfill_loop(self) -> None:
        failures = 0
        wait = backoff(self.config)
        while True:
            await self._backfill_needed.wait()
            self._backfill_needed.clear()
            try:
                await self._backfill_once()
                failures = 0
            except NetworkError as exc:
                failures += 1
                if failures >= self.config.max_failures:
                    raise NetworkError(f"gave up backfilling over REST after {failures} failures ({exc.problem})",
                                       "check BINANCE_API_URL and the network; a restart backfills from "
                                       "the last complete candle") from None
                delay = wait(_Attempt(failures))
                log.warning("REST backfill failed (%s); retry %d/%d in %.1fs", exc.problem, failures,
                            self.config.max_failures, delay)
                await asyncio.sleep(delay)
                self._backfill_needed.set()

    async def _backfill_once(self) -> None:
        cfg = self.config
        now = await self._server_time()
        end = floor_ms(now, cfg.interval)  # every candle opening before it has closed at `now`
        self.stats.backfills += 1

        async def one(symbol: str) -> None:
            start = self._W[symbol]
            if start >= end:
                return
            rows, covered = await self._closed_klines(symbol, start, now)
            if covered < end:  # the exchange has not finalised a candle that has ended: ask again soon
                log.info("%s: the exchange has not finalised the %s UTC candle yet; asking again in 1 s",
                         symbol, f"{ms_to_ts(covered):%Y-%m-%d %H:%M}")
                asyncio.get_running_loop().call_later(1.0, self._backfill_needed.set)
            if len(rows):
                for r in rows_from_klines(symbol, cfg.interval, rows, closed=True):
                    self.writer.put(r)
                self.stats.closed_rest += len(rows)
                log.info("backfilled %d closed %s %s candle%s over REST (%s .. %s UTC)", len(rows), symbol,
                         cfg.interval, "s" if len(rows) > 1 else "", f"{ms_to_ts(int(rows[0, 0])):%m-%d %H:%M}",
                         f"{ms_to_ts(int(rows[-1, 0])):%m-%d %H:%M}")
            if covered > self._W[symbol]:
                self._W[symbol] = covered
                self.writer.mark(symbol, cfg.interval, covered)

        await asyncio.gather(*(one(s) for s in cfg.symbols))

    async def _closed_klines(self, symbol: str, start: int, now: int) -> tuple[np.ndarray, int]:
        """The closed candles of ``[start, now)`` over REST, and up to which open time that
        is complete (every candle that has ended, here)."""
        rows = await self.api.klines_range(symbol, self.config.interval, start, now)
        rows = rows[rows[:, 6] < now] if len(rows) else rows
        return rows, floor_ms(now, self.config.interval)

    # --------------------------------------------------------------- connection
    async def _connection_loop(self) -> None:
        cfg = self.config
        wait = backoff(cfg)
        short = 0  # consecutive sessions that delivered data but ended within `healthy_after`
        while True:
            try:
                async for attempt in AsyncRetrying(
                        stop=stop_after_attempt(cfg.max_failures),
                        wait=wait,
                        retry=retry_if_exception_type(_ConnectFailed), before_sleep=self._log_retry,
                        reraise=True):
                    with attempt:
                        lived = await self._session()
            except _ConnectFailed as exc:
                raise NetworkError(f"gave up after {cfg.max_failures} consecutive failed connections to "
                                   f"{self.settings.binance_ws_url} ({exc})",
                                   "check the network and BINANCE_WS_URL; everything received so far is in "
                                   f"{cfg.db_path} and a restart backfills the gap") from None
            # a session ended (drop, 24 h limit, serverShutdown): after a long one reconnect at once (with a
            # little jitter); sessions that keep ending early back off like failures (Binance bans IPs
            # opening more than 300 connections per 5 minutes)
            short = short + 1 if lived < cfg.healthy_after else 0
            delay = wait(_Attempt(short)) if short else random.uniform(0, cfg.backoff_initial)
            if short >= 3:
                log.warning("%d connections in a row ended within %.0fs; waiting %.1fs before the next",
                            short, cfg.healthy_after, delay)
            await asyncio.sleep(delay)

    def _log_retry(self, state) -> None:
        exc = state.outcome.exception() if state.outcome else None
        self.stats.failed_connects += 1
        log.warning("connection to %s failed (%s): %d/%d consecutive failures, retrying in %.2fs",
                    self.settings.binance_ws_url, exc, state.attempt_number, self.config.max_failures,
                    state.next_action.sleep if state.next_action else 0.0)

    async def _session(self) -> float:
        """One connection, until it ends; returns how long it lived (s). Raises
        :class:`_ConnectFailed` when it failed before delivering anything."""
        cfg = self.config
        try:
            ws = await connect(self.url, open_timeout=cfg.open_timeout, ping_interval=cfg.ping_interval,
                               ping_timeout=cfg.ping_timeout, close_timeout=1.0, compression=None,
                               max_size=1 << 22, max_queue=256)
        except InvalidURI as exc:
            raise UserError(f"BINANCE_WS_URL is not a WebSocket URL ({exc})", "e.g. wss://stream.binance.com:9443") from None
        except InvalidStatus as exc:
            raise _ConnectFailed(f"HTTP {exc.response.status_code} on the handshake") from None
        except (OSError, TimeoutError, InvalidHandshake) as exc:
            raise _ConnectFailed(_describe(exc)) from None
        self._epoch += 1
        self._connected = True
        self.stats.connections += 1
        if self.stats.connections > 1:
            self.stats.reconnects += 1
            log.info("reconnected (#%d) to %s", self.stats.reconnects, self.settings.binance_ws_url)
        else:
            log.info("connected to %s", self.settings.binance_ws_url)
        self._backfill_needed.set()  # whatever closed while we were away comes from REST
        opened = time.monotonic()
        got_data = False
        reason = "closed by the server"
        try:
            async for raw in ws:
                got_data = True
                if self._handle(raw):
                    reason = "serverShutdown event"
                    break
        except ConnectionClosed as exc:
            reason = _describe(exc)
        finally:
            self._connected = False
            try:
                await asyncio.wait_for(ws.close(), 2.0)
            except Exception:  # noqa: BLE001 - the connection is gone either way
                pass
        if reason == "closed by the server" and ws.close_code is not None:
            reason = f"closed by the server ({ws.close_code} {ws.close_reason or ''})".rstrip()
        lived = time.monotonic() - opened
        if got_data or lived >= cfg.healthy_after:
            log.warning("connection lost after %.1fs (%s); reconnecting", lived, reason)
            return lived
        raise _ConnectFailed(f"connection ended before any data ({reason})")

    # ----------------------------------------------------------------- messages
    def _handle(self, raw) -> bool:
        """Process one message; True when the server announced its shutdown."""
        recv = time.monotonic()
        self.stats.messages += 1
        try:
            msg = _loads(raw)
            data = msg.get("data", msg)
            e = data.get("e")
        except (ValueError, AttributeError, TypeError):
            log.debug("ignored a message that is not a JSON event: %.80r", raw)
            return False
        event_ms = data.get("E")
        if event_ms is not None:
            self._last_event = (event_ms, recv)
        if e == "kline":
            self._on_kline(data, recv, event_ms)
        elif e == "aggTrade" or e == "trade":
            self._on_trade(e, data, recv, event_ms)
        elif e == "serverShutdown":
            log.warning("the server announced a shutdown (serverShutdown event): reconnecting now")
            return True
        elif "error" in msg:
            log.warning("server error message: %s", msg["error"])
        return False

    def _on_kline(self, data: dict, recv: float, event_ms) -> None:
        k = data["k"]
        symbol = k["s"]
        if symbol not in self._symbols or k["i"] != self.config.interval:
            return
        closed = k["x"]
        if not closed and not self.config.write_in_progress:
            return
        row = (symbol, k["i"], k["t"], k["T"], float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]),
               float(k["v"]), float(k["q"]), float(k["V"]), float(k["Q"]), int(k["n"]), 1 if closed else 0)
        self.writer.put(row, recv, event_ms)
        if closed:
            self.stats.closed_stream += 1
            self._closed(symbol, k["t"])
        else:
            self.stats.in_progress_rows += 1

    def _on_trade(self, kind: str, data: dict, recv: float, event_ms) -> None:
        agg = self._aggs.get(data["s"])
        if agg is None:
            return
        self._on_trade_fields(agg, parse_trade(data), recv, event_ms)

    def _on_trade_fields(self, agg: MinuteAggregator, fields: tuple, recv: float, event_ms) -> None:
        rows, bad = agg.add(*fields, epoch=self._epoch)
        self._emit(agg, rows, bad, recv, event_ms)
        if self.config.write_in_progress and agg.cur is not None:
            self.writer.put(agg.current_row(), recv if not rows else None, event_ms)
            self.stats.in_progress_rows += 1

    def _emit(self, agg: MinuteAggregator, rows: list[tuple], bad: list[int], recv, event_ms) -> None:
        for row in rows:
            self.writer.put(row, recv, event_ms)
            self.stats.closed_stream += 1
            self._closed(agg.symbol, row[2])
        if bad:
            self.stats.incomplete_minutes += len(bad)
            log.info("%s: %d minute(s) not fully seen on the trade stream (%s UTC): taking them from REST",
                     agg.symbol, len(bad), ", ".join(f"{ms_to_ts(t):%H:%M}" for t in bad[:3]))
            self._backfill_needed.set()

    async def _trade_clock_loop(self) -> None:
        while True:
            await asyncio.sleep(0.25)
            now = self.exchange_now_ms()
            for agg in self._aggs.values():
                rows, bad = agg.close_due(now, self.config.trade_close_grace_ms, epoch=self._epoch,
                                          connected=self._connected)
                self._emit(agg, rows, bad, None, None)

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.status_every)
            complete = min(self._W.values()) if self._W else None
            log.info("status %s", self.stats.status_line(self._label, complete))


def backoff(cfg: StreamConfig):
    """Exponential backoff with jitter: ``initial * 2**(n-1)`` capped at ``backoff_max``,
    plus up to ``initial`` of random jitter (a tenacity wait strategy).

    >>> w = backoff(StreamConfig(backoff_initial=0.5, backoff_max=4))
    >>> base = [min(4, 0.5 * 2 ** (n - 1)) for n in (1, 2, 3, 8)]
    >>> base
    [0.5, 1.0, 2.0, 4]
    >>> all(b <= w(_Attempt(n)) <= b + 0.5 for n, b in zip((1, 2, 3, 8), base))
    True
    """
    return wait_exponential(multiplier=cfg.backoff_initial, max=cfg.backoff_max) + wait_random(0, cfg.backoff_initial)


class _Attempt:
    """The bit of a tenacity retry state its wait strategies read."""

    def __init__(self, n: int):
        self.attempt_number = n


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionClosed):
        rcvd = exc.rcvd
        if rcvd is not None:
            return f"closed by the server: {rcvd.code} {rcvd.reason}".rstrip()
        return "connection dropped without a close frame" if exc.sent is None else f"closed: {exc}"
    if isinstance(exc, socket.gaierror):
        return f"DNS lookup failed: {exc.strerror or exc}"
    if isinstance(exc, OSError) and exc.errno and exc.errno > 0:
        return os.strerror(exc.errno)  # e.g. "Connection refused"
    if isinstance(exc, TimeoutError):
        return "timed out"
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}"


# -------------------------------------------------------------------------- running
def run_streamer(config: StreamConfig, *, settings: Settings | None = None, handle_signals: bool = True,
                 make: Callable[[StreamConfig, Settings | None], KlineStreamer] | None = None) -> StreamSummary:
    """Run until ``config.duration``, Ctrl-C or SIGTERM (both: flush, close, return);
    ``make(config, settings)`` builds another streamer class (e.g. :mod:`S1.ccxt_stream`)."""

    async def main() -> StreamSummary:
        streamer = (make or (lambda c, s: KlineStreamer(c, settings=s)))(config, settings)
        loop = asyncio.get_running_loop()
        installed = []
        if handle_signals:
            for sig, name in ((signal.SIGINT, "Ctrl-C"), (signal.SIGTERM, "SIGTERM")):
                try:
                    loop.add_signal_handler(sig, streamer.stop, name)
                    installed.append(sig)
                except (NotImplementedError, RuntimeError, ValueError):  # Windows, or not the main thread
                    pass
        try:
            return await streamer.run()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    return asyncio.run(main())
