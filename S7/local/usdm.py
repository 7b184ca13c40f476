"""A local Binance USD-M futures test exchange (the signed routes S7's futures client calls),
for the tests -- 127.0.0.1, a free port, the accounting of :mod:`S5.futures`:

    GET  /fapi/v1/ping, /fapi/v1/time
    POST /fapi/v1/leverage        symbol, leverage (1..125)             -> {symbol, leverage, maxNotionalValue}
    POST /fapi/v1/order           symbol, side, type=MARKET, quantity, reduceOnly, newClientOrderId
                                  -> filled at once at the exchange's price (:meth:`LocalUSDM.set_price`),
                                  the taker fee on the notional; a duplicate client id is -4116
    GET  /fapi/v2/positionRisk    symbol -> [{positionAmt (signed), entryPrice, markPrice, unRealizedProfit,
                                  leverage, isolatedMargin, liquidationPrice, marginType: isolated}]
    GET  /fapi/v2/balance         -> [{asset: USDT, balance, availableBalance}]
    GET  /fapi/v1/income          incomeType=FUNDING_FEE -> the funding paid / received

Signed as Binance does: ``X-MBX-APIKEY`` (-2014 missing, -2015 wrong), HMAC-SHA256 ``signature``
of the query string + body (-1022), ``timestamp`` within ``recvWindow`` (-1021). The test drives
the market: :meth:`LocalUSDM.set_price` and :meth:`LocalUSDM.settle_funding` (``qty x mark x rate``:
longs pay a positive rate, shorts receive it). Liquidation is not simulated here (see
:class:`S7.futures_engine.FuturesAccount`).
"""

from __future__ import annotations

import hashlib
import hmac
import re
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from aiohttp import web

from S5.futures import funding_payment, liquidation_price

_SIG_RE = re.compile(r"(^|&)signature=[^&]*")


@dataclass
class _Position:
    amt: float = 0.0            # signed: > 0 long, < 0 short
    entry: float = 0.0
    margin: float = 0.0


