"""Live klines into SQLite without losing a closed candle (the engine of ``S1/streamer.py``).

The pieces live in focused modules: :mod:`S1.stream_config` (what to stream),
:mod:`S1.stream_connection` (the WebSocket connection and reconnects),
:mod:`S1.stream_writer` (batched commits), :mod:`S1.stream_stats` (figures),
:mod:`S1.trade_aggregation` (1m candles from trades); this module is the kline streamer.

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

    from S1.stream_client import KlineStreamer
    from S1.stream_config import StreamConfig
    summary = await KlineStreamer(StreamConfig(symbols=("BTCUSDT",), duration=120)).run()
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import numpy as np
from websockets.exceptions import InvalidURI
from websockets.uri import parse_uri

from S1.errors import NetworkError, UserError
from S1.intervals import floor_ms, ms_to_ts, next_open_ms
from S1.rest_client import BinanceRest
from S1.settings import Settings, get_settings
from S1.stream_config import STREAMS, TRADE_STREAMS, StreamConfig, _Attempt, backoff
from S1.stream_connection import WsSessions, parse_message, run_until_stopped, run_with_signals, until_stopped
from S1.stream_stats import StreamStats, StreamSummary
from S1.stream_store import KlineStore, remove_if_empty, rows_from_klines
from S1.stream_writer import BatchWriter
from S1.trade_aggregation import MinuteAggregator, parse_trade

log = logging.getLogger("S1.streamer")

__all__ = ["STREAMS", "TRADE_STREAMS", "KlineStreamer", "StreamConfig", "run_streamer"]

_MINUTE = 60_000


# ------------------------------------------------------------------------- streamer
class KlineStreamer(WsSessions):
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
        created = not cfg.db_path.exists()
        # a bad --db fails here, before any network; a run on the simulated market labels the file
        self.writer.open(simulated=bool(self.settings.simulated_market))
        fatal: BaseException | None = None
        failed = False
        try:
            async with self._open_rest() as api:
                self.api = api
                # start-up (symbol check, watermarks) can take a while on a bad network:
                # Ctrl-C / SIGTERM interrupts it too
                if not await until_stopped(self._startup(), stop_event=self._stop_event):
                    return self._summary(time.monotonic() - t0)
                self._backfill_needed.set()
                named = [("writer", self.writer.run()), ("connection", self._connection_loop()),
                         ("backfill", self._backfill_loop()), ("status", self._status_loop())]
                if self._aggs:
                    named.append(("trade-clock", self._trade_clock_loop()))
                fatal = await run_until_stopped(named, stop_event=self._stop_event, duration=cfg.duration,
                                                on_duration=self.stop)
                if fatal is not None:
                    self.stop_reason = self.stop_reason or f"error: {fatal}"
        except BaseException:
            failed = True
            raise
        finally:
            if cfg.write_in_progress:
                for agg in self._aggs.values():
                    if (row := agg.current_row()) is not None:
                        self.writer.put(row)
            try:
                self.writer.close()
            except Exception:
                if fatal is None:
                    raise
            if (failed or fatal is not None) and created and remove_if_empty(cfg.db_path):
                log.debug("removed %s: this run created it and wrote no row before failing", cfg.db_path)
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

    def _on_session_open(self) -> None:
        self._backfill_needed.set()  # whatever closed while we were away comes from REST

    # ----------------------------------------------------------------- messages
    def _handle(self, raw) -> bool:
        """Process one message; True when the server announced its shutdown."""
        recv = time.monotonic()
        self.stats.messages += 1
        if (parsed := parse_message(raw)) is None:
            return False
        msg, data = parsed
        e = data.get("e")
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


# -------------------------------------------------------------------------- running
def run_streamer(config: StreamConfig, *, settings: Settings | None = None, handle_signals: bool = True,
                 make: Callable[[StreamConfig, Settings | None], KlineStreamer] | None = None) -> StreamSummary:
    """Run until ``config.duration``, Ctrl-C or SIGTERM (both: flush, close, return);
    ``make(config, settings)`` builds another streamer class (e.g. :mod:`S1.ccxt_stream`)."""

    build = make or (lambda c, s: KlineStreamer(c, settings=s))
    return run_with_signals(lambda: build(config, settings), handle_signals=handle_signals)
