"""Order vocabulary of the executor: deterministic client order ids, statuses, and
Binance order / fill payloads (REST responses, ``myTrades`` rows and user-data
``executionReport`` events) parsed into small frozen records with exact decimals.

A signal gets **one** client order id, derived from what the signal is -- the
market, the candle that produced it, the side and the strategy -- so a retried or
resumed request carries the same ``newClientOrderId`` and can be looked up by it
(``GET /api/v3/order?origClientOrderId=``) instead of being sent twice:

>>> a = client_order_id(symbol="BTCUSDT", interval="1h", candle_open_ms=1_700_000_000_000, side="BUY",
...                     strategy="ab12cd34")
>>> a == client_order_id(symbol="BTCUSDT", interval="1h", candle_open_ms=1_700_000_000_000, side="BUY",
...                      strategy="ab12cd34")
True
>>> a.startswith("s7-"), len(a) <= 36, is_ours(a), is_ours("web_123")
(True, True, True, False)

Fills from a real user-data event (the ``l == 0`` quirk yields no fill):

>>> evt = {"e": "executionReport", "s": "ETHUSDT", "c": "x", "S": "BUY", "o": "LIMIT", "q": "1.0", "p": "2500",
...        "X": "PARTIALLY_FILLED", "x": "TRADE", "i": 7, "l": "0.5", "z": "0.5", "L": "2499.5", "n": "0.0005",
...        "N": "ETH", "T": 1, "t": 9, "Z": "1249.75", "m": True}
>>> OrderState.from_execution_report(evt).status, Fill.from_execution_report(evt).qty
('PARTIALLY_FILLED', Decimal('0.5'))
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

#: Every client order id the executor makes starts with this (36 chars max, ``[A-Za-z0-9-_]``).
CLIENT_ID_PREFIX = "s7-"
CLIENT_ID_RE = re.compile(r"^[A-Za-z0-9_-]{1,36}$")

# Exchange statuses (Binance spot)
NEW, PARTIALLY_FILLED, FILLED = "NEW", "PARTIALLY_FILLED", "FILLED"
CANCELED, REJECTED, EXPIRED = "CANCELED", "REJECTED", "EXPIRED"
EXCHANGE_FINAL = frozenset({FILLED, CANCELED, REJECTED, EXPIRED, "EXPIRED_IN_MATCH", "PENDING_CANCEL"})
EXCHANGE_OPEN = frozenset({NEW, PARTIALLY_FILLED, "PENDING_NEW"})

# Local statuses (never sent by the exchange)
INTENT = "INTENT"        #: persisted before the request; outcome not known yet
UNKNOWN = "UNKNOWN"      #: sent, outcome unknown (timeout/5xx) and the lookup failed too
REFUSED = "REFUSED"      #: never sent: the exchange filters / sizing / balance said no (checked locally)
BLOCKED = "BLOCKED"      #: never sent: the kill-switch refuses entries
ABANDONED = "ABANDONED"  #: an intent the exchange never received, found on restart; not re-sent (stale)
RATE_LIMITED = "RATE_LIMITED"  #: not sent: 429/418 with a Retry-After longer than we may wait

#: Statuses after which an order needs no more attention.
FINAL = EXCHANGE_FINAL | {REFUSED, BLOCKED, ABANDONED, RATE_LIMITED}
#: Statuses that block new orders for the symbol until they are resolved.
UNRESOLVED = frozenset({INTENT, UNKNOWN}) | EXCHANGE_OPEN


def D(x: Any) -> Decimal:
    """Exact decimal of an exchange string / number (``None`` and ``""`` -> 0)."""
    if x is None or x == "":
        return Decimal(0)
    if isinstance(x, Decimal):
        return x
    try:
        return Decimal(str(x))
    except InvalidOperation:
        raise ValueError(f"not a decimal number: {x!r}") from None


def plain(d: Decimal | float | str) -> str:
    """Decimal as plain text, no exponent, no trailing zeros (``'0.00100000'`` -> ``'0.001'``)."""
    d = D(d)
    if d == 0:
        return "0"
    s = f"{d.normalize():f}"
    return s


def client_order_id(*, symbol: str, interval: str, candle_open_ms: int, side: str, strategy: str) -> str:
    """The deterministic ``newClientOrderId`` of one signal: ``s7-`` + 28 hex chars of
    SHA-256 over (symbol, interval, candle open time, side, strategy)."""
    side = str(side).upper()
    if side not in ("BUY", "SELL"):
        raise ValueError(f"side must be BUY or SELL, got {side!r}")
    key = f"{str(symbol).upper()}|{interval}|{int(candle_open_ms)}|{side}|{strategy}"
    return CLIENT_ID_PREFIX + hashlib.sha256(key.encode()).hexdigest()[:28]


def is_ours(client_id: str | None) -> bool:
    """True for client order ids made by :func:`client_order_id`."""
    return bool(client_id) and str(client_id).startswith(CLIENT_ID_PREFIX)


@dataclass(frozen=True)
class OrderState:
    """What the exchange says about one order."""

    symbol: str
    client_order_id: str
    order_id: int | None
    side: str
    type: str
    status: str
    orig_qty: Decimal
    executed_qty: Decimal
    quote_qty: Decimal          #: cumulative quote filled
    price: Decimal              #: limit price (0 for MARKET)
    time_ms: int | None = None

    @property
    def is_final(self) -> bool:
        return self.status in EXCHANGE_FINAL

    @property
    def avg_price(self) -> Decimal | None:
        return (self.quote_qty / self.executed_qty) if self.executed_qty > 0 else None

    @classmethod
    def from_rest(cls, d: Mapping[str, Any]) -> "OrderState":
        """From ``POST/GET/DELETE /api/v3/order`` or an ``openOrders`` element."""
        cid = d.get("clientOrderId") or d.get("origClientOrderId") or ""
        if d.get("status") == CANCELED and d.get("origClientOrderId"):
            cid = d["origClientOrderId"]  # a cancel response carries the cancel request's id in clientOrderId
        return cls(symbol=str(d.get("symbol", "")), client_order_id=str(cid),
                   order_id=int(d["orderId"]) if d.get("orderId") is not None else None,
                   side=str(d.get("side", "")), type=str(d.get("type", "")), status=str(d.get("status", "")),
                   orig_qty=D(d.get("origQty")), executed_qty=D(d.get("executedQty")),
                   quote_qty=D(d.get("cummulativeQuoteQty")), price=D(d.get("price")),
                   time_ms=_int(d.get("updateTime") or d.get("transactTime") or d.get("time")))

    @classmethod
    def from_execution_report(cls, e: Mapping[str, Any]) -> "OrderState":
        """From a user-data ``executionReport`` event (the ``data`` of the stream message)."""
        e = e.get("data", e)
        cid = e.get("C") if e.get("X") == CANCELED and e.get("C") else e.get("c")
        return cls(symbol=str(e.get("s", "")), client_order_id=str(cid or ""), order_id=_int(e.get("i")),
                   side=str(e.get("S", "")), type=str(e.get("o", "")), status=str(e.get("X", "")),
                   orig_qty=D(e.get("q")), executed_qty=D(e.get("z")), quote_qty=D(e.get("Z")),
                   price=D(e.get("p")), time_ms=_int(e.get("T") or e.get("E")))


@dataclass(frozen=True)
class Fill:
    """One execution (trade) of one of our orders."""

    symbol: str
    trade_id: int
    order_id: int | None
    side: str
    price: Decimal
    qty: Decimal
    commission: Decimal
    commission_asset: str
    time_ms: int
    client_order_id: str | None = None
    is_maker: bool = False

    @property
    def quote_qty(self) -> Decimal:
        return self.price * self.qty

    @classmethod
    def from_order_response(cls, resp: Mapping[str, Any]) -> list["Fill"]:
        """The ``fills`` of a FULL ``POST /api/v3/order`` response."""
        out = []
        for f in resp.get("fills") or []:
            out.append(cls(symbol=str(resp.get("symbol", "")), trade_id=int(f["tradeId"]),
                           order_id=_int(resp.get("orderId")), side=str(resp.get("side", "")),
                           price=D(f["price"]), qty=D(f["qty"]), commission=D(f.get("commission")),
                           commission_asset=str(f.get("commissionAsset") or ""),
                           time_ms=int(resp.get("transactTime") or 0),
                           client_order_id=resp.get("clientOrderId")))
        return out

    @classmethod
    def from_my_trade(cls, t: Mapping[str, Any], *, client_order_id: str | None = None) -> "Fill":
        """From a ``GET /api/v3/myTrades`` row (it has ``isBuyer``, not the side nor the client id)."""
        return cls(symbol=str(t["symbol"]), trade_id=int(t["id"]), order_id=_int(t.get("orderId")),
                   side="BUY" if t.get("isBuyer") else "SELL", price=D(t["price"]), qty=D(t["qty"]),
                   commission=D(t.get("commission")), commission_asset=str(t.get("commissionAsset") or ""),
                   time_ms=int(t.get("time") or 0), client_order_id=client_order_id,
                   is_maker=bool(t.get("isMaker", False)))

    @classmethod
    def from_execution_report(cls, e: Mapping[str, Any]) -> "Fill | None":
        """The execution in a ``TRADE`` event (None otherwise, and None when the real
        payload reports ``l == 0`` -- a trade event without a last-filled quantity)."""
        e = e.get("data", e)
        if e.get("x") != "TRADE" or D(e.get("l")) <= 0 or _int(e.get("t")) in (None, -1):
            return None
        return cls(symbol=str(e["s"]), trade_id=int(e["t"]), order_id=_int(e.get("i")), side=str(e.get("S", "")),
                   price=D(e.get("L")), qty=D(e.get("l")), commission=D(e.get("n")),
                   commission_asset=str(e.get("N") or ""), time_ms=int(e.get("T") or e.get("E") or 0),
                   client_order_id=e.get("c"), is_maker=bool(e.get("m", False)))


def _int(x) -> int | None:
    if x is None or x == "":
        return None
    try:
        return int(x)
    except (TypeError, ValueError):
        return None


__all__ = ["ABANDONED", "BLOCKED", "CANCELED", "CLIENT_ID_PREFIX", "D", "EXCHANGE_FINAL", "EXCHANGE_OPEN",
           "EXPIRED", "FILLED", "FINAL", "Fill", "INTENT", "NEW", "OrderState", "PARTIALLY_FILLED", "RATE_LIMITED",
           "REFUSED", "REJECTED", "UNKNOWN", "UNRESOLVED", "client_order_id", "is_ours", "plain"]
