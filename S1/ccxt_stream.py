"""Closed candles from any exchange's websocket through ccxt.pro ``watch_ohlcv``, with the
streamer's guarantees (see :mod:`S1.stream_client`): nothing closed is ever skipped.

:func:`closed_candles` is an async generator of :class:`ClosedCandle` (oldest first,
each open time once, only final values):

- **Watermark** ``W``: every closed candle the exchange has before ``W`` has been
  yielded. After every (re)connect -- and at start -- a REST backfill (through
  :class:`S1.ccxt_source.CcxtHistory`: exact pages, CCXT's rate limiter, bounded
  retries) yields ``[W, S)`` where ``S`` is the exchange's clock read *after* the
  connection delivered its first update; then ``W = floor(S)`` and anything that
  closes later arrives on the open connection. A stream candle after ``W`` (a hole)
  triggers another backfill, so a gap remains only where the exchange has one.
- **Which candles are closed**: CCXT's unified OHLCV has no "closed" flag, so a tap on
  the exchange class's ``handle_ohlcv`` reads it from the raw message where the
  exchange sends one (Binance ``k.x``, OKX ``confirm``) together with the full
  candle (close time, quote volume, trades, taker volumes on Binance). For other
  exchanges a candle counts as closed once a newer one has started (the last update
  before it is final on an ordered connection); its extra columns are NaN.
- **Reconnects**: any CCXT network error (drop, close frame, refused handshake, DNS)
  reconnects -- at once after a healthy session, else with exponential backoff and
  jitter (``backoff_initial * 2**(n-1)`` capped at ``backoff_max``, plus up to
  ``backoff_initial`` random), giving up with one line after ``max_failures``
  consecutive failures. Each reconnect is logged and counted.

URLs from settings: Binance's websocket from ``BINANCE_WS_URL`` and REST from
``BINANCE_API_URL``; other exchanges from ``CCXT_WS_URLS`` / ``CCXT_API_URLS``.

    async for c in closed_candles("BTC/USDT", "1m", venue=Venue("okx")):   # doctest: +SKIP
        print(c.open_time, c.row[4])

Not wired into ``S1/streamer.py`` yet (see S1/README_lake.md).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import AsyncIterator

import numpy as np
import pandas as pd
from tenacity import wait_exponential, wait_random

from S1.ccxt_source import CcxtHistory, Venue, closed_rows, make_exchange, rich_row
from S1.cli import NetworkError, UserError
from S1.intervals import close_time_ms, floor_ms, next_open_ms
from S1.settings import Settings, get_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ClosedCandle:
    """One final candle: ``row`` in the Binance kline layout (11 floats, NaN where the
    exchange does not report a column); ``source`` is ``stream`` or ``backfill``."""

    symbol: str
    interval: str
    row: tuple[float, ...]
    source: str

    @property
    def open_ms(self) -> int:
        return int(self.row[0])

    @property
    def open_time(self) -> pd.Timestamp:
        return pd.Timestamp(self.open_ms, unit="ms", tz="UTC")

    def store_row(self) -> tuple:
        """The row for :meth:`S1.stream_store.KlineStore.write` (closed; NaN volumes as 0)."""
        r = [0.0 if np.isnan(x) else x for x in self.row]
        return (self.symbol, self.interval, int(r[0]), int(r[6]), r[1], r[2], r[3], r[4], r[5], r[7], r[9], r[10],
                int(r[8]), 1)


@dataclass
class StreamStats:
    messages: int = 0
    closed_stream: int = 0
    closed_backfill: int = 0
    backfills: int = 0
    reconnects: int = 0
    failures: int = 0
    errors: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ the taps
def tap_rows(exchange_id: str, message) -> list[list]:
    """Rich rows (``S1.ccxt_source.ROW_WIDTH``, last field = closed flag) from one raw
    kline message, for exchanges whose messages say whether a candle is final."""
    if not isinstance(message, dict):
        return []
    if exchange_id.startswith("binance"):
        k = message.get("k")
        if not isinstance(k, dict):
            return []
        row = [k.get("t"), k.get("o"), k.get("h"), k.get("l"), k.get("c"), k.get("v"), k.get("T"), k.get("q"),
               k.get("n"), k.get("V"), k.get("Q")]
        return [[float(x) if x is not None else np.nan for x in row] + [1.0 if k.get("x") else 0.0]]
    if exchange_id.startswith("okx"):
        channel = str((message.get("arg") or {}).get("channel", ""))
        contract = str((message.get("arg") or {}).get("instId", "")).endswith(("-SWAP", "-FUTURES")) or \
            str((message.get("arg") or {}).get("instId", "")).count("-") >= 2
        if not channel.startswith(("candle", "mark-price-candle", "index-candle")):
            return []
        return [rich_row("okx", d, {"contract": contract}, lambda r, m: r) for d in message.get("data") or []]
    return []


def _taps(cls) -> dict:
    """Methods added to the ccxt.pro class: the closed-candle tap, and (Binance) spot
    detection that also accepts a configured local stream URL."""

    def handle_ohlcv(self, client, message):
        try:
            for r in tap_rows(self.id, message):
                self.toolkit_tap.append(r)
        except (TypeError, ValueError):  # never let the tap break CCXT's own handling
            pass
        return super(cls, self).handle_ohlcv(client, message)

    methods = {"handle_ohlcv": handle_ohlcv}
    if hasattr(cls, "is_spot_url"):
        def is_spot_url(self, client) -> bool:
            base = ((self.urls.get("api") or {}).get("ws") or {}).get("spot")
            return super(cls, self).is_spot_url(client) or bool(base and str(client.url).startswith(str(base)))
        methods["is_spot_url"] = is_spot_url
    return methods


def backoff_wait(initial: float, maximum: float):
    """The streamer's wait: ``initial * 2**(n-1)`` capped at ``maximum`` plus up to ``initial`` of jitter."""
    return wait_exponential(multiplier=initial, max=maximum) + wait_random(0, initial)


