"""A local Binance-compatible *test exchange*: the signed spot order endpoints on a
:class:`S1.local.exchange.LocalBinance` app, for tests, benchmarks and offline trials.

Routes (added to ``server.app`` -- call before ``server.start()``)::

    POST   /api/v3/order/test     validate only (same checks as a new order)
    POST   /api/v3/order          new order (MARKET fills at once, LIMIT GTC fills or rests, LIMIT_MAKER
                                  rests or is refused with -2010); FULL response
    GET    /api/v3/order          by origClientOrderId (or orderId); -2013 when unknown
    DELETE /api/v3/order          cancel an open order; -2011 otherwise
    GET    /api/v3/openOrders     (symbol optional)
    GET    /api/v3/account        balances (free / locked)
    GET    /api/v3/myTrades       symbol, orderId, fromId, startTime/endTime, limit
    GET    /ws-api/v3             the WebSocket API's user-data stream (userDataStream.subscribe.signature):
                                  an event for every order state change and balance change
                                  (:mod:`S7.local.user_stream`; faults: ``ex.user_stream.drop() / expire() / delay``)

``exchangeInfo``, ``time`` and ``ping`` are the LocalBinance's own (pass it the
real capture from ``../shared`` as ``exchange_info=`` to trade real symbols with
their real filters), and so are its weight accounting, ``429``/``418`` past the
weight limit and its generic fault injection (:meth:`LocalBinance.inject`: 5xx,
429 + Retry-After, dropped connections, delays -- applied *before* the handler).

Every signed request is checked as Binance does: ``X-MBX-APIKEY`` (``-2014``
missing, ``-2015`` wrong), an HMAC-SHA256 ``signature`` of the exact
``query string + body`` sent (``-1022``), ``timestamp`` within ``recvWindow`` of
the server clock and at most 1 s ahead (``-1021``), ``recvWindow <= 60000``
(``-1131``). The order rules and codes (``-1013`` filters, ``-2010`` balance and
duplicate open ids, ``-1102``/``-1100`` parameters, ``-1121`` symbol) are those of
:class:`S7.matching.MatchingBook`.

Faults that only an order endpoint has (:meth:`BinanceTestExchange.inject`):

- ``timeout_after_accept``: the order is **accepted and executed**, then the
  answer is held for ``delay`` s (longer than the client's timeout);
- ``drop_after_accept``: accepted and executed, then the connection is reset;
- ``error_after_accept``: accepted and executed, then HTTP ``status`` (5xx);
- ``error``: HTTP ``status`` without processing; ``clock_skew``: ``-1021``;
  ``429`` / ``418``: rate limited with ``Retry-After`` (``retry_after`` s), nothing processed.

Fill price of a MARKET order: :meth:`set_price` when given, else the close of the
symbol's latest candle visible at the server clock (the partial close of the
candle in progress), on the tick grid.

Standalone (a testnet stand-in on this machine, simulated market)::

    python -m S7.local.exchange --port 8770 --api-key K --api-secret S
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
from aiohttp import web

from S1.local.exchange import LocalBinance, simulated_symbol_info
from S1.local.faults import Fault, FaultQueue
from S6.filters import SymbolFilters
from S7.local.user_stream import UserStreamServer
from S7.matching import BookError, MatchingBook
from S7.orders import D

log = logging.getLogger(__name__)

#: Balances a fresh test account gets (the spot testnet gives every account similar ones).
DEFAULT_BALANCES = {"USDT": "10000", "USDC": "10000", "BUSD": "10000", "BTC": "1", "ETH": "10", "BNB": "100"}
ORDER_FAULTS = ("timeout_after_accept", "drop_after_accept", "error_after_accept", "error", "clock_skew",
                "429", "418")
_SIG_RE = re.compile(r"(^|&)signature=[^&]*")


@dataclass
class SignedRequest:
    """What the exchange saw (params without the signature) and answered."""

    method: str
    path: str
    params: dict
    status: int
    code: int | None
    arrived: float          #: time.time() when the request arrived
    fault: str | None = None


class BinanceTestExchange:
    """The signed endpoints of one test account on a :class:`LocalBinance` (see the module docstring).

    >>> server = LocalBinance(simulate=True)                                  # doctest: +SKIP
    >>> ex = BinanceTestExchange(server, api_key="k", api_secret="s")        # routes added
    >>> server.start(); ex.set_price("BTCUSDT", 27000)
    """

    __test__ = False  # not a pytest class

    def __init__(self, server: LocalBinance, *, api_key: str, api_secret: str,
                 balances: dict[str, Any] | None = None, fee_rate: float = 0.001):
        self.server = server
        self.api_key, self._secret = api_key, api_secret
        self.prices: dict[str, Decimal] = {}
        self.faults = FaultQueue()
        self.requests: list[SignedRequest] = []
        self._filters: dict[str, SymbolFilters] = {}
        self._lock = threading.Lock()
        self.book = MatchingBook(filters=self.symbol_filters, balances=balances or DEFAULT_BALANCES,
                                 fee_rate=fee_rate, price_of=self.price, market_fill="immediate",
                                 clock=server.now_ms)
        #: the user-data stream (WebSocket API) fed by every change of the book
        self.user_stream = UserStreamServer(server, api_key=api_key, api_secret=api_secret, now_ms=server.now_ms)
        self.book.listeners.append(self.user_stream.publish)
        r = server.app.router
        r.add_post("/api/v3/order/test", self._signed(self._order_test))
        r.add_post("/api/v3/order", self._signed(self._new_order))
        r.add_get("/api/v3/order", self._signed(self._query_order))
        r.add_delete("/api/v3/order", self._signed(self._cancel_order))
        r.add_get("/api/v3/openOrders", self._signed(self._open_orders))
        r.add_get("/api/v3/account", self._signed(self._account))
        r.add_get("/api/v3/myTrades", self._signed(self._my_trades))

    def __repr__(self) -> str:
        return f"BinanceTestExchange({self.server.api_url!r})"

    # ----------------------------------------------------------------- control
    def set_price(self, symbol: str, price: Any, qty: Any = None) -> list[dict]:
        """Set the market price of ``symbol``; resting LIMIT orders it crosses fill (only ``qty``
        of them when given: partial fills). Returns their trades."""
        self.prices[symbol] = D(price)
        return self.book.on_price(symbol, D(price), qty)

    def deposit(self, asset: str, amount: Any) -> None:
        """Credit ``amount`` of ``asset`` (negative: a withdrawal): ``balanceUpdate`` on the stream."""
        self.book.deposit(asset, amount)

    def inject(self, kind: str, *, method: str = "POST", path: str = "/api/v3/order", count: int = 1,
               **kw) -> Fault:
        """Queue an order-endpoint fault (see :data:`ORDER_FAULTS`)."""
        if kind not in ORDER_FAULTS:
            raise ValueError(f"unknown fault {kind!r}; one of {ORDER_FAULTS}")
        kw.setdefault("delay", 2.0)   # timeout_after_accept: seconds the answer is held back
        kw.setdefault("status", 503)  # error / error_after_accept
        return self.faults.add(Fault(kind=kind, method=method.upper(), path=path, exact=True, count=count, **kw))

    def orders_with_client_id(self, client_order_id: str) -> list[dict]:
        """Every order (any status) the exchange holds with that client id."""
        with self.book.lock:
            return [self.book.public(o) for o in self.book.orders.values() if o["clientOrderId"] == client_order_id]

    def posted(self, path: str = "/api/v3/order") -> list[SignedRequest]:
        """Signed POSTs that reached ``path`` (whatever the answer)."""
        return [r for r in self.requests if r.method == "POST" and r.path == path]

    def symbol_filters(self, symbol: str) -> SymbolFilters | None:
        """The filters the server's exchangeInfo publishes for ``symbol`` (None: unknown symbol)."""
        f = self._filters.get(symbol)
        if f is not None:
            return f
        entry = None
        base = self.server.base_exchange_info
        if base:
            entry = next((s for s in base.get("symbols", []) if s.get("symbol") == symbol), None)
        if entry is None:
            rows = next((self.server.market[k] for k in list(self.server.market) if k[0] == symbol), None)
            if rows is not None:
                entry = simulated_symbol_info(symbol, float(rows[-1, 4]) if len(rows) else 100.0)
            elif self.server.symbol_known(symbol):
                entry = simulated_symbol_info(symbol, 100.0)  # as LocalBinance's exchangeInfo publishes it
        if entry is None:
            return None
        f = SymbolFilters.from_symbol_info(entry)
        self._filters[symbol] = f
        return f

    def price(self, symbol: str, *, raw: bool = False) -> Decimal | None:
        """The MARKET fill price now (see the module docstring)."""
        if symbol in self.prices:
            return self.prices[symbol]
        now = self.server.now_ms()
        best = None
        for (sym, interval), rows in list(self.server.market.items()):
            if sym != symbol or not len(rows):
                continue
            i = int(np.searchsorted(rows[:, 0], now, side="right")) - 1
            if i < 0:
                continue
            row = rows[i]
            close = LocalBinance.partial_candle(row, interval, now)[4] if row[6] >= now else row[4]
            length = row[6] - row[0]
            if best is None or length < best[0]:
                best = (length, close)
        if best is None and self.server.simulate and not raw:
            rows = self.server.rows_for(symbol, "1m")
            if rows is not None and len(rows):
                i = max(0, int(np.searchsorted(rows[:, 0], now, side="right")) - 1)
                best = (0, rows[i, 4])
        if best is None:
            return None
        p = D(repr(float(best[1])))
        if raw:
            return p
        f = self.symbol_filters(symbol)
        return f.round_price(p, direction="nearest") if f is not None and f.tick_size else p

    # ----------------------------------------------------------------- signing
    def _take_fault(self, method: str, path: str) -> Fault | None:
        return self.faults.take(path, method)

    @staticmethod
    def _error(status: int, code: int, msg: str, headers: dict | None = None) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status, headers=headers or {})

    def _signed(self, handler):
        async def route(request: web.Request) -> web.StreamResponse:
            arrived = time.time()
            raw_query = request.raw_path.partition("?")[2]
            body = await request.text()
            params = dict(parse_qsl(raw_query, keep_blank_values=True))
            params.update(parse_qsl(body, keep_blank_values=True))
            shown = {k: v for k, v in params.items() if k != "signature"}
            rec = SignedRequest(request.method, request.path, shown, 0, None, arrived)
            self.requests.append(rec)

            def answer(resp: web.StreamResponse, code: int | None = None) -> web.StreamResponse:
                rec.status, rec.code = resp.status, code
                return resp

            key = request.headers.get("X-MBX-APIKEY")
            if not key:
                return answer(self._error(401, -2014, "API-key format invalid."), -2014)
            if not hmac.compare_digest(key, self.api_key):
                return answer(self._error(401, -2015, "Invalid API-key, IP, or permissions for action."), -2015)
            signature = params.pop("signature", None)
            if not signature:
                return answer(self._error(400, -1102, "Mandatory parameter 'signature' was not sent, was "
                                                      "empty/null, or malformed."), -1102)
            payload = _SIG_RE.sub("", raw_query + body).lstrip("&")
            expected = hmac.new(self._secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, signature):
                return answer(self._error(400, -1022, "Signature for this request is not valid."), -1022)
            try:
                ts = int(params["timestamp"])
            except KeyError:
                return answer(self._error(400, -1102, "Mandatory parameter 'timestamp' was not sent, was "
                                                      "empty/null, or malformed."), -1102)
            except ValueError:
                return answer(self._error(400, -1100, "Illegal characters found in parameter 'timestamp'."), -1100)
            try:
                window = int(params.get("recvWindow", 5000))
            except ValueError:
                return answer(self._error(400, -1100, "Illegal characters found in parameter 'recvWindow'."), -1100)
            if window > 60_000 or window <= 0:
                return answer(self._error(400, -1131, "recvWindow must be less than 60000"), -1131)
            now = self.server.now_ms()
            if ts >= now + 1000:
                return answer(self._error(400, -1021, "Timestamp for this request was 1000ms ahead of the "
                                                      "server's time."), -1021)
            if now - ts > window:
                return answer(self._error(400, -1021, "Timestamp for this request is outside of the recvWindow."),
                              -1021)
            fault = self._take_fault(request.method, request.path)
            rec.fault = fault.kind if fault else None
            if fault is not None:
                if fault.kind == "clock_skew":
                    return answer(self._error(400, -1021, "Timestamp for this request is outside of the "
                                                          "recvWindow."), -1021)
                if fault.kind == "error":
                    return answer(web.Response(status=fault.status, text="<html>Internal Server Error</html>",
                                               content_type="text/html"))
                if fault.kind in ("429", "418"):
                    msg = ("Way too many requests; IP banned until later." if fault.kind == "418"
                           else "Too many requests (injected).")
                    return answer(self._error(int(fault.kind), -1003, msg,
                                              {"Retry-After": f"{fault.retry_after:g}"}), -1003)
            try:
                out = handler(params)
                resp: web.StreamResponse = web.json_response(out)
                code = None
            except BookError as exc:
                resp, code = self._error(exc.http_status, exc.code, exc.msg), exc.code
            if fault is not None and code is None:
                if fault.kind == "timeout_after_accept":
                    await asyncio.sleep(fault.delay)
                elif fault.kind == "drop_after_accept":
                    answer(resp)
                    rec.status = 0
                    if request.transport is not None:
                        request.transport.abort()
                    raise asyncio.CancelledError()
                elif fault.kind == "error_after_accept":
                    return answer(web.Response(status=fault.status, text="<html>Service Unavailable</html>",
                                               content_type="text/html"))
            return answer(resp, code)

        return route

    # ----------------------------------------------------------------- handlers
    def _order_test(self, params: dict) -> dict:
        return self.book.test_order(params)

    def _new_order(self, params: dict) -> dict:
        resp_type = params.get("newOrderRespType", "FULL")
        out = self.book.new_order(params)
        if resp_type == "ACK":
            return {k: out[k] for k in ("symbol", "orderId", "orderListId", "clientOrderId", "transactTime")}
        if resp_type == "RESULT":
            out.pop("fills", None)
        return out

    def _query_order(self, params: dict) -> dict:
        return self.book.query(params)

    def _cancel_order(self, params: dict) -> dict:
        return self.book.cancel(params)

    def _open_orders(self, params: dict) -> list:
        return self.book.open_orders(params)

    def _account(self, params: dict) -> dict:
        return self.book.account()

    def _my_trades(self, params: dict) -> list:
        return self.book.my_trades(params)


