"""Live order books and tickers (``python S1/streamer.py --streams depth,bookTicker,ticker``).

One combined-stream WebSocket connection (``<symbol>@depth@100ms``, ``<symbol>@bookTicker``,
``<symbol>@ticker`` for every symbol) with the kline streamer's connection machinery
(:class:`S1.stream_connection.WsSessions`: keepalive, reconnects with backoff, serverShutdown).

**Books.** Each market's book is kept by :class:`S1.orderbook.LocalBook`, exactly as
Binance documents: the diff events are buffered, the REST snapshot
(``GET /api/v3/depth``) fetched, stale events dropped, ``U``/``u`` continuity checked;
any gap (a lost or out-of-order packet, a reconnect) throws the book away and rebuilds it
from a fresh snapshot; a crossed book is never recorded. The top ``depth`` levels are
recorded every ``book_every`` seconds (a book that has not changed since its last record
is not written again) or, with ``book_every=0``, after every update -- into the ``book``
table (:mod:`S1.book_store`) or Parquet/Feather files rolled by hour. Best bid/ask
(``bookTicker``) and 24 h tickers (``ticker``) go to their own tables.

From a notebook::

    from S1.book_stream import BookConfig, run_book_streamer
    summary = run_book_streamer(BookConfig(symbols=("BTCUSDT", "ETHUSDT"), streams=("depth", "ticker"),
                                           duration=60))
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from S1.book_store import BookFiles, BookStore
from S1.datasets import book_realtime_path, normalize_symbol
from S1.errors import NetworkError, UserError
from S1.orderbook import APPLIED, GAP, REFETCH, SYNCED, BookError, LocalBook, parse_depth_event
from S1.rest_client import BinanceRest
from S1.settings import Settings, get_settings
from S1.stream_config import MAX_STREAMS, _Attempt, backoff
from S1.stream_connection import WsSessions, parse_message, run_until_stopped, run_with_signals, until_stopped

log = logging.getLogger("S1.streamer")

BOOK_STREAMS = ("depth", "bookTicker", "ticker")
BOOK_FORMATS = ("sqlite", "parquet", "feather")


def parse_every(text: str | float) -> float:
    """``--book-every``: ``1s``, ``500ms``, ``2`` (seconds) or ``update`` / ``0`` (every update).

    >>> parse_every("1s"), parse_every("250ms"), parse_every("update"), parse_every(2)
    (1.0, 0.25, 0.0, 2.0)
    """
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        t = text.strip().lower()
        if t in ("update", "every", "0"):
            return 0.0
        try:
            value = float(t[:-2]) / 1000 if t.endswith("ms") else float(t.removesuffix("s"))
        except ValueError:
            raise UserError(f"--book-every {text!r} is not a duration", "e.g. --book-every 1s, 250ms or update") from None
    if not value >= 0:
        raise UserError(f"--book-every must be >= 0, got {text!r}", "e.g. --book-every 1s (0 = every update)")
    return value


@dataclass(frozen=True, kw_only=True)
class BookConfig:
    """What to record and how (validated; every bad value names its fix).

    >>> BookConfig(symbols=("btcusdt",), streams=("depth", "bookTicker")).stream_names
    ('btcusdt@depth@100ms', 'btcusdt@bookTicker')
    """

    symbols: tuple[str, ...] = ("BTCUSDT",)
    streams: tuple[str, ...] = ("depth",)
    depth: int = 20
    book_every: float = 1.0
    depth_speed_ms: int = 100
    snapshot_limit: int = 1000
    book_format: str = "sqlite"
    db_path: Path | None = None
    duration: float | None = None
    status_every: float = 60.0
    max_failures: int = 10
    backoff_initial: float = 0.5
    backoff_max: float = 60.0
    commit_interval: float = 0.05
    ping_interval: float = 20.0
    ping_timeout: float = 20.0
    open_timeout: float = 10.0
    healthy_after: float = 10.0
    exchange: str | None = None

    def __post_init__(self):
        syms = (self.symbols,) if isinstance(self.symbols, str) else tuple(self.symbols)
        if not syms:
            raise UserError("no symbol given", "pass --symbols BTCUSDT,ETHUSDT")
        object.__setattr__(self, "symbols", tuple(dict.fromkeys(normalize_symbol(s) for s in syms)))
        streams = (self.streams,) if isinstance(self.streams, str) else tuple(self.streams)
        bad = [s for s in streams if s not in BOOK_STREAMS]
        if bad or not streams:
            raise UserError(f"unknown --streams {','.join(bad) or '(none)'}", f"use some of {','.join(BOOK_STREAMS)}")
        object.__setattr__(self, "streams", tuple(dict.fromkeys(streams)))
        if not isinstance(self.depth, int) or not 1 <= self.depth <= 5000:
            raise UserError(f"--depth must be a whole number of levels 1..5000, got {self.depth!r}", "e.g. --depth 20")
        if self.snapshot_limit < self.depth:
            object.__setattr__(self, "snapshot_limit", max(self.depth, 100))
        if self.snapshot_limit > 5000:
            raise UserError(f"snapshot limit {self.snapshot_limit} > 5000", "use --depth 5000 or fewer levels")
        object.__setattr__(self, "book_every", parse_every(self.book_every))
        if self.depth_speed_ms not in (100, 1000):
            raise UserError(f"depth speed {self.depth_speed_ms} ms", "Binance sends depth every 100 or 1000 ms")
        if self.book_format not in BOOK_FORMATS:
            raise UserError(f"unknown --book-format {self.book_format!r}", f"use one of {', '.join(BOOK_FORMATS)}")
        if len(self.stream_names) > MAX_STREAMS:
            raise UserError(f"{len(self.stream_names)} streams on one connection",
                            f"Binance allows {MAX_STREAMS}; use fewer symbols or streams")
        for name in ("duration", "status_every", "backoff_initial", "backoff_max", "commit_interval",
                     "ping_interval", "ping_timeout", "open_timeout"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, (int, float)) or not v > 0):
                raise UserError(f"--{name.replace('_', '-')} must be a positive number of seconds, got {v!r}",
                                f"e.g. --{name.replace('_', '-')} 60")
        if not isinstance(self.max_failures, int) or self.max_failures < 1:
            raise UserError(f"--max-failures must be a whole number >= 1, got {self.max_failures!r}",
                            "e.g. --max-failures 10")
        path = self.db_path or book_realtime_path(list(self.symbols), fmt=self.book_format, exchange=self.exchange)
        object.__setattr__(self, "db_path", Path(path))

    @property
    def stream_names(self) -> tuple[str, ...]:
        kinds = {"depth": "depth@100ms" if self.depth_speed_ms == 100 else "depth", "bookTicker": "bookTicker",
                 "ticker": "ticker"}
        return tuple(f"{s.lower()}@{kinds[k]}" for s in self.symbols for k in self.streams)

    def url(self, ws_base: str) -> str:
        base = ws_base.rstrip("/")
        for suffix in ("/ws", "/stream"):
            base = base.removesuffix(suffix)
        return f"{base}/stream?streams={'/'.join(self.stream_names)}"


@dataclass
class BookStats:
    """Counters of one run."""

    messages: int = 0
    depth_events: int = 0
    applied: int = 0
    stale: int = 0
    gaps: int = 0
    snapshots: int = 0
    refetches: int = 0
    crossed: int = 0
    books_recorded: int = 0
    book_tickers: int = 0
    tickers: int = 0
    rows_written: int = 0
    connections: int = 0
    reconnects: int = 0
    failed_connects: int = 0
    window_start: float = field(default_factory=time.monotonic)
    window_messages: int = 0


@dataclass(frozen=True)
class BookSummary:
    db_path: Path
    seconds: float
    stop_reason: str
    messages: int
    depth_events: int
    applied: int
    gaps: int
    snapshots: int
    crossed: int
    books_recorded: int
    book_tickers: int
    tickers: int
    reconnects: int
    last_update_ids: dict[str, int | None]

    def line(self) -> str:
        return (f"{self.db_path}: this run {self.seconds:.1f}s ({self.stop_reason}): {self.messages:,} messages, "
                f"{self.books_recorded:,} books recorded ({self.applied:,} depth updates applied, "
                f"{self.gaps} gaps resynced from {self.snapshots} snapshots), {self.book_tickers:,} best bid/ask, "
                f"{self.tickers:,} tickers, {self.reconnects} reconnects")

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["db_path"] = str(self.db_path)
        return d


class BookStreamer(WsSessions):
    """``await BookStreamer(config).run()``; :meth:`stop` ends it cleanly."""

    def __init__(self, config: BookConfig, *, settings: Settings | None = None):
        self.config = config
        self.settings = settings or get_settings()
        self.url = config.url(self.settings.binance_ws_url)
        try:
            parse_uri(self.url)
        except InvalidURI as exc:
            raise UserError(f"BINANCE_WS_URL {self.settings.binance_ws_url!r} is not a WebSocket URL ({exc})",
                            "set it to wss://stream.binance.com:9443 (or ws://127.0.0.1:PORT)") from None
        self.stats = BookStats()
        self.stop_reason = ""
        self.books = {s: LocalBook(s) for s in config.symbols} if "depth" in config.streams else {}
        self._recorded: dict[str, int] = {}
        self._epoch = 0
        self._connected = False
        self._need: dict[str, asyncio.Event] = {}
        self._stop_event: asyncio.Event | None = None
        self._rows: dict[str, list[tuple]] = {"book": [], "book_ticker": [], "ticker": []}
        self.store: BookStore | BookFiles | None = None
        self.api: BinanceRest | None = None
        self.on_record = None  # tests: called with (symbol, update_id) after a book is recorded

    # ------------------------------------------------------------------ control
    def stop(self, reason: str = "stopped") -> None:
        if not self.stop_reason:
            self.stop_reason = reason
        if self._stop_event is not None:
            self._stop_event.set()

    def _open_store(self):
        cfg = self.config
        if cfg.book_format == "sqlite":
            return BookStore(cfg.db_path, busy_timeout_s=1.0, simulated=bool(self.settings.simulated_market))
        return BookFiles(cfg.db_path, fmt=cfg.book_format)

    async def run(self) -> BookSummary:
        cfg = self.config
        t0 = time.monotonic()
        self._stop_event = asyncio.Event()
        if self.stop_reason:
            self._stop_event.set()
        self._need = {s: asyncio.Event() for s in self.books}
        fatal: BaseException | None = None
        try:
            async with BinanceRest(self.settings) as api:
                self.api = api
                check = asyncio.gather(*(api.check_symbol(s) for s in cfg.symbols))
                if not await until_stopped(check, stop_event=self._stop_event):
                    return self._summary(time.monotonic() - t0)
                self.store = self._open_store()  # after the symbol check: no empty file for a typo
                log.info("recording %s (%s) of %s into %s", ", ".join(cfg.streams),
                         f"top {cfg.depth} every {cfg.book_every:g}s" if cfg.book_every else f"top {cfg.depth} "
                         "every update", ",".join(cfg.symbols), cfg.db_path)
                named = [("connection", self._connection_loop()), ("writer", self._flush_loop()),
                         ("status", self._status_loop())]
                named += [(f"snapshot-{s}", self._snapshot_loop(s)) for s in self.books]
                if self.books and cfg.book_every:
                    named.append(("recorder", self._record_loop()))
                fatal = await run_until_stopped(named, stop_event=self._stop_event, duration=cfg.duration,
                                                on_duration=self.stop)
                if fatal is not None:
                    self.stop_reason = self.stop_reason or f"error: {fatal}"
        finally:
            if self.store is not None:
                try:
                    self.flush()
                finally:
                    self.store.close()
        if fatal is not None:
            raise fatal
        return self._summary(time.monotonic() - t0)

    def _summary(self, seconds: float) -> BookSummary:
        s = self.stats
        return BookSummary(
            db_path=self.config.db_path, seconds=seconds, stop_reason=self.stop_reason or "stopped",
            messages=s.messages, depth_events=s.depth_events, applied=sum(b.applied for b in self.books.values()),
            gaps=sum(b.gaps for b in self.books.values()), snapshots=sum(b.snapshots for b in self.books.values()),
            crossed=s.crossed + sum(b.crossed for b in self.books.values()), books_recorded=s.books_recorded,
            book_tickers=s.book_tickers, tickers=s.tickers, reconnects=s.reconnects,
            last_update_ids={k: b.update_id for k, b in self.books.items()})

    # ------------------------------------------------------------- connection
    def _on_session_open(self) -> None:
        for symbol, book in self.books.items():  # events were missed while away: rebuild every book
            book.reset()
            self._need[symbol].set()

    def _handle(self, raw) -> bool:
        recv_ms = int(time.time() * 1000)
        self.stats.messages += 1
        if (parsed := parse_message(raw)) is None:
            return False
        msg, data = parsed
        e = data.get("e")
        try:
            if e == "depthUpdate":
                self._on_depth(data, recv_ms)
            elif e == "24hrTicker":
                self._on_ticker(data)
            elif e is None and "u" in data and "B" in data and "A" in data:
                self._on_book_ticker(data, recv_ms)
            elif e == "serverShutdown":
                log.warning("the server announced a shutdown (serverShutdown event): reconnecting now")
                return True
            elif "error" in msg:
                log.warning("server error message: %s", msg["error"])
        except (BookError, KeyError, TypeError, ValueError) as exc:
            log.warning("ignored a malformed %s message (%s)", e or "bookTicker", exc)
        return False

    def _on_depth(self, data: dict, recv_ms: int) -> None:
        ev = parse_depth_event(data)
        book = self.books.get(ev.symbol)
        if book is None:
            return
        self.stats.depth_events += 1
        result = book.on_event(ev)
        if result == GAP:
            log.info("%s order book: %s; resyncing from a fresh snapshot", ev.symbol, book.last_gap)
            self._need[ev.symbol].set()
        elif result == APPLIED and not self.config.book_every:
            self._record(ev.symbol, book, recv_ms)

    def _on_book_ticker(self, d: dict, recv_ms: int) -> None:
        if d["s"] not in self.config.symbols:
            return
        self._rows["book_ticker"].append((d["s"], int(d["u"]), recv_ms, d["b"], d["B"], d["a"], d["A"]))
        self.stats.book_tickers += 1

    def _on_ticker(self, d: dict) -> None:
        if d["s"] not in self.config.symbols:
            return
        self._rows["ticker"].append((d["s"], int(d["E"]), float(d["c"]), float(d["o"]), float(d["h"]),
                                     float(d["l"]), float(d["v"]), float(d["q"]), float(d["P"]),
                                     float(d["b"]), float(d["a"]), int(d["n"])))
        self.stats.tickers += 1

    # ------------------------------------------------------------------ books
    def _record(self, symbol: str, book: LocalBook, recv_ms: int) -> None:
        uid = book.update_id
        if uid is None or self._recorded.get(symbol) == uid:
            return
        bids, asks = book.book.top(self.config.depth)
        if bids and asks and Decimal(bids[0][0]) >= Decimal(asks[0][0]):  # never publish a crossed book
            self.stats.crossed += 1
            return
        rows = self._rows["book"]
        rows.extend((symbol, uid, book.event_ms, recv_ms, "bid", i, p, q) for i, (p, q) in enumerate(bids))
        rows.extend((symbol, uid, book.event_ms, recv_ms, "ask", i, p, q) for i, (p, q) in enumerate(asks))
        self._recorded[symbol] = uid
        self.stats.books_recorded += 1
        if self.on_record is not None:
            self.on_record(symbol, uid)

    async def _record_loop(self) -> None:
        every = self.config.book_every
        nxt = time.monotonic()
        while True:
            nxt += every
            await asyncio.sleep(max(0.0, nxt - time.monotonic()))
            recv_ms = int(time.time() * 1000)
            for symbol, book in self.books.items():
                if book.synced:
                    self._record(symbol, book, recv_ms)

    async def _snapshot_loop(self, symbol: str) -> None:
        """Fetch a snapshot whenever the book needs one (start, gap, reconnect)."""
        cfg = self.config
        book, need = self.books[symbol], self._need[symbol]
        wait = backoff(cfg)
        failures = 0
        while True:
            await need.wait()
            need.clear()
            if book.synced:
                continue
            # Binance: buffer the stream first, then fetch (a quiet market may send nothing: 2 s at most)
            for _ in range(200):
                if book.buffer or not self._connected:
                    break
                await asyncio.sleep(0.01)
            try:
                snap = await self.api.order_book(symbol, cfg.snapshot_limit)
                failures = 0
            except NetworkError as exc:
                failures += 1
                if failures >= cfg.max_failures:
                    raise NetworkError(f"gave up fetching the {symbol} order book snapshot after {failures} "
                                       f"failures ({exc.problem})", "check BINANCE_API_URL and the network") from None
                delay = wait(_Attempt(failures))
                log.warning("%s depth snapshot failed (%s); retry in %.1fs", symbol, exc.problem, delay)
                await asyncio.sleep(delay)
                need.set()
                continue
            if book.synced:  # cannot happen (only this task syncs), but never apply twice
                continue
            before = book.applied
            result = book.on_snapshot(snap)
            if result == SYNCED:
                log.info("%s order book synced at update id %d (%d buffered events applied)", symbol,
                         book.update_id, book.applied - before)
                if not cfg.book_every:
                    self._record(symbol, book, int(time.time() * 1000))
            else:
                if result == REFETCH:
                    log.info("%s snapshot %s is older than the buffered events; fetching another", symbol,
                             snap.get("lastUpdateId"))
                elif result == GAP:
                    log.info("%s order book: %s; fetching another snapshot", symbol, book.last_gap)
                await asyncio.sleep(min(1.0, cfg.backoff_initial))
                need.set()

    # ----------------------------------------------------------------- writing
    def flush(self) -> None:
        rows = self._rows
        if not any(rows.values()):
            return
        self._rows = {"book": [], "book_ticker": [], "ticker": []}
        try:
            self.store.write(**rows)
        except Exception as exc:
            raise UserError(f"cannot write to {self.config.db_path} ({exc})",
                            "check free disk space and permissions; only one streamer per file") from exc
        self.stats.rows_written += sum(len(r) for r in rows.values())

    async def _flush_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.commit_interval)
            self.flush()

    async def _status_loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.status_every)
            s = self.stats
            now = time.monotonic()
            rate = (s.messages - s.window_messages) / max(1e-9, now - s.window_start)
            s.window_start, s.window_messages = now, s.messages
            synced = sum(b.synced for b in self.books.values())
            log.info("status books: %.1f msg/s, %d/%d books synced, %d recorded, %d gaps resynced, "
                     "%d best bid/ask, %d tickers, %d reconnects", rate, synced, len(self.books),
                     s.books_recorded, sum(b.gaps for b in self.books.values()), s.book_tickers, s.tickers,
                     s.reconnects)


def run_book_streamer(config: BookConfig, *, settings: Settings | None = None,
                      handle_signals: bool = True) -> BookSummary:
    """Run until ``config.duration``, Ctrl-C or SIGTERM (flush, close, return)."""

    return run_with_signals(lambda: BookStreamer(config, settings=settings), handle_signals=handle_signals)