class _Attempt:
    def __init__(self, n: int):
        self.attempt_number = n
        self.outcome = None


# ---------------------------------------------------------------- the generator
async def closed_candles(symbol: str, interval: str, *, venue: Venue | None = None,
                         settings: Settings | None = None, start_ms: int | None = None,
                         max_failures: int = 10, backoff_initial: float = 0.5, backoff_max: float = 60.0,
                         stats: StreamStats | None = None) -> AsyncIterator[ClosedCandle]:
    """Yield every closed candle of ``symbol``/``interval`` from ``start_ms`` (default: the
    candle in progress when the stream starts) on, oldest first, each once; see the module."""
    import ccxt

    venue = venue or Venue()
    settings = settings or get_settings()
    stats = stats if stats is not None else StreamStats()
    if max_failures < 1 or backoff_initial < 0 or backoff_max < 0:
        raise UserError("max_failures must be >= 1 and the backoff times >= 0", "e.g. max_failures=10")
    ex = make_exchange(venue, settings, pro=True, extra=_taps)
    ex.toolkit_tap = deque()
    tapped = venue.exchange.startswith(("binance", "okx"))
    wait = backoff_wait(backoff_initial, backoff_max)
    history = CcxtHistory(venue, symbol, interval, settings=settings, exchange=ex)
    try:
        async with history as h:
            fsym, unified = h.file_symbol, h.market["symbol"]
            step = (lambda t: next_open_ms(t, interval))
            watermark = None if start_ms is None else floor_ms(int(start_ms), interval)
            need_backfill, healthy, failures = True, False, 0
            while True:
                try:
                    ohlcv = await ex.watch_ohlcv(unified, interval)
                except ccxt.NetworkError as exc:
                    failures = 1 if healthy else failures + 1
                    stats.failures += 1
                    stats.errors.append(str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__)
                    if failures > max_failures:
                        raise NetworkError(f"{venue.exchange} websocket failed {failures - 1} times in a row "
                                           f"({stats.errors[-1]})", "check the network and CCXT_WS_URLS / "
                                           "BINANCE_WS_URL; a restart backfills what was missed") from None
                    delay = 0.0 if healthy else wait(_Attempt(failures))
                    stats.reconnects += 1
                    log.warning("%s websocket lost (%s): reconnect #%d in %.1fs", venue.exchange,
                                stats.errors[-1], stats.reconnects, delay)
                    healthy, need_backfill = False, True
                    await asyncio.sleep(delay)
                    continue
                stats.messages += 1
                if not healthy:
                    healthy, failures = True, 0
                if need_backfill:  # the connection delivers: fill [W, S) over REST, S read now
                    now = await h.server_time()
                    if watermark is None:
                        watermark = floor_ms(now, interval)
                    async for c in _backfill(h, fsym, interval, watermark, now, stats):
                        yield c
                        watermark = step(c.open_ms)
                    watermark = max(watermark, floor_ms(now, interval))
                    need_backfill = False
                closed = _closed_from_tap(ex) if tapped else _closed_from_cache(ohlcv)
                for r in closed:
                    t = int(r[0])
                    if t < watermark:
                        continue
                    if t > watermark:  # a hole: the REST history decides what the exchange has
                        now = await h.server_time()
                        async for c in _backfill(h, fsym, interval, watermark, min(now, t), stats):
                            yield c
                        watermark = t
                    stats.closed_stream += 1
                    yield ClosedCandle(fsym, interval, _final(r, interval), "stream")
                    watermark = step(t)
    finally:
        ex.timeout_on_exit = 0
        await ex.close()


def _closed_from_tap(ex) -> list[list]:
    rows = []
    while ex.toolkit_tap:
        r = ex.toolkit_tap.popleft()
        if r[11] == 1:
            rows.append(r)
    rows.sort(key=lambda r: r[0])
    return rows


def _closed_from_cache(ohlcv) -> list[list]:
    """Generic exchanges: every cached candle older than the newest one is final."""
    if not ohlcv:
        return []
    newest = max(c[0] for c in ohlcv)
    return sorted(([float(x) for x in c[:6]] + [np.nan] * 5 + [1.0] for c in ohlcv if c[0] < newest),
                  key=lambda r: r[0])


def _final(r: list, interval: str) -> tuple[float, ...]:
    out = list(r[:11])
    if np.isnan(out[6]):
        out[6] = float(close_time_ms(int(out[0]), interval))
    return tuple(float(x) for x in out)


async def _backfill(h: CcxtHistory, fsym: str, interval: str, start: int, end: int,
                    stats: StreamStats) -> AsyncIterator[ClosedCandle]:
    if end <= start:
        return
    stats.backfills += 1
    rows = await h.fetch_range(start, end)
    kept, _ = closed_rows(rows, start, end, interval)
    for r in kept:
        stats.closed_backfill += 1
        yield ClosedCandle(fsym, interval, _final(list(r), interval), "backfill")