def main(argv=None) -> int:
    from S1.cli import ArgumentParser

    p = ArgumentParser(prog="python -m S7.local.exchange",
                       description="A local Binance-compatible test exchange (simulated market + signed order "
                                   "endpoints) on 127.0.0.1.")
    p.add_argument("--port", type=int, default=8770)
    p.add_argument("--api-key", required=True)
    p.add_argument("--api-secret", required=True)
    p.add_argument("--days", type=int, default=30, help="history to simulate per symbol")
    args = p.parse_args(argv)
    server = LocalBinance(simulate=True, simulate_days=args.days, port=args.port)
    BinanceTestExchange(server, api_key=args.api_key, api_secret=args.api_secret)
    server.start()
    print(f"test exchange on {server.api_url}; Ctrl-C stops it", flush=True)
    print(f"  export BINANCE_API_URL={server.api_url} BINANCE_TESTNET_API_URL={server.api_url}", flush=True)
    print("  and set BINANCE_TESTNET_API_KEY / BINANCE_TESTNET_API_SECRET to the values given", flush=True)
    print(f"  user-data stream (WebSocket API): {server.url.replace('http://', 'ws://')}/ws-api/v3", flush=True)
    server.serve_until_interrupted()
    return 0


if __name__ == "__main__":
    from S1.cli import main_entry

    main_entry(main)


__all__ = ["BinanceTestExchange", "DEFAULT_BALANCES", "ORDER_FAULTS", "SignedRequest"]
