"""A small spot "matching book" with Binance's order semantics, shared by the dry-run
simulator (:mod:`S7.simulator`) and the local test exchange (:mod:`S7.local.exchange`).

It is the exchange side, deliberately independent of the executor's own rounding
(:meth:`S6.filters.SymbolFilters.check_order`): it **checks** orders the way
Binance does and refuses what does not fit, so a rounding bug in the executor
shows up as a ``-1013`` here instead of passing silently.

- Validation in Binance's order and with its codes: ``-1102`` missing parameter,
  ``-1100`` illegal characters, ``-1121`` invalid symbol, ``-1116``/``-1117`` bad
  type/side, ``-1013 Filter failure: PRICE_FILTER | LOT_SIZE | MARKET_LOT_SIZE |
  MIN_NOTIONAL | NOTIONAL`` (``(qty - minQty) % stepSize == 0``, ``(price -
  minPrice) % tickSize == 0``, notional against the reference price for MARKET
  orders), ``-2010`` duplicate open client id / insufficient balance,
  ``-2013`` order does not exist, ``-2011`` unknown order (cancel).
- Balances with ``free``/``locked``; commission ``fee_rate`` in the asset received
  (BUY pays in base, SELL in quote), as Binance charges without BNB.
- MARKET orders fill at once at ``price_of(symbol)`` (test exchange), or, with
  ``market_fill="next_price"`` (dry-run), stay ``NEW`` until the next price
  :meth:`MatchingBook.on_price` brings; a MARKET BUY that can no longer be paid in
  full at that price fills what it can and ends ``EXPIRED``, as on Binance.
- LIMIT GTC orders fill when marketable (taker, at the market price) or rest and
  fill at their limit when a later price crosses them (maker); ``LIMIT_MAKER``
  (post-only) orders that would be marketable are refused with ``-2010 Order would
  immediately match and take.``, otherwise they rest like LIMIT orders.
- :meth:`MatchingBook.on_price` may carry the quantity traded at that price
  (``qty``): resting orders then fill only that much (oldest first, on the lot
  step) and stay ``PARTIALLY_FILLED`` -- how a test or a replay models partial fills.
- ``listeners``: callables given every user-data event the book's changes make, in
  Binance's layouts (:func:`execution_report`, ``outboundAccountPosition``): an
  ``executionReport`` per order state change (``NEW``, each ``TRADE``, ``CANCELED``,
  ``EXPIRED``) followed by the balances it moved. A request refused with an error
  code makes no event (Binance answers it synchronously only; its ``REJECTED``
  execution type is for cancel-replace orders, which this book does not have).

>>> from S6.filters import SymbolFilters
>>> f = SymbolFilters(symbol="BTCUSDT", base_asset="BTC", quote_asset="USDT", tick_size=D("0.01"),
...                   min_price=D("0.01"), step_size=D("0.00001"), min_qty=D("0.00001"), min_notional=D("10"))
>>> book = MatchingBook(filters={"BTCUSDT": f}, balances={"USDT": "1000"}, price_of=lambda s: D("20000"))
>>> r = book.new_order({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.001",
...                     "newClientOrderId": "s7-a"})
>>> r["status"], r["fills"][0]["price"], book.balance("USDT")[0], book.balance("BTC")[0]
('FILLED', '20000.00000000', Decimal('980.00000000'), Decimal('0.00099900'))
>>> book.new_order({"symbol": "BTCUSDT", "side": "BUY", "type": "MARKET", "quantity": "0.0000123"})
Traceback (most recent call last):
...
S7.matching.BookError: -1013 Filter failure: LOT_SIZE
"""

from __future__ import annotations

import re
import threading
import time
from decimal import ROUND_DOWN, Decimal
from typing import Any, Callable, Mapping

from S6.filters import SymbolFilters
from S7.orders import D

E8 = Decimal("0.00000001")
_NUM_RE = re.compile(r"^([0-9]{1,20})(\.[0-9]{1,20})?$")
_CID_RE = re.compile(r"^[a-zA-Z0-9-_]{1,36}$")
SIDES = ("BUY", "SELL")
TYPES = ("MARKET", "LIMIT", "LIMIT_MAKER")
#: Binance's answer to a LIMIT_MAKER (post-only) order that would trade as a taker.
WOULD_TAKE = "Order would immediately match and take."


