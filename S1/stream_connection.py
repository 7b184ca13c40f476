"""The streamers' WebSocket connection machinery (:class:`WsSessions`): one connection,
its keepalive, and reconnects -- at once after a healthy session, else with exponential
backoff and jitter (tenacity), giving up with one line after ``max_failures`` consecutive
failures. Used by :class:`S1.stream_client.KlineStreamer` and :class:`S1.book_stream.BookStreamer`.

**Connection.** Server pings are answered by ``websockets``; the client pings too (a
silent, half-open connection is noticed within ``ping_interval + ping_timeout``). Drops,
the 24 h disconnect, ``serverShutdown`` events (we leave at once instead of waiting to be
cut), refused handshakes and DNS/network errors all lead to a reconnect. Each reconnect is
logged.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import random
import socket
import time

from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from S1.errors import NetworkError, UserError
from S1.stream_config import _Attempt, backoff

try:  # orjson comes with ccxt; plain json otherwise
    from orjson import loads as _loads
except ImportError:  # pragma: no cover
    _loads = json.loads

log = logging.getLogger("S1.streamer")


def parse_message(raw) -> tuple[dict, dict] | None:
    """``(message, event)`` of one WebSocket message -- the event is ``message["data"]`` on a
    combined stream, the message itself otherwise -- or None (logged at debug level) when it
    is not a JSON object.

    >>> parse_message('{"stream": "btcusdt@kline_1m", "data": {"e": "kline"}}')[1]
    {'e': 'kline'}
    >>> parse_message("not json") is None
    True
    """
    try:
        msg = _loads(raw)
    except ValueError:
        msg = None
    data = msg.get("data", msg) if isinstance(msg, dict) else None
    if not isinstance(data, dict):
        log.debug("ignored a message that is not a JSON event: %.80r", raw)
        return None
    return msg, data


class _ConnectFailed(Exception):
    """A connection attempt failed before the session became healthy (retried)."""


class WsSessions:
    """Mixin: ``await self._connection_loop()`` keeps one WebSocket connection to ``self.url``
    open until cancelled. The host class provides ``config`` (``max_failures``, backoff,
    ping and timeout fields, ``healthy_after``, ``db_path``), ``settings``, ``stats``
    (``connections``, ``reconnects``, ``failed_connects``), ``url``, ``_epoch``,
    ``_connected``, ``_handle(raw) -> bool`` (True: the server announced its shutdown) and
    ``_on_session_open()`` (called after every (re)connect, before the first message)."""

    def _on_session_open(self) -> None:
        """Hook: a connection just opened (the kline streamer schedules its REST backfill)."""

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
        self._on_session_open()
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
            except Exception:  # noqa: BLE001, S110 - the connection is gone either way
                pass
        if reason == "closed by the server" and ws.close_code is not None:
            reason = f"closed by the server ({ws.close_code} {ws.close_reason or ''})".rstrip()
        lived = time.monotonic() - opened
        if got_data or lived >= cfg.healthy_after:
            log.warning("connection lost after %.1fs (%s); reconnecting", lived, reason)
            return lived
        raise _ConnectFailed(f"connection ended before any data ({reason})")


async def until_stopped(aw, *, stop_event: asyncio.Event) -> bool:
    """Await ``aw`` (a coroutine or task: a start-up step such as the symbol check) unless
    ``stop_event`` is set first. True: ``aw`` finished (its exception, if any, is raised here);
    False: the stop came first, ``aw`` was cancelled and awaited. Ctrl-C / SIGTERM thereby
    interrupt a slow start-up on a bad network too.

    >>> async def demo():
    ...     stop = asyncio.Event()
    ...     done = await until_stopped(asyncio.sleep(0, "ok"), stop_event=stop)
    ...     stop.set()
    ...     return done, await until_stopped(asyncio.Event().wait(), stop_event=stop)
    >>> asyncio.run(demo())
    (True, False)
    """
    work = asyncio.ensure_future(aw)
    stopped = asyncio.create_task(stop_event.wait())
    try:
        await asyncio.wait([work, stopped], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
        if not work.done():
            work.cancel()
        await asyncio.gather(work, stopped, return_exceptions=True)
    if work.cancelled():
        return False
    work.result()
    return True


async def run_until_stopped(named, *, stop_event: asyncio.Event, duration: float | None,
                            on_duration) -> BaseException | None:
    """Run the ``(name, coroutine)`` pairs as tasks until ``stop_event`` is set, ``duration`` seconds
    pass (``on_duration("duration reached")`` is called, which should set the event) or one task fails;
    then cancel and await every task. Returns the first failure (None on a clean stop). The one task
    lifetime of every streamer (klines, books, the CCXT book streamer)."""
    tasks = [asyncio.create_task(c, name=n) for n, c in named]
    timer = (asyncio.get_running_loop().call_later(duration, on_duration, "duration reached")
             if duration else None)
    waiter = asyncio.create_task(stop_event.wait())
    try:
        done, _ = await asyncio.wait([*tasks, waiter], return_when=asyncio.FIRST_COMPLETED)
        return next((t.exception() for t in done
                     if t is not waiter and not t.cancelled() and t.exception() is not None), None)
    finally:
        if timer is not None:
            timer.cancel()
        waiter.cancel()
        for t in tasks:
            t.cancel()
        await asyncio.gather(waiter, *tasks, return_exceptions=True)


def run_with_signals(make_streamer, *, handle_signals: bool = True):
    """``asyncio.run`` a streamer built by ``make_streamer()`` (an object with ``run()`` and ``stop(reason)``)
    with Ctrl-C / SIGTERM stopping it cleanly (``stop("Ctrl-C")`` / ``stop("SIGTERM")``); returns what
    ``run()`` returns. The one entry of every streamer CLI."""
    import signal

    async def main():
        streamer = make_streamer()
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