@dataclass
class LocalUSDM:
    api_key: str = "test-key"
    api_secret: str = "test-secret"
    price: float = 100.0
    fee_rate: float = 0.0004
    balance: float = 10_000.0
    mmr: float = 0.004
    leverage: dict = field(default_factory=dict)
    positions: dict = field(default_factory=dict)
    orders: dict = field(default_factory=dict)
    income: list = field(default_factory=list)
    requests: list = field(default_factory=list)

    def __post_init__(self):
        self.app = web.Application()
        r = self.app.router
        r.add_get("/fapi/v1/ping", self._ping)
        r.add_get("/fapi/v1/time", self._time)
        r.add_post("/fapi/v1/leverage", self._signed(self._leverage))
        r.add_post("/fapi/v1/order", self._signed(self._order))
        r.add_get("/fapi/v2/positionRisk", self._signed(self._position_risk))
        r.add_get("/fapi/v2/balance", self._signed(self._balance))
        r.add_get("/fapi/v1/income", self._signed(self._income))
        self._runner: web.AppRunner | None = None
        self.url = ""

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> str:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        self._runner = web.AppRunner(self.app)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self.url

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # ------------------------------------------------------------- the market
    def set_price(self, price: float) -> None:
        self.price = float(price)

    def settle_funding(self, rate: float, *, mark: float | None = None, at_ms: int | None = None) -> None:
        """One funding event for every open position (``mark``: default the current price)."""
        mark = self.price if mark is None else float(mark)
        for sym, p in self.positions.items():
            if p.amt == 0:
                continue
            pay = funding_payment("long" if p.amt > 0 else "short", qty=abs(p.amt), mark=mark, rate=rate)
            self.balance -= pay
            self.income.append({"symbol": sym, "incomeType": "FUNDING_FEE", "income": f"{-pay:.8f}",
                                "asset": "USDT", "time": at_ms or int(time.time() * 1000)})

    # ---------------------------------------------------------------- signing
    @staticmethod
    def _error(status: int, code: int, msg: str) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status)

    def _signed(self, handler):
        async def route(request: web.Request) -> web.StreamResponse:
            raw_query = request.raw_path.partition("?")[2]
            body = await request.text()
            params = dict(parse_qsl(raw_query, keep_blank_values=True))
            params.update(parse_qsl(body, keep_blank_values=True))
            self.requests.append((request.method, request.path, {k: v for k, v in params.items()
                                                                 if k != "signature"}))
            key = request.headers.get("X-MBX-APIKEY")
            if not key:
                return self._error(401, -2014, "API-key format invalid.")
            if not hmac.compare_digest(key, self.api_key):
                return self._error(401, -2015, "Invalid API-key, IP, or permissions for action.")
            sig = params.pop("signature", "")
            payload = _SIG_RE.sub("", raw_query + body).lstrip("&")
            want = hmac.new(self.api_secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
            if not sig or not hmac.compare_digest(want, sig):
                return self._error(400, -1022, "Signature for this request is not valid.")
            try:
                ts, window = int(params["timestamp"]), int(params.get("recvWindow", 5000))
            except (KeyError, ValueError):
                return self._error(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, "
                                               "or malformed.")
            now = int(time.time() * 1000)
            if ts >= now + 1000 or now - ts > window:
                return self._error(400, -1021, "Timestamp for this request is outside of the recvWindow.")
            return await handler(params)
        return route

    # ----------------------------------------------------------------- routes
    async def _ping(self, request) -> web.Response:
        return web.json_response({})

    async def _time(self, request) -> web.Response:
        return web.json_response({"serverTime": int(time.time() * 1000)})

    async def _leverage(self, p: dict) -> web.Response:
        lev = int(p.get("leverage", 0))
        if not 1 <= lev <= 125:
            return self._error(400, -4028, "Leverage is not valid")
        self.leverage[p["symbol"]] = lev
        return web.json_response({"symbol": p["symbol"], "leverage": lev, "maxNotionalValue": "50000"})

    async def _order(self, p: dict) -> web.Response:
        sym, side, cid = p.get("symbol"), p.get("side"), p.get("newClientOrderId")
        if p.get("type") != "MARKET" or side not in ("BUY", "SELL"):
            return self._error(400, -1116, "Invalid orderType.")
        if cid in self.orders:
            return self._error(400, -4116, "ClientOrderId is duplicated.")
        try:
            qty = float(p["quantity"])
        except (KeyError, ValueError):
            return self._error(400, -1102, "Mandatory parameter 'quantity' was not sent, was empty/null, or malformed.")
        pos = self.positions.setdefault(sym, _Position())
        signed = qty if side == "BUY" else -qty
        reduce_only = str(p.get("reduceOnly", "false")).lower() == "true"
        if reduce_only and (pos.amt == 0 or (pos.amt > 0) == (signed > 0) or qty > abs(pos.amt) + 1e-12):
            return self._error(400, -2022, "ReduceOnly Order is rejected.")
        px, fee = self.price, qty * self.price * self.fee_rate
        self.balance -= fee
        if pos.amt == 0 or (pos.amt > 0) == (signed > 0):          # open / add
            new = pos.amt + signed
            pos.entry = (abs(pos.amt) * pos.entry + qty * px) / abs(new)
            pos.amt = new
            pos.margin += qty * px / self.leverage.get(sym, 1)
        else:                                                       # reduce / close
            closed = min(qty, abs(pos.amt))
            self.balance += (1 if pos.amt > 0 else -1) * closed * (px - pos.entry)
            pos.margin *= 1 - closed / abs(pos.amt)
            pos.amt += closed if pos.amt < 0 else -closed
            if abs(pos.amt) < 1e-12:
                self.positions[sym] = _Position()
        order = {"symbol": sym, "orderId": len(self.orders) + 1, "clientOrderId": cid, "side": side, "type": "MARKET",
                 "status": "FILLED", "origQty": p["quantity"], "executedQty": p["quantity"], "avgPrice": f"{px}",
                 "cumQuote": f"{qty * px}", "reduceOnly": reduce_only, "updateTime": int(time.time() * 1000)}
        self.orders[cid] = order
        return web.json_response(order)

    async def _position_risk(self, p: dict) -> web.Response:
        out = []
        for sym, pos in self.positions.items():
            if p.get("symbol") and sym != p["symbol"]:
                continue
            side = "long" if pos.amt > 0 else "short"
            upnl = pos.amt * (self.price - pos.entry)
            liq = (liquidation_price(side, qty=abs(pos.amt), entry=pos.entry, margin=pos.margin, mmr=self.mmr)
                   if pos.amt else 0.0)
            out.append({"symbol": sym, "positionAmt": f"{pos.amt}", "entryPrice": f"{pos.entry}",
                        "markPrice": f"{self.price}", "unRealizedProfit": f"{upnl}",
                        "leverage": str(self.leverage.get(sym, 1)), "isolatedMargin": f"{pos.margin}",
                        "liquidationPrice": f"{liq}", "marginType": "isolated"})
        return web.json_response(out)

    async def _balance(self, p: dict) -> web.Response:
        used = sum(pos.margin for pos in self.positions.values())
        return web.json_response([{"asset": "USDT", "balance": f"{self.balance}",
                                   "availableBalance": f"{self.balance - used}"}])

    async def _income(self, p: dict) -> web.Response:
        kind = p.get("incomeType")
        return web.json_response([r for r in self.income if kind in (None, r["incomeType"])])


__all__ = ["LocalUSDM"]
