"""Binance market streams on 127.0.0.1: a WebSocket replay server for the streamer.

It adds ``/ws/<stream>`` (raw) and ``/stream?streams=a/b/c`` (combined, events
wrapped as ``{"stream": name, "data": event}``) to a :class:`S1.local.exchange.LocalBinance`
app, and replays the candles that server holds -- real ones from ``../shared``
in tests, simulated ones otherwise -- on a :class:`ReplayClock` **shared with the
REST server**, so a REST backfill sees exactly the candles the stream closed.

Per candle it sends ``updates_per_candle`` in-progress kline events (the partial
values the REST server serves for the candle in progress at that instant) and
then the closed one (``"x": true``) at its close time, in Binance's exact event
JSON (``e E s k{t T s i f L o c h l v n x q V Q B}``). ``<symbol>@aggTrade`` and
``<symbol>@trade`` streams carry trades built to add up to the 1m klines
(first price = open, last = close, extremes = high/low, quantities, quote
volumes, taker-buy split from the buyer-maker flag ``m`` and trade ids ``f..L``),
so a trade aggregator can be checked against the exchange's own klines.

Real-world behaviour, scriptable per test:

- a ping every ``ping_interval`` s whose payload must come back in a pong within
  ``pong_timeout`` s (else the connection is closed, as Binance does);
- scheduled drops every ``drop_every`` s of a connection's life, cycling through
  ``drop_kinds``: ``abort`` (TCP reset, no close frame), ``close`` (close frame
  1001, like the 24 h disconnect), ``shutdown`` (a ``serverShutdown`` event, then
  a close after ``shutdown_grace`` s unless the client leaves first), ``stall``
  (silence and no pongs: only the client's keepalive notices);
- refused handshakes through the exchange's fault injection (:meth:`LocalStream.refuse`);
- ``SUBSCRIBE`` / ``UNSUBSCRIBE`` / ``LIST_SUBSCRIPTIONS`` requests;
- ``blast`` (benchmarks): pre-rendered events re-sent as fast as a client reads.

Order books (:mod:`S1.local.depth`): ``<symbol>@depth@100ms`` / ``<symbol>@depth`` diff
events with real ``U``/``u``, ``<symbol>@bookTicker``, ``<symbol>@ticker`` and the REST
snapshot ``GET /api/v3/depth`` of one TRUE book per symbol (``depth_markets``, with its
history per update id); ``depth_gap_every`` / ``depth_swap_every`` lose or reorder depth
events per connection.

Trade and aggregate-trade ids: trade ids are contiguous per symbol (``f`` of a
candle = 1,000,000 + the trades of every earlier candle); aggregate ids ``a`` are
unique and increasing, not contiguous.

Offline use (simulated market, REST + streams on one port)::

    python -m S1.local.stream --port 8766 --symbols BTCUSDT,ETHUSDC
    # then: BINANCE_API_URL=http://127.0.0.1:8766/api BINANCE_WS_URL=ws://127.0.0.1:8766 python S1/streamer.py
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import json
import logging
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from aiohttp import WSMsgType, web

from S1.intervals import INTERVALS, next_open_ms, to_ms
from S1.local.depth import BookTickerFeed, DepthFeed, DepthMarket, TickerFeed
from S1.local.exchange import LocalBinance, _fmt

log = logging.getLogger(__name__)

DROP_KINDS = ("abort", "close", "shutdown", "stall")
FIRST_TRADE_ID = 1_000_000


# ---------------------------------------------------------------------------- clock
class ReplayClock:
    """An accelerated exchange clock: ``now_ms = start + elapsed_wall_ms * speed``
    (``speed`` 60: a replayed minute per wall second).

    Share it: ``LocalBinance(now_ms=clock.now_ms)`` and ``LocalStream(ex, clock)``.
    It can start paused and stops at ``end_ms`` (the replay is over).

    >>> c = ReplayClock(start_ms=0, speed=60, paused=True)
    >>> c.now_ms(), c.wall_seconds_until(60_000)
    (0, None)
    >>> c.resume(); round(c.wall_seconds_until(60_000))
    1
    """

    def __init__(self, start_ms: int | None = None, speed: float = 1.0, *, end_ms: int | None = None,
                 paused: bool = False):
        if speed <= 0:
            raise ValueError("speed must be positive")
        self.speed = float(speed)
        self.end_ms = end_ms
        self._base_ms = float(int(time.time() * 1000) if start_ms is None else start_ms)
        self._base_wall = time.monotonic()
        self._paused = paused

    @property
    def paused(self) -> bool:
        return self._paused

    def now_ms(self) -> int:
        t = self._base_ms if self._paused else self._base_ms + (time.monotonic() - self._base_wall) * 1000 * self.speed
        if self.end_ms is not None:
            t = min(t, self.end_ms)
        return int(t)

    def pause(self) -> None:
        if not self._paused:
            self._base_ms, self._paused = float(self.now_ms()), True

    def resume(self) -> None:
        if self._paused:
            self._base_wall, self._paused = time.monotonic(), False

    @property
    def finished(self) -> bool:
        return self.end_ms is not None and self.now_ms() >= self.end_ms

    def wall_seconds_until(self, t_ms: float) -> float | None:
        """Wall seconds until the clock shows ``t_ms`` (None: it never will)."""
        if self._paused or (self.end_ms is not None and t_ms > self.end_ms):
            return None
        return max(0.0, (t_ms - self.now_ms()) / 1000.0 / self.speed)


# --------------------------------------------------------------------------- events
def _qty(units: int) -> str:
    """Integer 1e-8 units -> Binance decimal string (exact)."""
    sign = "-" if units < 0 else ""
    units = abs(units)
    return f"{sign}{units // 100_000_000}.{units % 100_000_000:08d}"


def _units(x: float) -> int:
    return int(round(float(x) * 1e8))


def first_trade_ids(rows: np.ndarray) -> np.ndarray:
    """Trade id of each candle's first trade (ids contiguous across candles)."""
    n = rows[:, 8].astype(np.int64)
    return FIRST_TRADE_ID + np.concatenate([[0], np.cumsum(n)[:-1]]).astype(np.int64)


