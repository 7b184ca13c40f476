"""A local OKX on 127.0.0.1 speaking OKX's real v5 API: market-data REST and the public
WebSocket channels, so CCXT's ``okx`` class (history, :mod:`S1.ccxt_source`) and its
ccxt.pro class (the live streamer, :mod:`S1.ccxt_stream`) run offline against it.

**REST** (:class:`LocalOkx`, routes on :class:`S1.local.exchange.LocalBinance`'s HTTP
machinery, so its fault injection -- 5xx, drops, truncated bodies, delays -- applies):
``/api/v5/public/instruments``, ``/api/v5/public/time`` and the six candle endpoints
(``candles``, ``history-candles``, ``[history-]mark-price-candles``,
``[history-]index-candles``) with OKX paging (``after``: older than, ``before``: newer
than, newest first, at most 300 / 100 per page), the candle in progress served with
partial values and ``confirm`` ``"0"``, a configurable confirmation lag, and the OKX error
bodies (51000 bad bar, 51001 unknown instrument, 50011 rate limit).

**WebSocket** (:class:`LocalOkxStream`): ``/ws/v5/public`` (``trades``) and
``/ws/v5/business`` (``candle<bar>``: OKX moved the candle channels there in June 2023),
``/ws/v5/private`` (no channels). It answers ``{"op":"subscribe","args":[{"channel":
"candle1m","instId":"BTC-USDT"}]}`` with one ``{"event":"subscribe","arg":{...},"connId":
...}`` per argument, unknown or misplaced channels with ``{"event":"error","code":"60018",
...}``, bad JSON with 60012, the text ``ping`` with ``pong``. Candles are replayed on a
:class:`S1.local.stream.ReplayClock` **shared with the REST side** (so a REST backfill sees
what the stream closed): the candle in progress right after subscribing, then per candle
``updates_per_candle`` pushes with ``confirm`` ``"0"`` (partial values, the ones REST serves
at that instant) and the final one with ``confirm`` ``"1"`` at its close, each
``{"arg":{...},"data":[[ts,o,h,l,c,vol,volCcy,volCcyQuote,confirm]]}``. Trades come as OKX's
``trades`` channel sends them: aggregated pushes ``{"instId","tradeId","px","sz","side","ts",
"count"}`` where ``tradeId`` is the *last* id of the ``count`` trades aggregated; ids are
consecutive per instrument and the trades add up to the 1m candles (first = open, last =
close, extremes = high/low, the volume, the quote volume up to the 1e-8 size grid).

Faults: connections dropped every ``drop_every`` s of their life, cycling ``drop_kinds``
(``abort``: TCP reset; ``close``: a close frame 1001; ``notice``: OKX's 64008 "will soon be
closed for a service upgrade" event, then a close after ``notice_grace`` s); refused
handshakes (:meth:`LocalOkxStream.refuse`: HTTP 503 for the next handshakes).

Why our own server: OKX is unreachable here, no library fakes OKX's websocket, and the
tests need the real client code over real sockets (see S1/local/exchange.py).

Offline use (simulated market, REST and websocket on one port)::

    python -m S1.local.okx --port 8767 --symbols BTC-USDT,ETH-USDT
    # then: CCXT_API_URLS=okx=http://127.0.0.1:8767 CCXT_WS_URLS=okx=ws://127.0.0.1:8767 \\
    #       python S1/streamer.py --exchange okx --symbols BTC/USDT,ETH/USDT
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import pandas as pd
from aiohttp import WSMsgType, web

from S1.datasets import candles_to_rows
from S1.intervals import INTERVAL_MS, next_open_ms, to_ms
from S1.local.exchange import LocalBinance
from S1.local.stream import ReplayClock, _KlineFeed, _qty, first_trade_ids, partial_row, trades_for_kline

log = logging.getLogger(__name__)

#: OKX ``bar`` -> the project's interval
BARS = {"1m": "1m", "3m": "3m", "5m": "5m", "15m": "15m", "30m": "30m", "1H": "1h", "2H": "2h", "4H": "4h",
        "6Hutc": "6h", "12Hutc": "12h", "1Dutc": "1d", "1Wutc": "1w"}
#: candle channels as CCXT names them (``candle`` + OKX's bar for the interval)
CHANNEL_BARS = {"candle1m": "1m", "candle3m": "3m", "candle5m": "5m", "candle15m": "15m", "candle30m": "30m",
                "candle1H": "1h", "candle2H": "2h", "candle4H": "4h", "candle6H": "6h", "candle12H": "12h",
                "candle1D": "1d", "candle1W": "1w", **{f"candle{k}": v for k, v in BARS.items()}}
DROP_KINDS = ("abort", "close", "notice")
FIRST_TRADE_ID = 500_000_000


def _s(x: float) -> str:
    """A decimal as OKX sends it (a string; here the shortest exact float text)."""
    return repr(float(x))


def _is_contract(inst_id: str) -> bool:
    return inst_id.endswith(("-SWAP", "-FUTURES")) or inst_id.count("-") >= 2


def okx_candle(row, interval: str, confirm: str, *, contract: bool = False, kind: str = "last") -> list[str]:
    """One candle (Binance row layout) as OKX's array: ``[ts, o, h, l, c, vol, volCcy,
    volCcyQuote, confirm]`` (spot: vol = base, volCcy = volCcyQuote = quote; swaps at 0.01 BTC a
    contract: vol = contracts, volCcy = base); mark/index: ``[ts, o, h, l, c, confirm]``."""
    ohlc = [str(int(row[0])), _s(row[1]), _s(row[2]), _s(row[3]), _s(row[4])]
    if kind != "last":
        return ohlc + [confirm]
    vol = _s(row[5] / 0.01) if contract else _s(row[5])
    return ohlc + [vol, _s(row[5]) if contract else _s(row[7]), _s(row[7]), confirm]


def _instrument(inst_id: str) -> dict:
    parts = inst_id.split("-")
    if _is_contract(inst_id):
        return {**LocalOkx.SWAP, "instId": inst_id, "uly": "-".join(parts[:2]), "instFamily": "-".join(parts[:2]),
                "ctValCcy": parts[0]}
    return {**LocalOkx.SPOT, "instId": inst_id, "baseCcy": parts[0], "quoteCcy": parts[1] if len(parts) > 1 else ""}


# =============================================================================== REST
class LocalOkx:
    """OKX's public market-data REST API (``with LocalOkx("2023-05-31 12:30") as ex``).

    ``now``: a fixed time (ISO text or ms), a callable (e.g. ``ReplayClock.now_ms``) or None
    (the real clock). Serve candles with :meth:`add`; every instrument added is listed.

    >>> from S1.local.simulated import simulate_candles
    >>> with LocalOkx("2024-01-02") as ex:                           # doctest: +SKIP
    ...     ex.add("last", "BTC-USDT", "1h", simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-03"))
    ...     ex.url
    'http://127.0.0.1:40123'
    """

    SPOT: ClassVar[dict] = {"instType": "SPOT", "instId": "BTC-USDT", "baseCcy": "BTC", "quoteCcy": "USDT", "settleCcy": "",
            "ctVal": "", "ctMult": "", "ctValCcy": "", "ctType": "", "uly": "", "instFamily": "", "alias": "",
            "expTime": "", "lever": "10", "listTime": "1548133413000", "lotSz": "0.00000001", "minSz": "0.00001",
            "tickSz": "0.1", "state": "live", "category": "1", "maxMktSz": "1000000"}
    SWAP: ClassVar[dict] = {**SPOT, "instType": "SWAP", "instId": "BTC-USDT-SWAP", "baseCcy": "", "quoteCcy": "", "settleCcy": "USDT",
            "ctVal": "0.01", "ctMult": "1", "ctValCcy": "BTC", "ctType": "linear", "uly": "BTC-USDT",
            "instFamily": "BTC-USDT", "lotSz": "0.01", "minSz": "0.01", "lever": "100"}

    def __init__(self, now: str | int | Callable[[], int] | None = None, *, history_limit: int = 300,
                 port: int = 0):
        fixed = to_ms(now) if isinstance(now, str) else now
        self.server = LocalBinance(now_ms=fixed, port=port)
        self.history_limit = history_limit
        #: set when what is served is simulated (the ``serve`` CLI): ``/api/v5/public/time`` says so
        self.simulated = False
        #: a candle stays ``confirm`` "0" on REST this long after its close (OKX's finalisation lag)
        self.unconfirmed_lag_ms = 0
        self.series: dict[tuple[str, str, str], np.ndarray] = {}  # (kind, instId, interval) -> Binance rows
        self.instruments: dict[str, dict] = {i["instId"]: i for i in (self.SPOT, self.SWAP)}
        #: OKX-style faults for the next candle requests ("429": OKX's 50011 body)
        self.okx_faults: list[str] = []
        app = self.server.app
        app.router.add_get("/api/v5/public/instruments", self._instruments)
        app.router.add_get("/api/v5/public/time", self._time)
        for kind, paths in (("last", ("candles", "history-candles")),
                            ("mark", ("mark-price-candles", "history-mark-price-candles")),
                            ("index", ("index-candles", "history-index-candles"))):
            for p in paths:
                app.router.add_get(f"/api/v5/market/{p}", self._candles(kind, history=p.startswith("history")))

    # ------------------------------------------------------------------ control
    @property
    def url(self) -> str:
        """The value for ``CCXT_API_URLS=okx=...``."""
        return self.server.url

    def now_ms(self) -> int:
        return self.server.now_ms()

    def add(self, kind: str, inst_id: str, interval: str, df: pd.DataFrame) -> None:
        """Serve ``df`` (a candle frame) as ``inst_id``'s ``kind`` (last/mark/index) candles."""
        rows = candles_to_rows(df)
        self.series[(kind, inst_id, interval)] = rows[np.argsort(rows[:, 0], kind="stable")]
        if kind == "last" and inst_id not in self.instruments:
            self.instruments[inst_id] = _instrument(inst_id)

    def rows(self, inst_id: str, interval: str, kind: str = "last") -> np.ndarray | None:
        return self.series.get((kind, inst_id, interval))

    @property
    def requests(self):
        return [r for r in self.server.requests if r.path.startswith("/api/v5/market/")]

    def start(self) -> LocalOkx:
        self.server.start()
        return self

    def stop(self) -> None:
        self.server.stop()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # ------------------------------------------------------------------- routes
    @staticmethod
    def _ok(data) -> web.Response:
        return web.json_response({"code": "0", "msg": "", "data": data})

    async def _instruments(self, request):
        kind = request.query.get("instType")
        return self._ok([i for i in self.instruments.values() if i["instType"] == kind])

    async def _time(self, request):
        if self.simulated:   # a simulated market is labelled by the server itself (as /api/v3/time does)
            return web.json_response({"code": "0", "msg": "", "simulated": True,
                                      "data": [{"ts": str(self.server.now_ms())}]})
        return self._ok([{"ts": str(self.server.now_ms())}])

    def _candles(self, kind: str, history: bool):
        async def handler(request):
            q = request.query
            if self.okx_faults:
                fault = self.okx_faults.pop(0)
                if fault == "429":
                    return web.json_response({"code": "50011", "msg": "Too Many Requests", "data": []}, status=429)
            interval = BARS.get(q.get("bar", "1m"))
            if interval is None:
                return web.json_response({"code": "51000", "msg": "Parameter bar error", "data": []}, status=400)
            rows = self.series.get((kind, q.get("instId"), interval))
            if rows is None:
                return web.json_response({"code": "51001", "msg": "Instrument ID does not exist", "data": []},
                                         status=400)
            cap = self.history_limit if history else 300
            cap = min(cap, 100) if kind != "last" else cap
            try:
                limit = min(cap, int(q.get("limit", 100)))
                after = int(q["after"]) if "after" in q else None
                before = int(q["before"]) if "before" in q else None
            except ValueError:
                return web.json_response({"code": "51000", "msg": "Parameter after error", "data": []}, status=400)
            now = self.server.now_ms()
            t = rows[:, 0]
            sel = t <= now
            if after is not None:  # OKX: records *earlier* than `after`
                sel &= t < after
            if before is not None:  # ... and *newer* than `before`
                sel &= t > before
            picked = rows[sel][-limit:][::-1]  # the newest `limit`, newest first
            length = INTERVAL_MS[interval]
            contract = _is_contract(q.get("instId", ""))
            data = []
            for r in picked:
                in_progress = r[0] + length > now
                if in_progress:
                    r = LocalBinance.partial_candle(r, interval, now)
                confirm = "0" if in_progress or r[0] + length > now - self.unconfirmed_lag_ms else "1"
                data.append(okx_candle(r, interval, confirm, contract=contract, kind=kind))
            return self._ok(data)
        return handler


# ========================================================================== WebSocket
class _CandleFeed(_KlineFeed):
    """The pushes of one ``candle<bar>`` subscription after a given instant (OKX JSON)."""

    def __init__(self, inst_id: str, channel: str, interval: str, rows: np.ndarray, updates: int, after_ms: int):
        super().__init__(channel, inst_id, interval, rows, np.zeros(len(rows), dtype=np.int64), updates, after_ms)
        self.inst_id, self.channel = inst_id, channel
        self.contract = _is_contract(inst_id)
        self._arg = json.dumps({"channel": channel, "instId": inst_id}, separators=(",", ":"))

    def render(self, row, confirm: str) -> str:
        data = json.dumps([okx_candle(row, self.interval, confirm, contract=self.contract)], separators=(",", ":"))
        return f'{{"arg":{self._arg},"data":{data}}}'

    def snapshot(self, now: int) -> str | None:
        """The candle in progress at ``now`` (OKX pushes it right after a subscription)."""
        i = int(np.searchsorted(self.rows[:, 0], now, side="right")) - 1
        if i < 0 or i >= len(self.rows):
            return None
        row = self.rows[i].tolist()
        length = next_open_ms(int(row[0]), self.interval) - int(row[0])
        if now >= row[0] + length:
            return None
        return self.render(partial_row(row, float(length), now), "0")

    def pop(self) -> str:
        t = self._time()
        closed = self.k > self.updates
        row = self._row if closed else partial_row(self._row, float(self._len), t)
        msg = self.render(row, "1" if closed else "0")
        self._advance()
        return msg


class _TradeFeed:
    """The pushes of one ``trades`` subscription: one aggregated push per block of
    consecutive trades at one price and side (``tradeId`` = the block's last id)."""

    def __init__(self, inst_id: str, rows: np.ndarray, first_ids: np.ndarray, after_ms: int, max_blocks: int):
        self.inst_id, self.rows, self.first_ids, self.max_blocks = inst_id, rows, first_ids, max_blocks
        self.i = max(0, int(np.searchsorted(rows[:, 0], after_ms, side="right")) - 1)
        self.after = after_ms
        self.pending: list[tuple[int, str]] = []
        self._arg = json.dumps({"channel": "trades", "instId": inst_id}, separators=(",", ":"))
        self._fill()

    def _fill(self) -> None:
        while not self.pending and self.i < len(self.rows):
            for tr in trades_for_kline(self.rows[self.i], int(self.first_ids[self.i]), max_blocks=self.max_blocks):
                if tr.time_ms <= self.after:
                    continue
                d = {"instId": self.inst_id, "tradeId": str(tr.last_id), "px": _s(tr.price),
                     "sz": _qty(tr.qty_units).rstrip("0").rstrip("."), "side": "sell" if tr.buyer_maker else "buy",
                     "source": "0", "ts": str(tr.time_ms), "count": str(tr.last_id - tr.first_id + 1)}
                self.pending.append((tr.time_ms, f'{{"arg":{self._arg},"data":[{json.dumps(d, separators=(",", ":"))}]}}'))
            self.pending.reverse()  # pop() takes from the end
            self.i += 1

    def next_time(self) -> int | None:
        return self.pending[-1][0] if self.pending else None

    def pop(self) -> str:
        msg = self.pending.pop()[1]
        if not self.pending:
            self._fill()
        return msg


@dataclass
class OkxConnection:
    """What happened on one WebSocket connection (for tests)."""

    id: int
    access: str
    conn_id: str
    subscriptions: list[tuple[str, str]] = field(default_factory=list)
    opened: float = field(default_factory=time.time)
    closed: float | None = None
    sent: int = 0
    pings: int = 0
    errors: list[str] = field(default_factory=list)
    ended_by: str = ""  # "client", "abort", "close", "notice", "server-stop"


class LocalOkxStream:
    """The WebSocket half of the local OKX (install it before ``okx.start()``).

    >>> clock = ReplayClock(start_ms=to_ms("2024-03-01"), speed=1200)            # doctest: +SKIP
    >>> okx = LocalOkx(clock.now_ms); ws = LocalOkxStream(okx, clock, drop_every=0.5)  # doctest: +SKIP
    >>> okx.start(); ws.ws_url                                                     # doctest: +SKIP
    'ws://127.0.0.1:40123'
    """

    def __init__(self, okx: LocalOkx, clock: ReplayClock | None = None, *, updates_per_candle: int = 3,
                 drop_every: float | None = None, drop_kinds: tuple[str, ...] = DROP_KINDS,
                 max_drops: int | None = None, notice_grace: float = 0.05, max_trade_blocks: int = 8,
                 min_sleep: float = 0.001):
        bad = [k for k in drop_kinds if k not in DROP_KINDS]
        if bad:
            raise ValueError(f"unknown drop kinds {bad}; use {DROP_KINDS}")
        self.okx = okx
        self.clock = clock or ReplayClock()
        okx.server.set_now(self.clock.now_ms)  # one clock for REST and websocket
        self.updates_per_candle = max(0, int(updates_per_candle))
        self.drop_every, self.drop_kinds, self.max_drops = drop_every, tuple(drop_kinds), max_drops
        self.notice_grace = notice_grace
        self.max_trade_blocks = max_trade_blocks
        self.min_sleep = min_sleep
        self.connections: list[OkxConnection] = []
        self.drops = 0
        self._ids = itertools.count(1)
        self._first_ids: dict[str, tuple[int, np.ndarray]] = {}
        self._live: set[web.WebSocketResponse] = set()
        okx.server.app.router.add_get("/ws/v5/{access}", self._serve)
        okx.server.app.on_shutdown.append(self._on_shutdown)

    @property
    def ws_url(self) -> str:
        """The value for ``CCXT_WS_URLS=okx=...`` (CCXT appends ``/ws/v5/public`` etc.)."""
        return f"ws://{self.okx.server.host}:{self.okx.server.port}"

    def refuse(self, count: int = 1, *, status: int = 503, access: str = "") -> None:
        """Answer the next ``count`` handshakes (to ``/ws/v5/<access>``, any if empty) with HTTP ``status``."""
        self.okx.server.inject("status", path=f"/ws/v5/{access}", count=count, status=status)

    # ------------------------------------------------------------------ feeds
    def _feed(self, access: str, channel: str, inst_id: str, after_ms: int):
        """``(feed, None)`` or ``(None, error code/message)`` as OKX answers a subscription."""
        wrong = (60018, (f"Wrong URL or channel:{channel},instId:{inst_id} doesn't exist. "
                         "Please use the correct URL, channel and parameters referring to API document."))
        if channel in CHANNEL_BARS:
            rows = self.okx.rows(inst_id, CHANNEL_BARS[channel]) if access == "business" else None
            if rows is None or not len(rows):
                return None, wrong
            return _CandleFeed(inst_id, channel, CHANNEL_BARS[channel], rows, self.updates_per_candle, after_ms), None
        if channel == "trades" and access == "public":
            rows = self.okx.rows(inst_id, "1m")
            if rows is None or not len(rows):
                return None, wrong
            cached = self._first_ids.get(inst_id)
            if cached is None or cached[0] != id(rows):
                ids = first_trade_ids(rows)
                cached = (id(rows), ids - ids[0] + FIRST_TRADE_ID)
                self._first_ids[inst_id] = cached
            return _TradeFeed(inst_id, rows, cached[1], after_ms, self.max_trade_blocks), None
        return None, wrong

    # --------------------------------------------------------------- handlers
    async def _serve(self, request: web.Request) -> web.StreamResponse:
        access = request.match_info["access"]
        if access not in ("public", "business", "private"):
            raise web.HTTPNotFound()
        ws = web.WebSocketResponse(autoping=True, compress=False, max_msg_size=1 << 20)
        await ws.prepare(request)
        cid = next(self._ids)
        conn = OkxConnection(cid, access, f"{cid * 2654435761 & 0xffffffff:08x}")
        self.connections.append(conn)
        self._live.add(ws)
        feeds: dict[tuple[str, str], object] = {}
        wake = asyncio.Event()
        reader = asyncio.create_task(self._read(ws, conn, feeds, wake))
        drop_at = None
        if self.drop_every and (self.max_drops is None or self.drops < self.max_drops):
            drop_at = time.monotonic() + self.drop_every
        try:
            await self._send_loop(ws, conn, feeds, wake, drop_at, request)
        except (ConnectionError, RuntimeError):  # client gone mid-send
            conn.ended_by = conn.ended_by or "client"
        finally:
            reader.cancel()
            if not ws.closed and conn.ended_by != "abort":
                with contextlib.suppress(Exception):  # best effort: the client may be gone
                    await asyncio.wait_for(ws.close(), 1.0)
            conn.closed = time.time()
            conn.ended_by = conn.ended_by or "client"
            self._live.discard(ws)
        return ws

    async def _send_loop(self, ws, conn: OkxConnection, feeds: dict, wake: asyncio.Event, drop_at, request) -> None:
        while not ws.closed:
            if drop_at is not None and time.monotonic() >= drop_at:
                await self._drop(ws, conn, request)
                return
            now = self.clock.now_ms()
            due = []
            for key, f in list(feeds.items()):
                while (t := f.next_time()) is not None and t <= now and len(due) < 512:
                    due.append((t, key, f.pop()))
            due.sort(key=lambda x: x[0])
            for _, _, msg in due:
                if ws.closed:
                    return
                await ws.send_str(msg)
                conn.sent += 1
            if len(due) >= 512:
                await asyncio.sleep(0)
                continue
            wait = 0.05
            times = [t for f in feeds.values() if (t := f.next_time()) is not None]
            if times:
                w = self.clock.wall_seconds_until(min(times))
                if w is not None:
                    wait = min(wait, w)
            if drop_at is not None:
                wait = min(wait, max(0.0, drop_at - time.monotonic()))
            wake.clear()
            try:
                await asyncio.wait_for(wake.wait(), max(self.min_sleep, wait))
            except TimeoutError:
                pass

    async def _drop(self, ws, conn: OkxConnection, request) -> None:
        kind = self.drop_kinds[self.drops % len(self.drop_kinds)]
        self.drops += 1
        conn.ended_by = kind
        log.info("local okx: connection %d (%s) dropped (%s)", conn.id, conn.access, kind)
        if kind == "abort":
            if request.transport is not None:
                request.transport.abort()
        elif kind == "close":
            await ws.close(code=1001, message=b"going away")
        elif kind == "notice":
            await ws.send_str(json.dumps({"event": "notice", "code": "64008", "msg": "The connection will soon be "
                                          "closed for a service upgrade. Please reconnect.", "connId": conn.conn_id}))
            deadline = time.monotonic() + self.notice_grace
            while not ws.closed and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            if not ws.closed:
                await ws.close(code=1001, message=b"service upgrade")

    async def _read(self, ws, conn: OkxConnection, feeds: dict, wake: asyncio.Event) -> None:
        async for msg in ws:
            if msg.type != WSMsgType.TEXT:
                continue
            if msg.data == "ping":
                conn.pings += 1
                await ws.send_str("pong")
                continue
            await self._request(ws, conn, feeds, msg.data)
            wake.set()

    async def _error(self, ws, conn: OkxConnection, code: int, text: str, rid=None) -> None:
        conn.errors.append(str(code))
        body = {"event": "error", "code": str(code), "msg": text, "connId": conn.conn_id}
        if rid is not None:
            body = {"id": rid, **body}
        await ws.send_str(json.dumps(body, separators=(",", ":")))

    async def _request(self, ws, conn: OkxConnection, feeds: dict, text: str) -> None:
        try:
            req = json.loads(text)
            op, args, rid = req["op"], req["args"], req.get("id")
            if not isinstance(args, list) or not all(isinstance(a, dict) for a in args):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            await self._error(ws, conn, 60012, f"Invalid request: {text}")
            return
        if op not in ("subscribe", "unsubscribe"):
            await self._error(ws, conn, 60019, f"Invalid op: {op}", rid)
            return
        now = self.clock.now_ms()
        for arg in args:
            channel, inst_id = str(arg.get("channel", "")), str(arg.get("instId", ""))
            key = (channel, inst_id)
            if op == "subscribe" and key not in feeds:
                feed, err = self._feed(conn.access, channel, inst_id, now)
                if err is not None:
                    await self._error(ws, conn, *err, rid)
                    continue
            ack = {"event": op, "arg": {"channel": channel, "instId": inst_id}, "connId": conn.conn_id}
            await ws.send_str(json.dumps({"id": rid, **ack} if rid is not None else ack, separators=(",", ":")))
            if op == "unsubscribe":
                feeds.pop(key, None)
                if key in conn.subscriptions:
                    conn.subscriptions.remove(key)
            elif key not in feeds:
                feeds[key] = feed
                conn.subscriptions.append(key)
                if isinstance(feed, _CandleFeed) and (snap := feed.snapshot(now)) is not None:
                    await ws.send_str(snap)
                    conn.sent += 1

    async def _on_shutdown(self, app) -> None:
        for ws in list(self._live):
            await ws.close(code=1001, message=b"server stopping")


# ------------------------------------------------------------------------------ CLI
def serve(*, port: int = 8767, inst_ids: list[str], start: str | None = None, speed: float = 1.0,
          updates_per_candle: int = 3, days: int = 2) -> tuple[LocalOkx, LocalOkxStream]:
    """Start a simulated OKX (REST + websocket, 1m candles of ``inst_ids``) on ``port``."""
    from S1.local.simulated import simulate_candles

    clock = ReplayClock(to_ms(start) if start else None, speed)
    okx = LocalOkx(clock.now_ms, port=port)
    okx.simulated = True
    now = pd.Timestamp(clock.now_ms(), unit="ms", tz="UTC")
    for inst in inst_ids:
        okx.add("last", inst, "1m", simulate_candles(inst.replace("-", ""), "1m", now - pd.Timedelta(days=days),
                                                     now + pd.Timedelta(days=2)))
    stream = LocalOkxStream(okx, clock, updates_per_candle=updates_per_candle)
    okx.start()
    return okx, stream


def main(argv=None) -> int:
    from S1.cli import ArgumentParser
    from S1.errors import UserError

    p = ArgumentParser(prog="python -m S1.local.okx",
                       description="Serve a simulated OKX market (v5 REST + WebSocket) on 127.0.0.1.")
    p.add_argument("--port", type=int, default=8767)
    p.add_argument("--symbols", default="BTC-USDT,ETH-USDT", help="comma-separated OKX instrument ids")
    p.add_argument("--start", default=None, help="replay clock start (ISO UTC); default now")
    p.add_argument("--speed", type=float, default=1.0, help="replay speed (60 = one minute per second)")
    p.add_argument("--updates-per-candle", type=int, default=3, help="confirm=0 pushes per candle")
    p.add_argument("--days", type=int, default=2, help="history to simulate per instrument")
    args = p.parse_args(argv)
    inst_ids = [s.strip().upper() for s in args.symbols.split(",") if s.strip()]
    if not inst_ids or not all("-" in s for s in inst_ids):
        raise UserError(f"bad --symbols {args.symbols!r}", "pass OKX instrument ids, e.g. --symbols BTC-USDT,ETH-USDT")
    okx, stream = serve(port=args.port, inst_ids=inst_ids, start=args.start, speed=args.speed,
                        updates_per_candle=args.updates_per_candle, days=args.days)
    print(f"simulated OKX on {okx.url} (websocket {stream.ws_url}/ws/v5/...); Ctrl-C stops it", flush=True)
    print(f"  export CCXT_API_URLS=okx={okx.url} CCXT_WS_URLS=okx={stream.ws_url}", flush=True)
    okx.server.serve_until_interrupted()
    return 0


if __name__ == "__main__":
    from S1.cli import main_entry

    main_entry(main)