class BookError(Exception):
    """A Binance error answer: ``code``, ``msg`` and the HTTP status it comes with."""

    def __init__(self, code: int, msg: str, http_status: int = 400):
        super().__init__(f"{code} {msg}")
        self.code, self.msg, self.http_status = code, msg, http_status

    def body(self) -> dict:
        return {"code": self.code, "msg": self.msg}


def _missing(name: str) -> BookError:
    return BookError(-1102, f"Mandatory parameter '{name}' was not sent, was empty/null, or malformed.")


def _num(params: Mapping[str, Any], name: str, *, required: bool = True) -> Decimal | None:
    raw = params.get(name)
    if raw is None or raw == "":
        if required:
            raise _missing(name)
        return None
    if not _NUM_RE.match(str(raw)):
        raise BookError(-1100, f"Illegal characters found in parameter '{name}'; legal range is "
                               "'^([0-9]{1,20})(\\.[0-9]{1,20})?$'.")
    return Decimal(str(raw))


def f8(x: Decimal) -> str:
    """Binance's 8-decimal string."""
    return f"{D(x).quantize(E8):f}"


def _off_grid(x: Decimal, lo: Decimal | None, hi: Decimal | None, step: Decimal | None) -> bool:
    """True when ``x`` is below ``lo``, above ``hi`` or not ``lo + k * step`` (None: no bound)."""
    return ((lo is not None and x < lo) or (hi is not None and x > hi)
            or (step is not None and (x - (lo or 0)) % step != 0))


def filter_failure(f: SymbolFilters, *, order_type: str, qty: Decimal, price: Decimal | None,
                   ref_price: Decimal | None) -> str | None:
    """The name of the first filter the order breaks (Binance's ``-1013``), or None."""
    market = order_type == "MARKET"
    if not market and (price is None or price <= 0 or _off_grid(price, f.min_price, f.max_price, f.tick_size)):
        return "PRICE_FILTER"
    if qty <= 0 or _off_grid(qty, f.min_qty, f.max_qty, f.step_size):
        return "LOT_SIZE"
    if market and _off_grid(qty, f.market_min_qty, f.market_max_qty, f.market_step_size):
        return "MARKET_LOT_SIZE"
    p = ref_price if market else price
    if p is not None and p > 0:
        notional = qty * p
        if f.min_notional is not None and (not market or f.min_notional_market) and notional < f.min_notional:
            return f.notional_filter
        if f.max_notional is not None and (not market or f.max_notional_market) and notional > f.max_notional:
            return "NOTIONAL"
    return None