def kline_event(symbol: str, interval: str, row, event_ms: int, closed: bool, first_id: int) -> str:
    """One kline event, byte for byte in Binance's layout (``row``: Binance kline row)."""
    n = int(row[8])
    f, last = (int(first_id), int(first_id) + n - 1) if n > 0 else (-1, -1)
    return (f'{{"e":"kline","E":{int(event_ms)},"s":"{symbol}","k":{{"t":{int(row[0])},"T":{int(row[6])},'
            f'"s":"{symbol}","i":"{interval}","f":{f},"L":{last},"o":"{_fmt(row[1])}","c":"{_fmt(row[4])}",'
            f'"h":"{_fmt(row[2])}","l":"{_fmt(row[3])}","v":"{_fmt(row[5])}","n":{n},'
            f'"x":{"true" if closed else "false"},"q":"{_fmt(row[7])}","V":"{_fmt(row[9])}",'
            f'"Q":"{_fmt(row[10])}","B":"0"}}}}')


@dataclass(frozen=True)
class AggTrade:
    """A block of consecutive trades at one price on one side."""

    time_ms: int
    price: float
    qty_units: int      # quantity in 1e-8 units
    buyer_maker: bool   # True: the taker sold
    first_id: int
    last_id: int


def trades_for_kline(row: np.ndarray, first_id: int, *, max_blocks: int = 8) -> list[AggTrade]:
    """Trades that add up to the kline ``row`` (Binance row layout): the first at the
    open, the last at the close, the extremes at high and low, the exact base volume
    and taker-buy base volume, the quote volumes up to the 1e-8 quantity grid, and
    ``row[8]`` trades with contiguous ids from ``first_id``.

    Taker buys (``m`` false) and taker sells each trade at low and high in the
    proportions that give their volume-weighted price (Q/V). Needs at least as many
    trades as blocks (a kline with fewer trades gets fewer blocks and may miss its
    quote volume slightly).
    """
    t, o, h, lo, c = int(row[0]), float(row[1]), float(row[2]), float(row[3]), float(row[4])
    n = int(row[8])
    if n <= 0:
        return []
    end = int(row[6])
    vol, buy = _units(row[5]), _units(row[9])
    quote, buy_quote = float(row[7]), float(row[10])
    groups = [(False, buy, buy_quote), (True, vol - buy, quote - buy_quote)]
    groups = [g for g in groups if g[1] > 0] or [(False, max(vol, 1), max(quote, o * 1e-8))]
    open_side, close_side = groups[0][0], groups[-1][0]
    middle: list[tuple[float, int, bool]] = []  # (price, units, buyer_maker) between the open and close
    first_blk = last_blk = None
    for side, units, q in groups:
        eps_o = 1 if side == open_side else 0
        eps_c = 1 if side == close_side and n > 1 else 0
        eps_o, eps_c = min(eps_o, units), min(eps_c, max(0, units - eps_o))
        rem = units - eps_o - eps_c
        rem_quote = q - (o * eps_o + c * eps_c) * 1e-8
        if rem > 0 and h > lo:
            w = rem_quote / (rem * 1e-8)
            at_high = int(round(rem * min(1.0, max(0.0, (w - lo) / (h - lo)))))
            at_low = rem - at_high
        else:
            at_high, at_low = rem, 0
        if eps_o:
            first_blk = (o, eps_o, side)
        if eps_c:
            last_blk = (c, eps_c, side)
        middle += [b for b in ((h, at_high, side), (lo, at_low, side)) if b[1] > 0]
    if first_blk is None:
        first_blk = middle.pop(0) if middle else (o, 1, open_side)
    blocks = [first_blk] + middle + ([last_blk] if last_blk else [])
    # split the largest blocks until max_blocks (more messages, same totals)
    while 2 <= len(blocks) < min(max_blocks, n):
        j = max(range(1, len(blocks) - 1 if len(blocks) > 2 else len(blocks)), key=lambda k: blocks[k][1])
        p, u, s = blocks[j]
        if u < 2:
            break
        blocks[j:j + 1] = [(p, u // 2, s), (p, u - u // 2, s)]
    if len(blocks) > n:  # fewer trades than blocks: merge the middle ones (quote may drift)
        keep = blocks[: n - 1] + [blocks[-1]] if n > 1 else [blocks[0]]
        moved = sum(b[1] for b in blocks) - sum(b[1] for b in keep)
        p, u, s = keep[-1]
        keep[-1] = (p, u + moved, s)
        blocks = keep
    # trade ids: one per block, the rest to the biggest blocks
    counts = [1] * len(blocks)
    spare = n - len(blocks)
    weights = np.array([b[1] for b in blocks], dtype=float)
    if spare > 0:
        extra = np.floor(weights / weights.sum() * spare).astype(int)
        extra[int(np.argmax(weights))] += spare - int(extra.sum())
        counts = [1 + int(e) for e in extra]
    span = max(1, end - t + 1)
    out, tid = [], int(first_id)
    for j, ((p, u, s), k) in enumerate(zip(blocks, counts)):
        out.append(AggTrade(t + (j + 1) * span // (len(blocks) + 1), p, u, s, tid, tid + k - 1))
        tid += k
    return out


def agg_trade_event(symbol: str, a: int, tr: AggTrade, event_ms: int) -> str:
    return (f'{{"e":"aggTrade","E":{int(event_ms)},"s":"{symbol}","a":{a},"p":"{_fmt(tr.price)}",'
            f'"q":"{_qty(tr.qty_units)}","f":{tr.first_id},"l":{tr.last_id},"T":{tr.time_ms},'
            f'"m":{"true" if tr.buyer_maker else "false"},"M":true}}')


def trade_events(symbol: str, tr: AggTrade, event_ms: int) -> list[str]:
    """The individual ``trade`` events of a block (quantity split over its trades)."""
    k = tr.last_id - tr.first_id + 1
    base, rest = divmod(tr.qty_units, k)
    m = "true" if tr.buyer_maker else "false"
    return [f'{{"e":"trade","E":{int(event_ms)},"s":"{symbol}","t":{tr.first_id + j},"p":"{_fmt(tr.price)}",'
            f'"q":"{_qty(base + (rest if j == k - 1 else 0))}","T":{tr.time_ms},"m":{m},"M":true}}'
            for j in range(k)]


# ---------------------------------------------------------------------------- feeds
def partial_row(row: list[float], length: float, now: int) -> list[float]:
    """The candle in progress at ``now``: :meth:`S1.local.exchange.LocalBinance._partial`
    (what the REST server serves) computed on plain floats, ~10x faster; a test pins
    the two together."""
    f = max(0.01, min(0.99, (now - row[0]) / length))
    o = row[1]
    out = list(row)
    out[4] = c = o + (row[4] - o) * f
    out[2] = max(o, c, o + (row[2] - o) * f)
    out[3] = min(o, c, o - (o - row[3]) * f)
    for j in (5, 7, 9, 10):
        out[j] = row[j] * f
    out[8] = float(math.floor(row[8] * f))
    return out


class _KlineFeed:
    """The events of one ``<symbol>@kline_<interval>`` stream after a given instant."""

    def __init__(self, name: str, symbol: str, interval: str, rows: np.ndarray, first_ids: np.ndarray,
                 updates: int, after_ms: int):
        self.name, self.symbol, self.interval = name, symbol, interval
        self.rows, self.first_ids, self.updates = rows, first_ids, max(0, int(updates))
        self.i = max(0, int(np.searchsorted(rows[:, 0], after_ms, side="right")) - 1)
        self.k = 1
        self.after = after_ms
        self._load()
        self._skip_past()

    def _load(self) -> None:
        """Cache the current candle as plain floats."""
        if self.i < len(self.rows):
            self._row = self.rows[self.i].tolist()
            t0 = int(self._row[0])
            self._t0, self._len = t0, next_open_ms(t0, self.interval) - t0
            self._end = int(self._row[6]) + 1
            self._fid = int(self.first_ids[self.i])

    def _time(self) -> int | None:
        if self.i >= len(self.rows):
            return None
        if self.k <= self.updates:
            return self._t0 + self._len * self.k // (self.updates + 1)
        return self._end

    def _advance(self) -> None:
        self.k += 1
        if self.k > self.updates + 1:
            self.i, self.k = self.i + 1, 1
            self._load()
        # in-progress updates scheduled after an (irregular) early close are skipped
        while self.i < len(self.rows) and self.k <= self.updates and self._time() >= self._end:
            self.k = self.updates + 1

    def _skip_past(self) -> None:
        while (t := self._time()) is not None and (t <= self.after or (self.k <= self.updates and t >= self._end)):
            self._advance()

    def next_time(self) -> int | None:
        return self._time()

    def pop(self) -> str:
        """Render the next event and move on."""
        t = self._time()
        closed = self.k > self.updates
        row = self._row if closed else partial_row(self._row, float(self._len), t)
        msg = kline_event(self.symbol, self.interval, row, t, closed, self._fid)
        self._advance()
        return msg


class _TradeFeed:
    """The events of one ``<symbol>@aggTrade`` or ``<symbol>@trade`` stream (1m klines)."""

    def __init__(self, name: str, symbol: str, kind: str, rows: np.ndarray, first_ids: np.ndarray,
                 after_ms: int, max_blocks: int):
        self.name, self.symbol, self.kind = name, symbol, kind
        self.rows, self.first_ids, self.max_blocks = rows, first_ids, max_blocks
        self.i = max(0, int(np.searchsorted(rows[:, 0], after_ms, side="right")) - 1)
        self.after = after_ms
        self.pending: deque[tuple[int, str]] = deque()
        self._fill()

    def _fill(self) -> None:
        while not self.pending and self.i < len(self.rows):
            blocks = trades_for_kline(self.rows[self.i], int(self.first_ids[self.i]), max_blocks=self.max_blocks)
            for j, tr in enumerate(blocks):
                if tr.time_ms <= self.after:
                    continue
                if self.kind == "aggTrade":
                    self.pending.append((tr.time_ms, agg_trade_event(self.symbol, 10_000_000 + self.i * 64 + j,
                                                                     tr, tr.time_ms)))
                else:
                    self.pending.extend((tr.time_ms, e) for e in trade_events(self.symbol, tr, tr.time_ms))
            self.i += 1

    def next_time(self) -> int | None:
        return self.pending[0][0] if self.pending else None

    def pop(self) -> str:
        msg = self.pending.popleft()[1]
        if not self.pending:
            self._fill()
        return msg


# ------------------------------------------------------------------------ the server
def _messages(popped) -> tuple[str, ...]:
    """A feed's ``pop()``: one message, several (out-of-order injection) or none (a dropped one)."""
    if popped is None:
        return ()
    return (popped,) if isinstance(popped, str) else tuple(popped)


def _depth_weight(path: str, params) -> int | None:
    """Binance's weight of ``GET /api/v3/depth`` grows with ``limit``."""
    if not path.endswith("/api/v3/depth"):
        return None
    try:
        limit = int(params.get("limit", 100))
    except (TypeError, ValueError):
        return 5
    return 5 if limit <= 100 else 25 if limit <= 500 else 50 if limit <= 1000 else 250


@dataclass
class Connection:
    """What happened on one WebSocket connection (for tests and the benchmark)."""

    id: int
    streams: list[str]
    combined: bool
    opened: float = field(default_factory=time.time)
    closed: float | None = None
    sent: int = 0
    pings: int = 0
    pongs: int = 0
    client_pings: int = 0
    ended_by: str = ""  # "client", "abort", "close", "shutdown", "stall", "pong-timeout", "server-stop"
    client_left_after_shutdown: bool = False


class LocalStream:
    """The WebSocket half of the local exchange. Install it before ``exchange.start()``.

    >>> clock = ReplayClock(start_ms=to_ms("2023-03-24"), speed=90_000)        # doctest: +SKIP
    >>> ex = LocalBinance(now_ms=clock.now_ms)                                 # doctest: +SKIP
    >>> stream = LocalStream(ex, clock, updates_per_candle=3, drop_every=0.2)  # doctest: +SKIP
    >>> ex.start(); stream.ws_url                                              # doctest: +SKIP
    'ws://127.0.0.1:40123'
    """

    def __init__(self, exchange: LocalBinance, clock: ReplayClock | None = None, *,
                 updates_per_candle: int | None = None, push_every_ms: int = 2000,
                 ping_interval: float | None = 20.0, pong_timeout: float = 60.0,
                 drop_every: float | None = None, drop_kinds: tuple[str, ...] = ("abort", "close", "shutdown"),
                 max_drops: int | None = None, shutdown_grace: float = 1.0, max_trade_blocks: int = 8,
                 min_sleep: float = 0.001, blast: bool = False,
                 rows_for: Callable[[str, str], np.ndarray | None] | None = None,
                 prefixes: tuple[str, ...] = ("",), depth_gap_every: int | None = None,
                 depth_swap_every: int | None = None, depth_history: int | None = 100_000,
                 depth_keep_events: int = 5_000):
        bad = [k for k in drop_kinds if k not in DROP_KINDS]
        if bad:
            raise ValueError(f"unknown drop kinds {bad}; use {DROP_KINDS}")
        self.exchange = exchange
        self.clock = clock or ReplayClock()
        exchange.set_now(self.clock.now_ms)  # one clock for REST and streams
        self.updates_per_candle = updates_per_candle
        self.push_every_ms = push_every_ms
        self.ping_interval, self.pong_timeout = ping_interval, pong_timeout
        self.drop_every, self.drop_kinds, self.max_drops = drop_every, tuple(drop_kinds), max_drops
        self.shutdown_grace = shutdown_grace
        self.max_trade_blocks = max_trade_blocks
        self.min_sleep = min_sleep
        self.blast = blast
        self.connections: list[Connection] = []
        self.drops = 0
        self._ids = itertools.count(1)
        self._first_ids: dict[tuple[str, str], tuple[int, np.ndarray]] = {}
        #: ``rows_for(symbol, interval)``: the candles replayed (default: the exchange's spot klines;
        #: S1.local.futures.LocalFuturesStream passes the perpetuals' series, under ``prefixes``)
        self.rows_for = rows_for or exchange.rows_for
        #: order books (``@depth``, ``@depth@100ms``, ``@bookTicker``, ``@ticker`` and ``GET /api/v3/depth``):
        #: one true book per symbol (:class:`S1.local.depth.DepthMarket`); faults per connection
        self.depth_markets: dict[str, DepthMarket] = {}
        self.depth_gap_every, self.depth_swap_every = depth_gap_every, depth_swap_every
        self.depth_history, self.depth_keep_events = depth_history, depth_keep_events
        self.depth_feeds: list[DepthFeed] = []
        if "" in prefixes:
            exchange.app.router.add_get("/api/v3/depth", self._depth)
            exchange.weight_hooks.append(_depth_weight)
        for prefix in prefixes:
            exchange.app.router.add_get(f"{prefix}/ws/{{stream}}", self._raw)
            exchange.app.router.add_get(f"{prefix}/stream", self._combined)
        self._live: set[web.WebSocketResponse] = set()
        exchange.app.on_shutdown.append(self._on_shutdown)

    @property
    def ws_url(self) -> str:
        """The value for ``BINANCE_WS_URL``."""
        return f"ws://{self.exchange.host}:{self.exchange.port}"

    def refuse(self, count: int = 1, *, status: int = 503) -> None:
        """Answer the next ``count`` combined-stream handshakes with HTTP ``status``."""
        self.exchange.inject("status", path="/stream", count=count, status=status)

    def _updates(self, interval: str) -> int:
        if self.updates_per_candle is not None:
            return self.updates_per_candle
        length = next_open_ms(0, interval) if interval != "1M" else 30 * 86_400_000
        return max(1, length // self.push_every_ms - 1)

    def _market(self, symbol: str, interval: str) -> tuple[np.ndarray, np.ndarray] | None:
        rows = self.rows_for(symbol, interval)
        if rows is None or len(rows) == 0:
            return None
        cached = self._first_ids.get((symbol, interval))
        if cached is None or cached[0] != id(rows):
            cached = (id(rows), first_trade_ids(rows))
            self._first_ids[(symbol, interval)] = cached
        return rows, cached[1]

    def _feed(self, name: str, after_ms: int):
        """A feed for a stream name (None for names this server does not replay)."""
        sym, _, kind = name.partition("@")
        symbol = sym.upper()
        if kind.startswith("kline_") and kind[6:] in INTERVALS:
            market = self._market(symbol, kind[6:])
            return None if market is None else _KlineFeed(name, symbol, kind[6:], *market,
                                                          self._updates(kind[6:]), after_ms)
        if kind in ("aggTrade", "trade"):
            market = self._market(symbol, "1m")
            return None if market is None else _TradeFeed(name, symbol, kind, *market, after_ms,
                                                          self.max_trade_blocks)
        if kind in ("depth", "depth@100ms", "depth@1000ms", "bookTicker", "ticker"):
            book = self.depth_market(symbol)
            if book is None:
                return None
            if kind == "bookTicker":
                return BookTickerFeed(book, after_ms)
            if kind == "ticker":
                return TickerFeed(book, after_ms)
            feed = DepthFeed(book, after_ms, every_ms=100 if kind == "depth@100ms" else 1000,
                             gap_every=self.depth_gap_every, swap_every=self.depth_swap_every)
            self.depth_feeds.append(feed)
            return feed
        return None

    def depth_market(self, symbol: str) -> DepthMarket | None:
        """The true order book of ``symbol`` (created on first use; None for unknown symbols)."""
        book = self.depth_markets.get(symbol)
        if book is None:
            if self._market(symbol, "1m") is None:
                return None
            book = self.depth_markets[symbol] = DepthMarket(symbol, start_ms=self.clock.now_ms(),
                                                            history_events=self.depth_history,
                                                            keep_events=self.depth_keep_events)
        return book

    async def _depth(self, request: web.Request) -> web.Response:
        """``GET /api/v3/depth?symbol=&limit=`` (limit 1..5000, default 100)."""
        symbol = request.query.get("symbol", "")
        try:
            limit = int(request.query.get("limit", "100"))
        except ValueError:
            limit = 0
        if not 1 <= limit <= 5000:
            return web.json_response({"code": -1100, "msg": "Illegal characters found in parameter 'limit'."},
                                     status=400)
        book = self.depth_market(symbol) if symbol else None
        if book is None:
            return web.json_response({"code": -1121, "msg": "Invalid symbol."}, status=400)
        book.advance_to(self.clock.now_ms())
        return web.json_response(book.snapshot(limit))

    # --------------------------------------------------------------- handlers
    async def _raw(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, [request.match_info["stream"]], combined=False)

    async def _combined(self, request: web.Request) -> web.StreamResponse:
        streams = [s for s in request.query.get("streams", "").split("/") if s]
        if not streams:
            return web.json_response({"code": -1102, "msg": "Mandatory parameter 'streams' was not sent."},
                                     status=400)
        return await self._serve(request, streams, combined=True)

    async def _serve(self, request: web.Request, streams: list[str], *, combined: bool) -> web.StreamResponse:
        ws = web.WebSocketResponse(autoping=False, compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        conn = Connection(next(self._ids), list(streams), combined)
        self.connections.append(conn)
        self._live.add(ws)
        now = self.clock.now_ms()
        feeds = {name: self._feed(name, now) for name in streams}
        state = {"stall": False, "pong_due": None, "ping_payload": b"", "shutdown_sent": False}
        reader = asyncio.create_task(self._read(ws, conn, feeds, state))
        pinger = asyncio.create_task(self._ping(ws, conn, state)) if self.ping_interval else None
        drop_at = None
        if self.drop_every and (self.max_drops is None or self.drops < self.max_drops):
            drop_at = time.monotonic() + self.drop_every
        try:
            await self._send_loop(ws, conn, feeds, state, drop_at, request)
        except (ConnectionError, RuntimeError):  # client gone mid-send
            conn.ended_by = conn.ended_by or "client"
        finally:
            for task in (reader, pinger):
                if task is not None:
                    task.cancel()
            if not ws.closed and conn.ended_by not in ("abort",):
                try:
                    await asyncio.wait_for(ws.close(), 1.0)
                except Exception:  # noqa: BLE001 - best effort
                    pass
            conn.closed = time.time()
            conn.ended_by = conn.ended_by or "client"
            self._live.discard(ws)
        return ws

    async def _blast(self, ws, conn: Connection, feeds: dict) -> None:
        """Benchmark mode: pre-rendered in-progress events, re-sent as fast as the
        client takes them (the server costs little more than the socket writes)."""
        msgs = []
        for name, f in feeds.items():
            for _ in range(16 if f is not None else 0):
                if f.next_time() is None:
                    break
                for msg in _messages(f.pop()):
                    msgs.append(f'{{"stream":"{name}","data":{msg}}}' if conn.combined else msg)
        if not msgs:
            return
        i = 0
        while not ws.closed:
            await ws.send_str(msgs[i % len(msgs)])
            i += 1
            conn.sent += 1
            if i % 256 == 0:
                await asyncio.sleep(0)

    async def _send_loop(self, ws, conn: Connection, feeds: dict, state: dict, drop_at, request) -> None:
        if self.blast:
            return await self._blast(ws, conn, feeds)
        heap: list[tuple[int, int, str]] = []
        seq = itertools.count()

        def push(name):
            f = feeds.get(name)
            if f is not None and (t := f.next_time()) is not None:
                heapq.heappush(heap, (t, next(seq), name))

        for name in list(feeds):
            push(name)
        known = set(feeds)
        while not ws.closed:
            if set(feeds) != known:  # SUBSCRIBE / UNSUBSCRIBE changed the feeds
                heap = [h for h in heap if h[2] in feeds]
                heapq.heapify(heap)
                for name in set(feeds) - known:
                    push(name)
                known = set(feeds)
            if state["stall"]:
                await asyncio.sleep(0.05)
                continue
            if drop_at is not None and time.monotonic() >= drop_at:
                await self._drop(ws, conn, state, request)
                return
            now = self.clock.now_ms()
            burst = 0
            while heap and heap[0][0] <= now and not ws.closed and burst < 256:
                _, _, name = heapq.heappop(heap)
                for msg in _messages(feeds[name].pop()):
                    await ws.send_str(f'{{"stream":"{name}","data":{msg}}}' if conn.combined else msg)
                    conn.sent += 1
                burst += 1
                push(name)
            if burst == 256:  # behind schedule: let the other connections and tasks run, then go on
                await asyncio.sleep(0)
                continue
            wait = 0.05
            if heap:
                w = self.clock.wall_seconds_until(heap[0][0])
                if w is not None:
                    wait = min(wait, w)
            if drop_at is not None:
                wait = min(wait, max(0.0, drop_at - time.monotonic()))
            await asyncio.sleep(max(self.min_sleep, wait))

    async def _drop(self, ws, conn: Connection, state: dict, request) -> None:
        kind = self.drop_kinds[self.drops % len(self.drop_kinds)]
        self.drops += 1
        conn.ended_by = kind
        log.info("local stream: connection %d dropped (%s)", conn.id, kind)
        if kind == "abort":
            if request.transport is not None:
                request.transport.abort()
        elif kind == "close":
            await ws.close(code=1001, message=b"going away")
        elif kind == "shutdown":
            E = self.clock.now_ms()
            event = f'{{"e":"serverShutdown","E":{E}}}'
            await ws.send_str(f'{{"stream":"!serverShutdown","data":{event}}}' if conn.combined else event)
            state["shutdown_sent"] = True
            deadline = time.monotonic() + self.shutdown_grace
            while not ws.closed and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            if ws.closed or conn.client_left_after_shutdown:
                conn.client_left_after_shutdown = True
            else:
                await ws.close(code=1001, message=b"server shutdown")
        elif kind == "stall":
            state["stall"] = True
            while not ws.closed:  # until the client's keepalive gives up
                await asyncio.sleep(0.01)

    async def _read(self, ws, conn: Connection, feeds: dict, state: dict) -> None:
        async for msg in ws:
            if msg.type == WSMsgType.PING:
                conn.client_pings += 1
                if not state["stall"]:
                    await ws.pong(msg.data)
            elif msg.type == WSMsgType.PONG:
                if bytes(msg.data) == state["ping_payload"]:
                    conn.pongs += 1
                    state["pong_due"] = None
            elif msg.type == WSMsgType.TEXT:
                await self._request(ws, conn, feeds, msg.data)
        if state["shutdown_sent"]:
            conn.client_left_after_shutdown = True

    async def _request(self, ws, conn: Connection, feeds: dict, text: str) -> None:
        try:
            req = json.loads(text)
            method, params, rid = req["method"], req.get("params", []), req.get("id")
        except (ValueError, KeyError, TypeError):
            await ws.send_str(json.dumps({"error": {"code": 3, "msg": "Invalid JSON"}}))
            return
        if method == "SUBSCRIBE":
            now = self.clock.now_ms()
            for name in params:
                if name not in feeds:
                    feeds[name] = self._feed(name, now)
                    conn.streams.append(name)
            await ws.send_str(json.dumps({"result": None, "id": rid}))
        elif method == "UNSUBSCRIBE":
            for name in params:
                feeds.pop(name, None)
                if name in conn.streams:
                    conn.streams.remove(name)
            await ws.send_str(json.dumps({"result": None, "id": rid}))
        elif method == "LIST_SUBSCRIPTIONS":
            await ws.send_str(json.dumps({"result": list(feeds), "id": rid}))
        else:
            await ws.send_str(json.dumps({"error": {"code": 2, "msg": f"Invalid request: unknown method {method}"},
                                          "id": rid}))

    async def _ping(self, ws, conn: Connection, state: dict) -> None:
        while not ws.closed:
            await asyncio.sleep(self.ping_interval)
            if state["pong_due"] is not None and time.monotonic() > state["pong_due"]:
                conn.ended_by = "pong-timeout"
                await ws.close(code=1008, message=b"pong timeout")
                return
            if state["pong_due"] is None:
                payload = str(time.time_ns()).encode()
                state["ping_payload"], state["pong_due"] = payload, time.monotonic() + self.pong_timeout
                conn.pings += 1
                await ws.ping(payload)

    async def _on_shutdown(self, app) -> None:
        for ws in list(self._live):
            await ws.close(code=1001, message=b"server stopping")


# ------------------------------------------------------------------------------ CLI
def serve(*, port: int = 8766, symbols: list[str], interval: str = "1m", start: str | None = None,
          speed: float = 1.0, updates_per_candle: int | None = None, rate: float | None = None,
          drop_every: float | None = None, days: int = 2, blast: bool = False,
          ready: Callable[[LocalBinance, LocalStream], None] | None = None, depth_gap_every: int | None = None,
          depth_swap_every: int | None = None) -> tuple[LocalBinance, LocalStream]:
    """Start a simulated exchange (REST + streams) on ``port``; returns it running."""
    clock = ReplayClock(to_ms(start) if start else None, speed)
    ex = LocalBinance(simulate=True, simulate_days=days, now_ms=clock.now_ms, port=port)
    if rate:  # messages/s over all symbols at the replay speed
        candle_wall_s = (next_open_ms(0, interval)) / 1000.0 / speed
        updates_per_candle = max(1, int(round(rate * candle_wall_s / len(symbols))) - 1)
    stream = LocalStream(ex, clock, updates_per_candle=updates_per_candle, drop_every=drop_every,
                         drop_kinds=("abort", "close", "shutdown"), blast=blast, depth_gap_every=depth_gap_every,
                         depth_swap_every=depth_swap_every, depth_history=1_000)
    for s in symbols:
        ex.rows_for(s, interval)
        ex.rows_for(s, "1m")
    ex.start()
    if ready:
        ready(ex, stream)
    return ex, stream


def main(argv=None) -> int:
    from S1.cli import ArgumentParser
    from S1.datasets import normalize_symbol
    from S1.errors import UserError
    from S1.intervals import check_interval

    p = ArgumentParser(prog="python -m S1.local.stream",
                       description="Serve a simulated Binance market (REST + WebSocket streams) on 127.0.0.1.")
    p.add_argument("--port", type=int, default=8766)
    p.add_argument("--symbols", default="BTCUSDT,ETHUSDC", help="comma-separated symbols to simulate")
    p.add_argument("--n-symbols", type=int, default=0, help="simulate N symbols S001USDT.. instead (benchmarks)")
    p.add_argument("--interval", default="1m", help="interval to pre-simulate (streams of any interval work)")
    p.add_argument("--start", default=None, help="replay clock start (ISO UTC); default now")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed (60 = one minute per second)")
    p.add_argument("--updates-per-candle", type=int, default=None,
                   help="in-progress kline events per candle (default: one per 2 s of replay time)")
    p.add_argument("--rate", type=float, default=None, help="target kline messages/s over all symbols")
    p.add_argument("--drop-every", type=float, default=None, help="drop each connection after N seconds")
    p.add_argument("--days", type=int, default=2, help="history to simulate per symbol")
    p.add_argument("--blast", action="store_true",
                   help="benchmarks: re-send pre-rendered kline events as fast as clients read them")
    p.add_argument("--depth-gap-every", type=int, default=None,
                   help="order books: drop every Nth depth event of a connection (a lost packet)")
    p.add_argument("--depth-swap-every", type=int, default=None,
                   help="order books: send every Nth depth event after the next one (out of order)")
    args = p.parse_args(argv)
    check_interval(args.interval)
    symbols = ([f"S{i:03d}USDT" for i in range(1, args.n_symbols + 1)] if args.n_symbols
               else [normalize_symbol(s) for s in args.symbols.split(",") if s.strip()])
    if not symbols:
        raise UserError("no symbols", "pass --symbols BTCUSDT,ETHUSDC or --n-symbols 100")
    ex, stream = serve(port=args.port, symbols=symbols, interval=args.interval, start=args.start,
                       speed=args.speed, updates_per_candle=args.updates_per_candle, rate=args.rate,
                       drop_every=args.drop_every, days=args.days, blast=args.blast,
                       depth_gap_every=args.depth_gap_every, depth_swap_every=args.depth_swap_every)
    print(f"simulated Binance market on {ex.api_url}, streams on {stream.ws_url}; Ctrl-C stops it", flush=True)
    print(f"  export BINANCE_API_URL={ex.api_url} BINANCE_WS_URL={stream.ws_url}", flush=True)
    ex.serve_until_interrupted()
    return 0


if __name__ == "__main__":
    from S1.cli import main_entry

    main_entry(main)
