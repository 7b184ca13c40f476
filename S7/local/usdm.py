"""A local Binance USD-M futures test exchange (the signed routes S7's futures client calls),
for the tests -- 127.0.0.1, a free port, the accounting of :mod:`S5.futures`:

    GET  /fapi/v1/ping, /fapi/v1/time, /fapi/v1/exchangeInfo (public; the symbols' futures filters)
    POST /fapi/v1/leverage        symbol, leverage (1..the first bracket's initialLeverage)
                                  -> {leverage, maxNotionalValue, symbol}
    POST /fapi/v1/marginType      symbol, marginType ISOLATED|CROSSED -> {code: 200, msg: success};
                                  -4046 "No need to change margin type.", -4048 with a position open
    GET  /fapi/v1/leverageBracket symbol -> {symbol, brackets: [{bracket, initialLeverage, notionalCap,
                                  notionalFloor, maintMarginRatio, cum}]} (Binance's documented shape;
                                  without ``symbol``: a list of those); -1121 unknown symbol
    POST /fapi/v1/order           symbol, side, type=MARKET, quantity, reduceOnly, newClientOrderId,
                                  newOrderRespType ACK (default: status NEW, as Binance answers a MARKET
                                  order) | RESULT (FILLED, avgPrice) -> filled at once at the exchange's
                                  price (:meth:`LocalUSDM.set_price`), the taker fee on the notional;
                                  a duplicate client id is -4116, reduceOnly on the wrong side -2022
    GET  /fapi/v1/order           symbol, origClientOrderId | orderId -> the order; -2013 unknown
    GET  /fapi/v1/userTrades      symbol[, orderId, startTime, fromId] -> fills (commission, realizedPnl)
    GET  /fapi/v2/positionRisk    symbol -> [{positionAmt (signed), entryPrice, markPrice, unRealizedProfit,
                                  leverage, isolatedMargin, liquidationPrice, marginType, positionSide BOTH}]
    GET  /fapi/v2/balance         -> [{asset: USDT, balance, availableBalance, ...}]
    GET  /fapi/v1/income          symbol, incomeType, startTime, endTime, limit -> [{symbol, incomeType,
                                  income, asset, info, time, tranId, tradeId}] (FUNDING_FEE, REALIZED_PNL,
                                  COMMISSION)

Signed as Binance does: ``X-MBX-APIKEY`` (-2014 missing, -2015 wrong), HMAC-SHA256 ``signature``
of the query string + body (-1022), ``timestamp`` within ``recvWindow`` (-1021). The test drives
the market: :meth:`LocalUSDM.set_price` and :meth:`LocalUSDM.settle_funding` (``qty x mark x rate``:
longs pay a positive rate, shorts receive it). Faults (:class:`S1.local.faults.Fault` via
:meth:`LocalUSDM.inject`): ``error`` (5xx before the handler), ``error_after_accept`` (the request
is carried out, the answer is a 5xx), ``429``/``418`` with ``Retry-After``. The test runs the
liquidation engine candle by candle (:meth:`LocalUSDM.liquidate`: the first bracket's maintenance
margin, the rule of :mod:`S5.futures`) and closes a position outside the strategy with
:meth:`LocalUSDM.force_close`.

No recorded ``leverageBracket`` payload exists in ``../shared``: its shape is the one documented
for ``GET /fapi/v1/leverageBracket`` (numbers as JSON numbers; with ``symbol`` one object).

Standalone: ``python -m S7.local.usdm --port 8771 --api-key K --api-secret S`` (then point
``BINANCE_FUTURES_TESTNET_API_URL`` at it).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from aiohttp import web

from S1.local.faults import Fault, FaultQueue
from S5.futures import funding_payment, liquidation_price

_SIG_RE = re.compile(r"(^|&)signature=[^&]*")

#: The first two leverage brackets the server answers for a symbol it has no table for
#: (BTCUSDT's first bracket as Binance published it: 125x up to 50,000 USDT at 0.4 %).
DEFAULT_BRACKETS = [
    {"bracket": 1, "initialLeverage": 125, "notionalCap": 50000, "notionalFloor": 0, "maintMarginRatio": 0.004,
     "cum": 0.0},
    {"bracket": 2, "initialLeverage": 100, "notionalCap": 600000, "notionalFloor": 50000,
     "maintMarginRatio": 0.005, "cum": 50.0},
]


def futures_listing(symbol: str, *, tick: str = "0.10", step: str = "0.001", min_notional: str = "5") -> dict:
    """A USD-M ``exchangeInfo`` symbol entry (the filters Binance lists for a perpetual)."""
    base, quote = symbol[:-4], symbol[-4:]
    return {"symbol": symbol, "pair": symbol, "contractType": "PERPETUAL", "status": "TRADING",
            "baseAsset": base, "quoteAsset": quote, "marginAsset": quote,
            "pricePrecision": len(tick.split(".")[1]) if "." in tick else 0,
            "quantityPrecision": len(step.split(".")[1]) if "." in step else 0,
            "baseAssetPrecision": 8, "quotePrecision": 8,
            "orderTypes": ["LIMIT", "MARKET", "STOP", "STOP_MARKET", "TAKE_PROFIT", "TAKE_PROFIT_MARKET",
                           "TRAILING_STOP_MARKET"],
            "filters": [{"filterType": "PRICE_FILTER", "minPrice": tick, "maxPrice": "4529764", "tickSize": tick},
                        {"filterType": "LOT_SIZE", "minQty": step, "maxQty": "1000", "stepSize": step},
                        {"filterType": "MARKET_LOT_SIZE", "minQty": step, "maxQty": "1000", "stepSize": step},
                        {"filterType": "MIN_NOTIONAL", "notional": min_notional}]}


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
    mmr: float | None = None            #: override the first bracket's maintenance margin rate
    symbols: dict = field(default_factory=dict)      #: symbol -> exchangeInfo entry (default: futures_listing)
    brackets: dict = field(default_factory=dict)     #: symbol -> bracket list (default: DEFAULT_BRACKETS)
    leverage: dict = field(default_factory=dict)
    margin_type: dict = field(default_factory=dict)  #: symbol -> "ISOLATED" | "CROSSED" (Binance's default)
    positions: dict = field(default_factory=dict)
    orders: dict = field(default_factory=dict)
    trades: list = field(default_factory=list)
    income: list = field(default_factory=list)
    requests: list = field(default_factory=list)

    def __post_init__(self):
        self.faults = FaultQueue()
        self.app = web.Application()
        r = self.app.router
        r.add_get("/fapi/v1/ping", self._ping)
        r.add_get("/fapi/v1/time", self._time)
        r.add_get("/fapi/v1/exchangeInfo", self._exchange_info)
        r.add_post("/fapi/v1/leverage", self._signed(self._leverage))
        r.add_post("/fapi/v1/marginType", self._signed(self._margin_type))
        r.add_get("/fapi/v1/leverageBracket", self._signed(self._leverage_bracket))
        r.add_post("/fapi/v1/order", self._signed(self._order))
        r.add_get("/fapi/v1/order", self._signed(self._query_order))
        r.add_get("/fapi/v1/userTrades", self._signed(self._user_trades))
        r.add_get("/fapi/v2/positionRisk", self._signed(self._position_risk))
        r.add_get("/fapi/v2/balance", self._signed(self._balance))
        r.add_get("/fapi/v1/income", self._signed(self._income))
        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tran = 0
        self.url = ""

    # ---------------------------------------------------------------- lifecycle
    async def start(self, port: int = 0) -> str:
        if not port:
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

    def start_in_thread(self) -> str:
        """Serve from a thread of its own (for code that runs its own event loop, e.g. the CLI)."""
        ready = threading.Event()

        def run():
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.start())
            ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self.close())

        self._thread = threading.Thread(target=run, name="local-usdm", daemon=True)
        self._thread.start()
        if not ready.wait(30):
            raise RuntimeError("the local USD-M exchange did not start")
        return self.url

    def stop_thread(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(30)

    def inject(self, kind: str, *, path: str = "/fapi/v1/order", method: str | None = "POST", count: int = 1,
               **kw) -> Fault:
        """Queue a fault (module docstring) for the next ``count`` requests to ``path``."""
        return self.faults.add(Fault(kind=kind, path=path, method=method, exact=True, count=count, **kw))

    # ------------------------------------------------------------- the market
    def set_price(self, price: float) -> None:
        self.price = float(price)

    def _book_income(self, sym: str, kind: str, amount: float, at_ms: int | None, trade_id="") -> None:
        self._tran += 1
        self.income.append({"symbol": sym, "incomeType": kind, "income": f"{amount:.8f}", "asset": "USDT",
                            "info": kind, "time": int(at_ms if at_ms is not None else time.time() * 1000),
                            "tranId": 9_689_000_000 + self._tran, "tradeId": str(trade_id)})

    def settle_funding(self, rate: float, *, mark: float | None = None, at_ms: int | None = None) -> None:
        """One funding event for every open position (``mark``: default the current price)."""
        mark = self.price if mark is None else float(mark)
        for sym, p in self.positions.items():
            if p.amt == 0:
                continue
            pay = funding_payment("long" if p.amt > 0 else "short", qty=abs(p.amt), mark=mark, rate=rate)
            self.balance -= pay
            self._book_income(sym, "FUNDING_FEE", -pay, at_ms)

    def liquidate(self, symbol: str, *, open_: float, high: float, low: float) -> bool:
        """The liquidation engine over one candle of ``symbol`` (the rule of :mod:`S5.futures`):
        an isolated position whose margin balance reaches the first bracket's maintenance margin
        -- long: ``low <= liquidation price``, short: ``high >=`` it -- is closed at that price (at
        the open when the candle opened beyond it) and its whole margin is lost: the fill's
        commission is the margin balance left (the insurance fund's share). True if it happened."""
        pos = self.positions.get(symbol)
        if pos is None or pos.amt == 0:
            return False
        side = "long" if pos.amt > 0 else "short"
        b = self.first_bracket(symbol)
        liq = liquidation_price(side, qty=abs(pos.amt), entry=pos.entry, margin=pos.margin,
                                mmr=float(b["maintMarginRatio"]), cum=float(b.get("cum", 0.0)))
        if not ((low <= liq) if side == "long" else (high >= liq)):
            return False
        px = min(open_, liq) if side == "long" else max(open_, liq)
        left = pos.margin + (1 if side == "long" else -1) * abs(pos.amt) * (px - pos.entry)
        keep = self.price
        self.price = px
        self._fill(symbol, "SELL" if side == "long" else "BUY", abs(pos.amt), f"autoclose-{int(time.time() * 1000)}",
                   True, fee=left)
        self.price = keep
        return True

    def force_close(self, symbol: str) -> None:
        """Close ``symbol``'s position at the current price outside the strategy (an
        auto-close / a manual close on the website), as a fill with client id ``autoclose-…``."""
        pos = self.positions.get(symbol)
        if pos is None or pos.amt == 0:
            return
        side = "SELL" if pos.amt > 0 else "BUY"
        self._fill(symbol, side, abs(pos.amt), f"autoclose-{int(time.time() * 1000)}", True)

    def first_bracket(self, symbol: str) -> dict:
        b = dict(self.brackets.get(symbol, DEFAULT_BRACKETS)[0])
        if self.mmr is not None:
            b["maintMarginRatio"] = self.mmr
        return b

    # ---------------------------------------------------------------- signing
    @staticmethod
    def _error(status: int, code: int, msg: str, headers: dict | None = None) -> web.Response:
        return web.json_response({"code": code, "msg": msg}, status=status, headers=headers)

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
            fault = self.faults.take(request.path, request.method)
            if fault is not None:
                if fault.kind == "error":
                    return web.Response(status=fault.status, text="<html>Internal Server Error</html>",
                                        content_type="text/html")
                if fault.kind in ("429", "418"):
                    return self._error(int(fault.kind), -1003, "Too many requests (injected).",
                                       {"Retry-After": f"{fault.retry_after:g}"})
            resp = await handler(params)
            if fault is not None and fault.kind == "error_after_accept":
                return web.Response(status=503, text="<html>Service Unavailable</html>", content_type="text/html")
            return resp
        return route

    # ----------------------------------------------------------------- routes
    async def _ping(self, request) -> web.Response:
        return web.json_response({})

    async def _time(self, request) -> web.Response:
        return web.json_response({"serverTime": int(time.time() * 1000)})

    def _listing(self, sym: str) -> dict:
        return self.symbols.get(sym) or futures_listing(sym)

    async def _exchange_info(self, request) -> web.Response:
        names = list(self.symbols) or ["BTCUSDT", "ETHUSDT"]
        return web.json_response({"timezone": "UTC", "serverTime": int(time.time() * 1000),
                                  "futuresType": "U_MARGINED", "rateLimits": [], "exchangeFilters": [],
                                  "assets": [{"asset": "USDT", "marginAvailable": True}],
                                  "symbols": [self._listing(s) for s in names]})

    def _known(self, sym: str | None) -> bool:
        return bool(sym) and (sym in self.symbols or not self.symbols)

    async def _leverage(self, p: dict) -> web.Response:
        sym = p.get("symbol")
        if not self._known(sym):
            return self._error(400, -1121, "Invalid symbol.")
        try:
            lev = int(p.get("leverage", 0))
        except ValueError:
            return self._error(400, -1100, "Illegal characters found in parameter 'leverage'.")
        first = self.first_bracket(sym)
        if not 1 <= lev <= int(first["initialLeverage"]):
            return self._error(400, -4028, f"Leverage {lev} is not valid")
        self.leverage[sym] = lev
        cap = next((b["notionalCap"] for b in self.brackets.get(sym, DEFAULT_BRACKETS)
                    if b["initialLeverage"] >= lev), first["notionalCap"])
        return web.json_response({"leverage": lev, "maxNotionalValue": str(cap), "symbol": sym})

    async def _margin_type(self, p: dict) -> web.Response:
        sym, kind = p.get("symbol"), str(p.get("marginType", "")).upper()
        if not self._known(sym):
            return self._error(400, -1121, "Invalid symbol.")
        if kind not in ("ISOLATED", "CROSSED"):
            return self._error(400, -1116, "Invalid marginType.")
        if self.margin_type.get(sym, "CROSSED") == kind:
            return self._error(400, -4046, "No need to change margin type.")
        if self.positions.get(sym, _Position()).amt != 0:
            return self._error(400, -4048, "Margin type cannot be changed if there exists position.")
        self.margin_type[sym] = kind
        return web.json_response({"code": 200, "msg": "success"})

    async def _leverage_bracket(self, p: dict) -> web.Response:
        def entry(s):
            rows = [dict(b) for b in self.brackets.get(s, DEFAULT_BRACKETS)]
            rows[0] = self.first_bracket(s)
            return {"symbol": s, "brackets": rows}

        sym = p.get("symbol")
        if sym:
            if not self._known(sym):
                return self._error(400, -1121, "Invalid symbol.")
            return web.json_response(entry(sym))
        return web.json_response([entry(s) for s in (list(self.symbols) or ["BTCUSDT", "ETHUSDT"])])

    def _fill(self, sym: str, side: str, qty: float, cid: str, reduce_only: bool, *, fee: float | None = None) -> dict:
        pos = self.positions.setdefault(sym, _Position())
        signed = qty if side == "BUY" else -qty
        px = self.price
        fee = qty * px * self.fee_rate if fee is None else fee
        now = int(time.time() * 1000)
        self.balance -= fee
        realized = 0.0
        if pos.amt == 0 or (pos.amt > 0) == (signed > 0):          # open / add
            new = pos.amt + signed
            pos.entry = (abs(pos.amt) * pos.entry + qty * px) / abs(new)
            pos.amt = new
            pos.margin += qty * px / self.leverage.get(sym, 20)
        else:                                                       # reduce / close
            closed = min(qty, abs(pos.amt))
            realized = (1 if pos.amt > 0 else -1) * closed * (px - pos.entry)
            self.balance += realized
            pos.margin *= 1 - closed / abs(pos.amt)
            pos.amt += closed if pos.amt < 0 else -closed
            if abs(pos.amt) < 1e-12:
                self.positions[sym] = _Position()
        oid = len(self.orders) + 1
        tid = len(self.trades) + 1
        self.trades.append({"buyer": side == "BUY", "commission": f"{fee:.8f}", "commissionAsset": "USDT",
                            "id": tid, "maker": False, "orderId": oid, "price": f"{px}", "qty": f"{qty}",
                            "quoteQty": f"{qty * px}", "realizedPnl": f"{realized:.8f}", "side": side,
                            "positionSide": "BOTH", "symbol": sym, "time": now})
        if realized:
            self._book_income(sym, "REALIZED_PNL", realized, now, tid)
        self._book_income(sym, "COMMISSION", -fee, now, tid)
        order = {"orderId": oid, "symbol": sym, "status": "FILLED", "clientOrderId": cid, "price": "0",
                 "avgPrice": f"{px}", "origQty": f"{qty}", "executedQty": f"{qty}", "cumQty": f"{qty}",
                 "cumQuote": f"{qty * px}", "timeInForce": "GTC", "type": "MARKET", "reduceOnly": reduce_only,
                 "closePosition": False, "side": side, "positionSide": "BOTH", "stopPrice": "0",
                 "workingType": "CONTRACT_PRICE", "priceProtect": False, "origType": "MARKET",
                 "priceMatch": "NONE", "selfTradePreventionMode": "NONE", "goodTillDate": 0, "time": now,
                 "updateTime": now}
        self.orders[cid] = order
        return order

    async def _order(self, p: dict) -> web.Response:
        sym, side, cid = p.get("symbol"), p.get("side"), p.get("newClientOrderId")
        if not self._known(sym):
            return self._error(400, -1121, "Invalid symbol.")
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
        cid = cid or f"x-{len(self.orders) + 1}"
        order = self._fill(sym, side, qty, cid, reduce_only)
        if p.get("newOrderRespType", "ACK") == "RESULT":
            return web.json_response(order)
        # ACK: what Binance answers a MARKET order by default -- accepted, not yet reported filled
        return web.json_response({**order, "status": "NEW", "avgPrice": "0.00", "executedQty": "0", "cumQty": "0",
                                  "cumQuote": "0.00000"})

    async def _query_order(self, p: dict) -> web.Response:
        cid, oid = p.get("origClientOrderId"), p.get("orderId")
        order = self.orders.get(cid) if cid else next(
            (o for o in self.orders.values() if str(o["orderId"]) == str(oid)), None)
        if order is None or order["symbol"] != p.get("symbol"):
            return self._error(400, -2013, "Order does not exist.")
        return web.json_response(order)

    async def _user_trades(self, p: dict) -> web.Response:
        rows = [t for t in self.trades if t["symbol"] == p.get("symbol")]
        if p.get("orderId"):
            rows = [t for t in rows if str(t["orderId"]) == str(p["orderId"])]
        if p.get("startTime"):
            rows = [t for t in rows if t["time"] >= int(p["startTime"])]
        if p.get("fromId"):
            rows = [t for t in rows if t["id"] >= int(p["fromId"])]
        return web.json_response(rows[-int(p.get("limit", 500)):])

    async def _position_risk(self, p: dict) -> web.Response:
        out = []
        for sym, pos in self.positions.items():
            if p.get("symbol") and sym != p["symbol"]:
                continue
            side = "long" if pos.amt > 0 else "short"
            upnl = pos.amt * (self.price - pos.entry)
            mmr = float(self.first_bracket(sym)["maintMarginRatio"])
            liq = (liquidation_price(side, qty=abs(pos.amt), entry=pos.entry, margin=pos.margin, mmr=mmr)
                   if pos.amt else 0.0)
            iso = self.margin_type.get(sym, "CROSSED") == "ISOLATED"
            out.append({"symbol": sym, "positionAmt": f"{pos.amt}", "entryPrice": f"{pos.entry}",
                        "breakEvenPrice": f"{pos.entry}", "markPrice": f"{self.price}",
                        "unRealizedProfit": f"{upnl}", "liquidationPrice": f"{liq}",
                        "leverage": str(self.leverage.get(sym, 20)), "maxNotionalValue": "50000",
                        "marginType": "isolated" if iso else "cross", "isolatedMargin": f"{pos.margin if iso else 0}",
                        "isAutoAddMargin": "false", "positionSide": "BOTH", "notional": f"{pos.amt * self.price}",
                        "isolatedWallet": f"{pos.margin if iso else 0}", "updateTime": int(time.time() * 1000)})
        return web.json_response(out)

    async def _balance(self, p: dict) -> web.Response:
        used = sum(pos.margin for pos in self.positions.values())
        upnl = sum(pos.amt * (self.price - pos.entry) for pos in self.positions.values())
        return web.json_response([{"accountAlias": "SgsR", "asset": "USDT", "balance": f"{self.balance}",
                                   "crossWalletBalance": f"{self.balance}", "crossUnPnl": f"{upnl}",
                                   "availableBalance": f"{self.balance - used}", "maxWithdrawAmount":
                                   f"{self.balance - used}", "marginAvailable": True,
                                   "updateTime": int(time.time() * 1000)}])

    async def _income(self, p: dict) -> web.Response:
        rows = self.income
        if p.get("symbol"):
            rows = [r for r in rows if r["symbol"] == p["symbol"]]
        if p.get("incomeType"):
            rows = [r for r in rows if r["incomeType"] == p["incomeType"]]
        if p.get("startTime"):
            rows = [r for r in rows if r["time"] >= int(p["startTime"])]
        if p.get("endTime"):
            rows = [r for r in rows if r["time"] <= int(p["endTime"])]
        return web.json_response(rows[:int(p.get("limit", 100))])


def main(argv=None) -> int:   # pragma: no cover - a manual tool
    import argparse

    ap = argparse.ArgumentParser(prog="python -m S7.local.usdm")
    ap.add_argument("--port", type=int, default=8771)
    ap.add_argument("--api-key", default="test-key")
    ap.add_argument("--api-secret", default="test-secret")
    args = ap.parse_args(argv)
    ex = LocalUSDM(api_key=args.api_key, api_secret=args.api_secret)

    async def serve():
        print(await ex.start(args.port), flush=True)
        await asyncio.Event().wait()

    asyncio.run(serve())
    return 0


__all__ = ["DEFAULT_BRACKETS", "LocalUSDM", "futures_listing"]

if __name__ == "__main__":   # pragma: no cover
    main()