class MatchingBook:
    """Balances, orders and trades of one account (thread-safe; all amounts ``Decimal``)."""

    def __init__(self, *, filters: Mapping[str, SymbolFilters] | Callable[[str], SymbolFilters | None],
                 balances: Mapping[str, Any] | None = None, fee_rate: Any = "0.001",
                 price_of: Callable[[str], Decimal | None] | None = None,
                 market_fill: str = "immediate", clock: Callable[[], int] | None = None,
                 slippage_bps: float = 0.0, fee_asset: str = "received"):
        if market_fill not in ("immediate", "next_price"):
            raise ValueError("market_fill must be 'immediate' or 'next_price'")
        if fee_asset not in ("received", "quote"):
            raise ValueError("fee_asset must be 'received' (Binance's default) or 'quote' (as S5's backtest books it)")
        self.fee_asset = fee_asset
        self._filters = filters
        self.fee_rate = D(fee_rate)
        self.price_of = price_of or (lambda symbol: None)
        self.market_fill = market_fill
        self.slippage = D(slippage_bps) / Decimal(10_000)
        self.clock = clock or (lambda: int(time.time() * 1000))
        self.free: dict[str, Decimal] = {k: D(v) for k, v in (balances or {}).items()}
        self.locked: dict[str, Decimal] = {}
        self.orders: dict[int, dict] = {}       # orderId -> Binance order dict (+ "_reserved")
        self.trades: list[dict] = []
        self.next_order_id = 1000
        self.next_trade_id = 5000
        self.lock = threading.RLock()
        #: called (under the lock, in order) with each user-data event -- see the module docstring
        self.listeners: list[Callable[[dict], None]] = []

    # -------------------------------------------------------------- events
    def _emit(self, event: dict) -> None:
        for fn in list(self.listeners):
            fn(event)

    def _report(self, order: dict, execution: str, *, trade: dict | None = None, status: str | None = None,
                cancel_id: str | None = None) -> None:
        if self.listeners:
            self._emit(execution_report(order, execution, now_ms=self.clock(), trade=trade, status=status,
                                        cancel_id=cancel_id))

    def _account_event(self, *assets: str) -> None:
        if self.listeners:
            now = self.clock()
            self._emit({"e": "outboundAccountPosition", "E": now, "u": now,
                        "B": [{"a": a, "f": f8(self.free.get(a, 0)), "l": f8(self.locked.get(a, 0))}
                              for a in dict.fromkeys(assets) if a]})

    def _assets(self, order: dict) -> tuple[str, str]:
        f = self.filters(order["symbol"])
        return (f.base_asset, f.quote_asset) if f is not None else ("", "")

    def deposit(self, asset: str, delta: Any) -> None:
        """Credit (or debit, negative) ``asset`` outside trading: a ``balanceUpdate`` event,
        then ``outboundAccountPosition`` (what Binance sends for deposits and withdrawals)."""
        with self.lock:
            self.free[asset] = self.free.get(asset, Decimal(0)) + D(delta)
            if self.listeners:
                now = self.clock()
                self._emit({"e": "balanceUpdate", "E": now, "a": asset, "d": f8(D(delta)), "T": now})
                self._account_event(asset)

    # -------------------------------------------------------------- lookups
    def filters(self, symbol: str) -> SymbolFilters | None:
        if callable(self._filters):
            return self._filters(symbol)
        return self._filters.get(symbol)

    def balance(self, asset: str) -> tuple[Decimal, Decimal]:
        """``(free, locked)`` of ``asset``."""
        with self.lock:
            return self.free.get(asset, Decimal(0)).quantize(E8), self.locked.get(asset, Decimal(0)).quantize(E8)

    def _find(self, symbol: str, client_order_id: str | None, order_id: Any) -> dict | None:
        if order_id not in (None, ""):
            o = self.orders.get(int(order_id))
            return o if o is not None and o["symbol"] == symbol else None
        # the latest order with that client id (Binance reuses ids once an order is closed)
        for o in reversed(list(self.orders.values())):
            if o["symbol"] == symbol and o["clientOrderId"] == client_order_id:
                return o
        return None

    @staticmethod
    def public(o: dict) -> dict:
        return {k: v for k, v in o.items() if not k.startswith("_")}

    # ---------------------------------------------------------------- orders
    def validate(self, params: Mapping[str, Any]) -> tuple[SymbolFilters, str, str, Decimal, Decimal | None, str]:
        """Check an order request; returns ``(filters, side, type, qty, price, client id)``."""
        symbol = params.get("symbol")
        if not symbol:
            raise _missing("symbol")
        f = self.filters(str(symbol))
        if f is None:
            raise BookError(-1121, "Invalid symbol.")
        side = params.get("side")
        if not side:
            raise _missing("side")
        if side not in SIDES:
            raise BookError(-1117, "Invalid side.")
        otype = params.get("type")
        if not otype:
            raise _missing("type")
        if otype not in TYPES:
            raise BookError(-1116, "Invalid orderType.")
        qty = _num(params, "quantity")
        price = None
        if otype in ("LIMIT", "LIMIT_MAKER"):
            price = _num(params, "price")
            if otype == "LIMIT" and not params.get("timeInForce"):
                raise _missing("timeInForce")
            if otype == "LIMIT_MAKER" and params.get("timeInForce") not in (None, ""):
                raise BookError(-1106, "Parameter 'timeInForce' sent when not required.")
        elif params.get("price") not in (None, ""):
            raise BookError(-1106, "Parameter 'price' sent when not required.")
        cid = str(params.get("newClientOrderId") or f"auto{self.next_order_id}")
        if not _CID_RE.match(cid):
            raise BookError(-1100, "Illegal characters found in parameter 'newClientOrderId'; legal range is "
                                   "'^[a-zA-Z0-9-_]{1,36}$'.")
        if f.status != "TRADING":
            raise BookError(-1013, "Market is closed.")
        ref = self.price_of(str(symbol))
        bad = filter_failure(f, order_type=otype, qty=qty, price=price, ref_price=ref)
        if bad:
            raise BookError(-1013, f"Filter failure: {bad}")
        return f, side, otype, qty, price, cid

    def test_order(self, params: Mapping[str, Any]) -> dict:
        """``POST /api/v3/order/test``: validate only."""
        with self.lock:
            self.validate(params)
        return {}

    def new_order(self, params: Mapping[str, Any]) -> dict:
        """``POST /api/v3/order`` -> the FULL response (``fills`` included)."""
        with self.lock:
            f, side, otype, qty, price, cid = self.validate(params)
            symbol = f.symbol
            for o in self.orders.values():
                if o["symbol"] == symbol and o["clientOrderId"] == cid and o["status"] in ("NEW", "PARTIALLY_FILLED"):
                    raise BookError(-2010, "Duplicate order sent.")
            market_price = self.price_of(symbol)
            if otype == "MARKET" and (market_price is None or market_price <= 0):
                raise BookError(-2010, "Market is closed (no price to fill a MARKET order).")
            base, quote = f.base_asset, f.quote_asset
            # balance: Binance checks what the order can cost / sell now
            limit = otype in ("LIMIT", "LIMIT_MAKER")
            if side == "BUY":
                need = qty * (price if limit else market_price)
                if self.free.get(quote, Decimal(0)) < need:
                    raise BookError(-2010, "Account has insufficient balance for requested action.")
            elif self.free.get(base, Decimal(0)) < qty:
                raise BookError(-2010, "Account has insufficient balance for requested action.")
            probe = {"type": "LIMIT", "side": side, "price": f8(price or 0)}
            if otype == "LIMIT_MAKER" and self._marketable(probe, market_price):
                raise BookError(-2010, WOULD_TAKE)
            now = self.clock()
            oid = self.next_order_id
            self.next_order_id += 1
            order = {"symbol": symbol, "orderId": oid, "orderListId": -1, "clientOrderId": cid,
                     "transactTime": now, "price": f8(price or 0), "origQty": f8(qty), "executedQty": f8(0),
                     "cummulativeQuoteQty": f8(0), "status": "NEW",
                     "timeInForce": params.get("timeInForce") or "GTC",
                     "type": otype, "side": side, "stopPrice": f8(0), "icebergQty": f8(0), "time": now,
                     "updateTime": now, "isWorking": True, "workingTime": now, "origQuoteOrderQty": f8(0),
                     "selfTradePreventionMode": "NONE", "_reserved": Decimal(0)}
            self.orders[oid] = order
            self._report(order, "NEW")
            fills: list[dict] = []
            if otype == "MARKET" and self.market_fill == "immediate":
                fills = self._fill(order, qty, self._slipped(f, side, market_price), maker=False)
            elif otype == "LIMIT" and self._marketable(order, market_price):
                fills = self._fill(order, qty, market_price, maker=False)
            else:  # rests (LIMIT, LIMIT_MAKER) or waits for the next price (MARKET in next_price mode)
                self._reserve(order, f, qty, price if limit else market_price)
                self._account_event(quote if side == "BUY" else base)
            out = self.public(order)
            out["fills"] = fills
            return out

    def _slipped(self, f: SymbolFilters, side: str, price: Decimal) -> Decimal:
        """A MARKET fill price ``slippage_bps`` worse than ``price``, on the tick grid (BUY up,
        SELL down): :func:`S5.costs.fill_price`, the one the backtest fills at."""
        if not self.slippage:
            return price
        from S5.costs import fill_price, price_grid

        tick, base = price_grid(f)
        p = Decimal(repr(fill_price(float(price), buy=side == "BUY", slippage=float(self.slippage), tick=tick,
                                    base=base)))
        return p.quantize(f.tick_size) if tick is not None and f.tick_size.as_tuple().exponent < 0 else p

    def _marketable(self, order: dict, price: Decimal | None) -> bool:
        if price is None or order["type"] not in ("LIMIT", "LIMIT_MAKER"):
            return False
        limit = D(order["price"])
        return price <= limit if order["side"] == "BUY" else price >= limit

    def _reserve(self, order: dict, f: SymbolFilters, qty: Decimal, price: Decimal) -> None:
        asset, amount = (f.quote_asset, qty * price) if order["side"] == "BUY" else (f.base_asset, qty)
        amount = min(amount, self.free.get(asset, Decimal(0)))
        self.free[asset] = self.free.get(asset, Decimal(0)) - amount
        self.locked[asset] = self.locked.get(asset, Decimal(0)) + amount
        order["_reserved"] = amount

    def _release(self, order: dict) -> None:
        f = self.filters(order["symbol"])
        asset = f.quote_asset if order["side"] == "BUY" else f.base_asset
        amount = order.get("_reserved", Decimal(0))
        if amount:
            self.locked[asset] = self.locked.get(asset, Decimal(0)) - amount
            self.free[asset] = self.free.get(asset, Decimal(0)) + amount
            order["_reserved"] = Decimal(0)

    def _fill(self, order: dict, qty: Decimal, price: Decimal, *, maker: bool) -> list[dict]:
        """Execute ``qty`` of ``order`` at ``price`` (balances, commission, trade); less than
        what is left keeps the order working as ``PARTIALLY_FILLED``."""
        f = self.filters(order["symbol"])
        base, quote = f.base_asset, f.quote_asset
        left = D(order["origQty"]) - D(order["executedQty"])
        partial = 0 < qty < left
        if partial:  # free the share of the reservation this fill uses, keep the rest locked
            asset = quote if order["side"] == "BUY" else base
            use = qty * D(order["price"]) if order["side"] == "BUY" else qty
            use = min(use, order.get("_reserved", Decimal(0)))
            self.locked[asset] = self.locked.get(asset, Decimal(0)) - use
            self.free[asset] = self.free.get(asset, Decimal(0)) + use
            order["_reserved"] = order.get("_reserved", Decimal(0)) - use
        else:
            self._release(order)
        status = "PARTIALLY_FILLED" if partial else "FILLED"
        if order["side"] == "BUY":
            cash = self.free.get(quote, Decimal(0))
            if qty * price > cash:  # the price moved: fill what the cash pays for, expire the rest
                step = f.step_size or E8
                qty = (cash / price / step).to_integral_value(rounding=ROUND_DOWN) * step
                status = "EXPIRED"
        elif self.free.get(base, Decimal(0)) < qty:
            qty = self.free.get(base, Decimal(0))
            status = "EXPIRED"
        now = self.clock()
        fills: list[dict] = []
        if qty > 0:
            quote_qty = qty * price
            if order["side"] == "BUY" and self.fee_asset == "quote":   # commission in the quote asset
                commission, c_asset = (quote_qty * self.fee_rate).quantize(E8), quote
                self.free[quote] = self.free.get(quote, Decimal(0)) - quote_qty - commission
                self.free[base] = self.free.get(base, Decimal(0)) + qty
            elif order["side"] == "BUY":
                commission, c_asset = (qty * self.fee_rate).quantize(E8), base
                self.free[quote] = self.free.get(quote, Decimal(0)) - quote_qty
                self.free[base] = self.free.get(base, Decimal(0)) + qty - commission
            else:
                commission, c_asset = (quote_qty * self.fee_rate).quantize(E8), quote
                self.free[base] = self.free.get(base, Decimal(0)) - qty
                self.free[quote] = self.free.get(quote, Decimal(0)) + quote_qty - commission
            tid = self.next_trade_id
            self.next_trade_id += 1
            self.trades.append({"symbol": order["symbol"], "id": tid, "orderId": order["orderId"], "orderListId": -1,
                                "price": f8(price), "qty": f8(qty), "quoteQty": f8(quote_qty),
                                "commission": f8(commission), "commissionAsset": c_asset, "time": now,
                                "isBuyer": order["side"] == "BUY", "isMaker": maker, "isBestMatch": True})
            fills.append({"price": f8(price), "qty": f8(qty), "commission": f8(commission),
                          "commissionAsset": c_asset, "tradeId": tid})
            order["executedQty"] = f8(D(order["executedQty"]) + qty)
            order["cummulativeQuoteQty"] = f8(D(order["cummulativeQuoteQty"]) + quote_qty)
        if status == "EXPIRED" and partial:
            self._release(order)
        order["status"] = status
        order["updateTime"] = now
        order["isWorking"] = status == "PARTIALLY_FILLED"
        if fills:
            self._report(order, "TRADE", trade=self.trades[-1],
                         status="PARTIALLY_FILLED" if status == "EXPIRED" else status)
        if status == "EXPIRED":
            self._report(order, "EXPIRED")
        self._account_event(base, quote)
        return fills

    def on_price(self, symbol: str, price: Any, qty: Any = None) -> list[dict]:
        """A new market price: fill waiting MARKET orders and crossed LIMIT orders. Returns the new trades.

        ``qty``: the quantity traded at ``price`` (None: unlimited). Resting LIMIT orders
        share it oldest first, each fill on the lot step; what it does not cover stays open."""
        price = D(price)
        avail = None if qty is None else D(qty)
        out: list[dict] = []
        with self.lock:
            for o in list(self.orders.values()):
                if o["symbol"] != symbol or o["status"] not in ("NEW", "PARTIALLY_FILLED"):
                    continue
                left = D(o["origQty"]) - D(o["executedQty"])
                if o["type"] == "MARKET":
                    out += self._fill(o, left, self._slipped(self.filters(symbol), o["side"], price), maker=False)
                elif self._marketable(o, price):
                    take = left
                    if avail is not None:
                        step = self.filters(symbol).step_size or E8
                        take = (min(left, avail) / step).to_integral_value(rounding=ROUND_DOWN) * step
                    if take <= 0:
                        continue
                    out += self._fill(o, take, D(o["price"]), maker=True)
                    if avail is not None:
                        avail -= take
        return out

    def query(self, params: Mapping[str, Any]) -> dict:
        """``GET /api/v3/order`` by ``origClientOrderId`` or ``orderId``."""
        symbol = params.get("symbol")
        if not symbol:
            raise _missing("symbol")
        if not params.get("origClientOrderId") and not params.get("orderId"):
            raise BookError(-1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!")
        with self.lock:
            o = self._find(symbol, params.get("origClientOrderId"), params.get("orderId"))
            if o is None:
                raise BookError(-2013, "Order does not exist.")
            return self.public(o)

    def cancel(self, params: Mapping[str, Any]) -> dict:
        """``DELETE /api/v3/order``: only open orders can be cancelled (else ``-2011``)."""
        symbol = params.get("symbol")
        if not symbol:
            raise _missing("symbol")
        with self.lock:
            o = self._find(symbol, params.get("origClientOrderId"), params.get("orderId"))
            if o is None or o["status"] not in ("NEW", "PARTIALLY_FILLED"):
                raise BookError(-2011, "Unknown order sent.")
            self._release(o)
            o["status"] = "CANCELED"
            o["updateTime"] = self.clock()
            o["isWorking"] = False
            out = self.public(o)
            out["origClientOrderId"] = o["clientOrderId"]
            out["clientOrderId"] = str(params.get("newClientOrderId") or f"cancel{o['orderId']}")
            self._report(o, "CANCELED", cancel_id=out["clientOrderId"])
            self._account_event(*self._assets(o))
            return out

    def open_orders(self, params: Mapping[str, Any] | None = None) -> list[dict]:
        symbol = (params or {}).get("symbol")
        with self.lock:
            return [self.public(o) for o in self.orders.values()
                    if o["status"] in ("NEW", "PARTIALLY_FILLED") and (not symbol or o["symbol"] == symbol)]

    def account(self) -> dict:
        with self.lock:
            assets = sorted(set(self.free) | set(self.locked))
            balances = [{"asset": a, "free": f8(self.free.get(a, 0)), "locked": f8(self.locked.get(a, 0))}
                        for a in assets]
        fee = int(self.fee_rate * 10_000)
        return {"makerCommission": fee, "takerCommission": fee, "buyerCommission": 0, "sellerCommission": 0,
                "canTrade": True, "canWithdraw": True, "canDeposit": True, "brokered": False,
                "requireSelfTradePrevention": False, "updateTime": self.clock(), "accountType": "SPOT",
                "balances": balances, "permissions": ["SPOT"]}

    def my_trades(self, params: Mapping[str, Any]) -> list[dict]:
        """``GET /api/v3/myTrades``: ``symbol`` required; ``orderId``, ``fromId``, ``startTime``,
        ``endTime``, ``limit`` (default 500, max 1000), oldest first."""
        symbol = params.get("symbol")
        if not symbol:
            raise _missing("symbol")
        limit = min(1000, max(1, int(params.get("limit") or 500)))
        with self.lock:
            rows = [t for t in self.trades if t["symbol"] == symbol]
        if params.get("orderId") not in (None, ""):
            rows = [t for t in rows if t["orderId"] == int(params["orderId"])]
        if params.get("fromId") not in (None, ""):
            rows = [t for t in rows if t["id"] >= int(params["fromId"])]
        else:
            if params.get("startTime") not in (None, ""):
                rows = [t for t in rows if t["time"] >= int(params["startTime"])]
            if params.get("endTime") not in (None, ""):
                rows = [t for t in rows if t["time"] <= int(params["endTime"])]
            if params.get("startTime") in (None, "") and params.get("endTime") in (None, ""):
                rows = rows[-limit:]
        return [dict(t) for t in rows[:limit]]

    # ------------------------------------------------------------- snapshot
    def snapshot(self) -> dict:
        """Plain-JSON state (the simulator persists it between runs)."""
        with self.lock:
            return {"free": {k: str(v) for k, v in self.free.items()},
                    "locked": {k: str(v) for k, v in self.locked.items()},
                    "orders": [{**{k: v for k, v in o.items() if k != "_reserved"},
                                "_reserved": str(o.get("_reserved", 0))} for o in self.orders.values()],
                    "trades": list(self.trades), "next_order_id": self.next_order_id,
                    "next_trade_id": self.next_trade_id, "fee_rate": str(self.fee_rate)}

    def restore(self, snap: Mapping[str, Any]) -> None:
        with self.lock:
            self.free = {k: D(v) for k, v in snap.get("free", {}).items()}
            self.locked = {k: D(v) for k, v in snap.get("locked", {}).items()}
            self.orders = {int(o["orderId"]): {**o, "_reserved": D(o.get("_reserved", 0))}
                           for o in snap.get("orders", [])}
            self.trades = list(snap.get("trades", []))
            self.next_order_id = int(snap.get("next_order_id", self.next_order_id))
            self.next_trade_id = int(snap.get("next_trade_id", self.next_trade_id))


def execution_report(order: Mapping[str, Any], execution: str, *, now_ms: int, trade: Mapping[str, Any] | None = None,
                     status: str | None = None, cancel_id: str | None = None) -> dict:
    """The user-data ``executionReport`` of one change of ``order`` (a Binance order dict),
    in the layout of the real payloads (``../shared/data/api/ws_spot_execution_report_*.json``).

    ``execution``: ``NEW | TRADE | CANCELED | EXPIRED`` (field ``x``); ``trade``: the
    ``myTrades`` row of a ``TRADE``; ``cancel_id``: a cancel's own client id -- Binance
    then puts it in ``c`` and the order's id in ``C``.
    """
    t = trade or {}
    st = status or order["status"]
    last_qty, last_px = D(t.get("qty", 0)), D(t.get("price", 0))
    return {"e": "executionReport", "E": int(now_ms), "s": order["symbol"],
            "c": cancel_id if cancel_id else order["clientOrderId"], "S": order["side"], "o": order["type"],
            "f": order.get("timeInForce") or "GTC", "q": order["origQty"], "p": order["price"], "P": f8(0),
            "F": f8(0), "g": -1, "C": order["clientOrderId"] if cancel_id else "", "x": execution, "X": st,
            "r": "NONE", "i": order["orderId"], "l": f8(last_qty), "z": order["executedQty"], "L": f8(last_px),
            "n": t.get("commission", "0"), "N": t.get("commissionAsset"),
            "T": int(t.get("time") or order.get("updateTime") or now_ms), "t": int(t["id"]) if t else -1,
            "I": int(now_ms), "w": st in ("NEW", "PARTIALLY_FILLED"), "m": bool(t.get("isMaker", False)),
            "M": False, "O": int(order.get("time") or now_ms), "Z": order["cummulativeQuoteQty"],
            "Y": f8(last_qty * last_px), "Q": f8(0), "W": int(order.get("workingTime") or now_ms),
            "V": order.get("selfTradePreventionMode", "NONE")}


__all__ = ["BookError", "MatchingBook", "WOULD_TAKE", "execution_report", "f8", "filter_failure"]
