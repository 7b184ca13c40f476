"""The user-data stream of the local test exchange: Binance's **WebSocket API**
(``/ws-api/v3``) with ``userDataStream.subscribe.signature``, as the spot testnet
offers it today (``wss://ws-api.testnet.binance.vision/ws-api/v3``).

Why this protocol and not the listenKey one (``POST /api/v3/userDataStream``,
``PUT`` every 30 min, ``wss://…/ws/<listenKey>``): Binance discontinued the spot
listenKey on 2026-02-20 and moved user data to the WebSocket API. Of its two
subscription methods, ``userDataStream.subscribe`` needs a ``session.logon``
with an Ed25519 key; ``userDataStream.subscribe.signature`` works in any session
with the HMAC-SHA256 keys the testnet hands out -- the keys this toolkit uses.

Protocol served (JSON text frames)::

    -> {"id": "…", "method": "userDataStream.subscribe.signature",
        "params": {"apiKey": "…", "timestamp": 1700000000000, "recvWindow": 5000, "signature": "<hex>"}}
    <- {"id": "…", "status": 200, "result": {"subscriptionId": 0}, "rateLimits": […]}
    <- {"subscriptionId": 0, "event": {"e": "executionReport", …}}            (one event per frame)
    -> {"id": "…", "method": "userDataStream.unsubscribe", "params": {"subscriptionId": 0}}
    -> {"id": "…", "method": "session.subscriptions"}   -> result [{"subscriptionId": 0}]

The signature is HMAC-SHA256 (hex) of the params except ``signature``, sorted by
name, as ``k=v&k=v``. Errors: ``{"id", "status": 400|401, "error": {"code", "msg"}}``
with ``-2015`` (bad API key), ``-1022`` (bad signature), ``-1021`` (timestamp),
``-1102`` (missing parameter). Events: ``executionReport`` for every order state
change the book makes (``NEW``, each ``TRADE``, ``CANCELED``, ``EXPIRED``),
``outboundAccountPosition`` after each balance change, ``balanceUpdate`` for a
:meth:`~S7.matching.MatchingBook.deposit`, ``eventStreamTerminated`` when a
subscription ends (the WebSocket API's counterpart of ``listenKeyExpired``).
Events are not replayed: what happens while nobody is subscribed is lost for the
stream (as on Binance) -- a client must reconcile over REST after a gap.

Fault injection (:class:`UserStreamServer`, thread-safe, call from the test):
:meth:`~UserStreamServer.drop` (reset every connection; ``refuse=True`` also
refuses new ones until :meth:`~UserStreamServer.allow`), :meth:`~UserStreamServer.expire`
(``eventStreamTerminated`` + the subscriptions end, connections stay open),
:attr:`~UserStreamServer.delay` (seconds every event is held back, order kept).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

from aiohttp import WSMsgType, web

log = logging.getLogger(__name__)

WS_API_PATH = "/ws-api/v3"
SUBSCRIBE = "userDataStream.subscribe.signature"
_RATE = [{"rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000, "count": 2}]


def ws_api_signature(params: dict, secret: str) -> str:
    """HMAC-SHA256 (hex) of ``params`` minus ``signature``, sorted by name, joined ``k=v&…``.

    >>> ws_api_signature({"timestamp": 2, "apiKey": "k"}, "s") == ws_api_signature({"apiKey": "k", "timestamp": 2}, "s")
    True
    """
    payload = "&".join(f"{k}={params[k]}" for k in sorted(params) if k != "signature")
    return hmac.new(secret.encode(), payload.encode(), hashlib.sha256).hexdigest()


@dataclass
class StreamRequest:
    """A WebSocket API request the server saw (params without the signature) and its answer status."""

    method: str
    params: dict
    status: int
    code: int | None
    arrived: float


@dataclass
class _Conn:
    ws: web.WebSocketResponse
    transport: Any
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    subs: set[int] = field(default_factory=set)


class UserStreamServer:
    """``/ws-api/v3`` on a :class:`~S1.local.exchange.LocalBinance` app, fed by a
    :class:`~S7.matching.MatchingBook`'s listeners (see the module docstring)."""

    def __init__(self, server, *, api_key: str, api_secret: str, now_ms: Callable[[], int]):
        self.server = server
        self.api_key, self._secret = api_key, api_secret
        self.now_ms = now_ms
        self.delay = 0.0                     #: seconds each event is held back (faults)
        self.requests: list[StreamRequest] = []
        self.connections = 0                 #: connections accepted so far
        self.refused = 0                     #: connection attempts refused (503) so far
        self.events_sent = 0
        self.events_lost = 0                 #: events made while nobody was subscribed
        self.signatures_seen: list[str] = []  #: for tests that check no signature reaches a log
        self._refuse = False
        self._conns: list[_Conn] = []
        self._next_sub = 0
        self._lock = threading.Lock()
        server.app.router.add_get(WS_API_PATH, self._handle)

    # ------------------------------------------------------------- control
    @property
    def url(self) -> str:
        return self.server.url.replace("http://", "ws://") + WS_API_PATH

    def subscriptions(self) -> int:
        """Active subscriptions now."""
        return sum(len(c.subs) for c in list(self._conns))

    def subscribe_requests(self, ok: bool = True) -> list[StreamRequest]:
        return [r for r in self.requests if r.method == SUBSCRIBE and (r.status == 200) == ok]

    def publish(self, event: dict) -> None:
        """Send ``event`` to every subscription (callable from any thread; a book listener)."""
        loop = self.server._loop
        if loop is None or not loop.is_running():
            return
        due = time.monotonic() + self.delay
        loop.call_soon_threadsafe(self._dispatch, event, due)

    def _dispatch(self, event: dict, due: float) -> None:
        targets = [(c, s) for c in self._conns for s in sorted(c.subs)]
        if not targets:
            self.events_lost += 1
        for c, s in targets:
            c.queue.put_nowait((due, json.dumps({"subscriptionId": s, "event": event})))

    def _run(self, coro_fn) -> None:
        loop = self.server._loop
        fut = asyncio.run_coroutine_threadsafe(coro_fn(), loop)
        fut.result(5)

    def drop(self, *, refuse: bool = False) -> None:
        """Reset every connection now (no close frame); ``refuse``: refuse new ones until :meth:`allow`."""
        self._refuse = refuse

        async def go():
            for c in list(self._conns):
                c.subs.clear()
                if c.transport is not None:
                    c.transport.abort()
                self._conns.remove(c)
        self._run(go)

    def allow(self) -> None:
        self._refuse = False

    def expire(self) -> None:
        """End every subscription with ``eventStreamTerminated`` (the connections stay open)."""
        async def go():
            now = self.now_ms()
            for c in list(self._conns):
                for s in sorted(c.subs):
                    c.queue.put_nowait((time.monotonic(), json.dumps(
                        {"subscriptionId": s, "event": {"e": "eventStreamTerminated", "E": now}})))
                c.subs.clear()
        self._run(go)

    # ------------------------------------------------------------- protocol
    async def _handle(self, request: web.Request) -> web.StreamResponse:
        if self._refuse:
            self.refused += 1
            return web.Response(status=503, text="Service Unavailable")
        ws = web.WebSocketResponse(heartbeat=None, autoping=True)
        await ws.prepare(request)
        conn = _Conn(ws, request.transport)
        self._conns.append(conn)
        self.connections += 1
        sender = asyncio.create_task(self._sender(conn))
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT:
                    continue
                await conn.queue.put((0.0, json.dumps(self._answer(conn, msg.data))))
        finally:
            sender.cancel()
            if conn in self._conns:
                self._conns.remove(conn)
        return ws

    async def _sender(self, conn: _Conn) -> None:
        try:
            while True:
                due, text = await conn.queue.get()
                wait = due - time.monotonic()
                if wait > 0:
                    await asyncio.sleep(wait)
                if conn.ws.closed:
                    return
                await conn.ws.send_str(text)
                if text.startswith('{"subscriptionId"'):
                    self.events_sent += 1
        except (ConnectionError, RuntimeError):
            return

    def _answer(self, conn: _Conn, text: str) -> dict:
        try:
            req = json.loads(text)
            rid, method, params = req.get("id"), req.get("method"), dict(req.get("params") or {})
        except (ValueError, AttributeError):
            return {"id": None, "status": 400, "error": {"code": -1100, "msg": "Malformed request."}}
        shown = {k: v for k, v in params.items() if k != "signature"}
        if params.get("signature"):
            self.signatures_seen.append(str(params["signature"]))
        rec = StreamRequest(str(method), shown, 200, None, time.time())
        self.requests.append(rec)

        def error(status: int, code: int, msg: str) -> dict:
            rec.status, rec.code = status, code
            return {"id": rid, "status": status, "error": {"code": code, "msg": msg}, "rateLimits": _RATE}

        def ok(result: Any) -> dict:
            return {"id": rid, "status": 200, "result": result, "rateLimits": _RATE}

        if method == SUBSCRIBE:
            for name in ("apiKey", "timestamp", "signature"):
                if params.get(name) in (None, ""):
                    return error(400, -1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or "
                                             "malformed.")
            if not hmac.compare_digest(str(params["apiKey"]), self.api_key):
                return error(401, -2015, "Invalid API-key, IP, or permissions for action.")
            if not hmac.compare_digest(ws_api_signature(params, self._secret), str(params["signature"])):
                return error(400, -1022, "Signature for this request is not valid.")
            try:
                ts, window = int(params["timestamp"]), int(params.get("recvWindow", 5000))
            except (TypeError, ValueError):
                return error(400, -1100, "Illegal characters found in parameter 'timestamp'.")
            now = self.now_ms()
            if ts >= now + 1000 or now - ts > window:
                return error(400, -1021, "Timestamp for this request is outside of the recvWindow.")
            if conn.subs:   # one subscription per account per connection
                return error(400, -1000, "Only one subscription per account is allowed on a connection.")
            sub = self._next_sub
            self._next_sub += 1
            conn.subs.add(sub)
            return ok({"subscriptionId": sub})
        if method == "userDataStream.unsubscribe":
            sid = params.get("subscriptionId")
            if sid is None:
                conn.subs.clear()
            else:
                conn.subs.discard(int(sid))
            return ok({})
        if method == "session.subscriptions":
            return ok([{"subscriptionId": s} for s in sorted(conn.subs)])
        if method == "ping":
            return ok({})
        return error(400, -1100, f"Unknown method {method!r}.")


__all__ = ["SUBSCRIBE", "StreamRequest", "UserStreamServer", "WS_API_PATH", "ws_api_signature"]
