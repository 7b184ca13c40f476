"""The Binance USD-M futures testnet as the :class:`~S7.futures_engine.FuturesEngine`'s account
(:class:`ExchangeAccount`: orders sent at once with deterministic client ids and ``reduceOnly`` on
exits, fills read back, funding from ``/fapi/v1/income``, the exchange's liquidations and outside
closes booked) and the leverage brackets (:func:`first_bracket`: ``GET /fapi/v1/leverageBracket``
cached under ``data/``, else :func:`S5.futures.lookup_brackets` -- the cache, else the built-in
table -- the one lookup the S5 backtest and parity check use too). Driven by
:mod:`S7.futures_session`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import pandas as pd

from S4.decide import Position
from S5.futures import BracketTable, brackets_from_rows, lookup_brackets, save_brackets
from S7.futures_client import FuturesAuthError, FuturesError, FuturesUnavailable, UsdmClient
from S7.futures_engine import FuturesAccount, Order

log = logging.getLogger(__name__)


# ----------------------------------------------------------------- brackets
async def first_bracket(client: UsdmClient | None, symbol: str) -> BracketTable:
    """``symbol``'s leverage brackets (a :class:`S5.futures.BracketTable`: ``.mmr``, ``.cum``,
    ``.max_leverage`` are the first bracket's): ``GET /fapi/v1/leverageBracket`` when there is a
    client (keys), cached under ``data/`` (:func:`S5.futures.save_brackets`); else (or when the call
    fails) THE lookup the backtest uses too, :func:`S5.futures.lookup_brackets` -- the cache, else
    the built-in table with one printed note."""
    why = "no futures keys"
    if client is not None:
        try:
            rows = await client.leverage_brackets(symbol)
            save_brackets(symbol, rows, source=client.base_url)
            return brackets_from_rows(symbol, rows, origin=f"GET /fapi/v1/leverageBracket at {client.base_url}")
        except FuturesAuthError:
            raise
        except FuturesError as exc:
            why = f"leverageBracket failed: {exc.msg or exc}"
    return lookup_brackets(symbol, why=why)


# ----------------------------------------------------------------- exchange
def client_order_id(symbol: str, interval: str, candle_open_ms: int, side: str, strategy: str, opens: bool) -> str:
    """Deterministic ``newClientOrderId`` of an order decided on a candle (``u7-`` + 28 hex)."""
    raw = f"{symbol}|{interval}|{candle_open_ms}|{side}|{strategy}|{'open' if opens else 'close'}"
    return "u7-" + hashlib.sha256(raw.encode()).hexdigest()[:28]


def _vwap(fills: list[dict]) -> tuple[float, float]:
    """Total quantity and average price of the exchange's fills (decimal strings, exact)."""
    q = sum(Decimal(str(f["qty"])) for f in fills)
    return float(q), float(sum(Decimal(str(f["qty"])) * Decimal(str(f["price"])) for f in fills) / q)


def _qty_text(qty: float, filters) -> str:
    step = getattr(filters, "market_step_size", None) or getattr(filters, "step_size", None)
    d = Decimal(repr(float(qty)))
    if step:
        d = (d / step).to_integral_value(rounding="ROUND_HALF_EVEN") * step
    text = format(d.normalize(), "f")
    return text


@dataclass
class ExchangeAccount(FuturesAccount):
    """The futures testnet as the engine's account (see the module docstring): the engine's
    :meth:`submit` queues, :meth:`flush` sends, :meth:`sync` reads funding, the position and
    the wallet back. Liquidation is the exchange's: :meth:`check_liquidation` never fires here."""

    client: Any = None
    symbol: str = ""
    interval: str = ""
    strategy: str = ""
    order_log: Any = None
    income_cursor_ms: int | None = None
    seen_income: list = field(default_factory=list)
    funding_total: float = 0.0
    rejected: int = 0
    notes: list = field(default_factory=list)
    booked_trades: list = field(default_factory=list)    #: the exchange's trade ids booked outside our orders
    unknown: list = field(default_factory=list)          #: (order, client id, fill ms) whose answer was lost

    def check_liquidation(self, o, h, lo, t_ms):   # the exchange liquidates; sync() books it
        return None

    def _log(self, **kw) -> None:
        if self.order_log is not None:
            self.order_log.append(symbol=self.symbol, **kw)

    async def sync(self, candle_open_ms: int) -> list[dict[str, Any]]:
        """Funding, the exchange's position and the wallet before the decision on a candle;
        returns the trades closed meanwhile (an order whose answer was lost, a liquidation, a
        close outside the strategy)."""
        resolved = await self.resolve_unknown()
        rows = await self.client.funding_income(self.symbol, start_time=self.income_cursor_ms)
        for r in rows:
            tid = str(r.get("tranId", f"{r['time']}:{r['income']}"))
            if tid in self.seen_income:
                continue
            self.seen_income = (self.seen_income + [tid])[-200:]
            pay = -float(r["income"])
            self.funding_total += pay
            if self.position is not None:
                self.funding += pay
            self.income_cursor_ms = max(self.income_cursor_ms or 0, int(r["time"]))
            self._log(side=None, type="FUNDING_FEE", quantity=None, price=None, client_id=None, exchange_id=None,
                      status="FUNDING", reason="funding", event="funding", income=r["income"], tran_id=tid)
        closed: list[dict[str, Any]] = list(resolved)
        ex = await self.client.position(self.symbol)
        amt = float(ex["positionAmt"]) if ex else 0.0
        if self.position is None and abs(amt) > 1e-12:
            self.notes += await _adopt(self, self.client, self.symbol, ex)
        elif self.position is not None and abs(amt) < 1e-12:
            closed.append(await self._closed_outside(candle_open_ms))
        elif self.position is not None and not math.isclose(abs(amt), self.position.qty, rel_tol=1e-9):
            note = (f"the exchange holds {amt:g} {self.symbol}, the strategy {self.position.qty:g}: "
                    "tracking the exchange's quantity")
            log.warning(note)
            self.notes.append(note)
            self.position = Position(qty=abs(amt), entry_price=self.position.entry_price, stop=self.position.stop,
                                     take_profit=self.position.take_profit, side=self.position.side,
                                     trail=self.position.trail)
        self.balance = await self.client.usdt_balance()
        return closed

    async def _closed_outside(self, candle_open_ms: int) -> dict[str, Any]:
        """The position is gone at the exchange: book it from the exchange's fills that are
        not ours (``liquidation`` when at or beyond the liquidation price, else ``external``)."""
        p = self.position
        ours = {f.get("order_id") for f in self.fills}
        start = next((f["exchange_time_ms"] for f in reversed(self.fills)
                      if f.get("exchange_time_ms") and str(f.get("reason", "")).startswith("entry:")), None)
        trades = [t for t in await self.client.user_trades(self.symbol, start_time=start)
                  if t["orderId"] not in ours and str(t["id"]) not in self.booked_trades]
        self.booked_trades = (self.booked_trades + [str(t["id"]) for t in trades])[-500:]
        liq = self.spec.liquidation_price(p.side, qty=p.qty, entry=p.entry_price, margin=self.margin)
        if trades:
            _, px = _vwap(trades)
            fee = sum(float(t["commission"]) for t in trades)
        else:
            px, fee = liq, 0.0
        beyond = (px <= liq * 1.001) if p.side == "long" else (px >= liq * 0.999)
        reason = "liquidation" if beyond else "external"
        note = f"the exchange closed the {p.side} position ({p.qty:g} @ {p.entry_price:g}) at {px:g}: {reason}"
        log.warning(note)
        self.notes.append(note)
        self._log(side="SELL" if p.side == "long" else "BUY", type="MARKET", quantity=p.qty, price=px, client_id=None,
                  exchange_id=None, status="FILL", reason=reason, event="reconcile")
        return self._close(px, candle_open_ms, reason, fee)

    async def flush(self, decided_open_ms: int, fill_ms: int) -> list[dict[str, Any]]:
        """Send the queued orders (an exit before the opposite entry), book their fills."""
        orders, self.pending = list(self.pending), []
        done = []
        for o in orders:
            cid = client_order_id(self.symbol, self.interval, decided_open_ms, o.side, self.strategy, o.opens)
            qty = _qty_text(o.qty, self.filters)
            self._log(side=o.side, type="MARKET", quantity=qty, price=None, client_id=cid, exchange_id=None,
                      status="INTENT", reason=o.reason, event="intent", reduce_only=not o.opens,
                      candle=pd.Timestamp(decided_open_ms, unit="ms", tz="UTC").isoformat())
            try:
                order = await self.client.submit_market(self.symbol, o.side, qty, client_order_id=cid,
                                                        reduce_only=not o.opens)
                order = await self._final(order, cid)
            except FuturesAuthError:
                raise
            except FuturesUnavailable as exc:      # the outcome is unknown: resolved by client id in sync()
                self.unknown.append((o, cid, fill_ms))
                log.warning("order %s %s %s: no answer (%s); looked up by its client id before anything else",
                            cid, o.side, qty, exc)
                self._log(side=o.side, type="MARKET", quantity=qty, price=None, client_id=cid, exchange_id=None,
                          status="UNKNOWN", reason=o.reason, event="lookup", error=exc.msg)
                break
            except FuturesError as exc:
                self.rejected += 1
                log.warning("order %s %s %s refused: %s", cid, o.side, qty, exc)
                self._log(side=o.side, type="MARKET", quantity=qty, price=None, client_id=cid, exchange_id=None,
                          status="REJECTED", reason=o.reason, event="rejected", code=exc.code, error=exc.msg)
                if o.opens:
                    continue
                break           # an exit that failed: no entry behind it (sync() re-reads the position)
            tr = await self._book_order(o, order, cid, fill_ms)
            if tr is not None:
                done.append(tr)
        return done

    async def _book_order(self, o: Order, order: dict, cid: str, fill_ms: int) -> dict[str, Any] | None:
        """Book a FILLED order from its fills (price, commission)."""
        fills = await self.client.user_trades(self.symbol, order_id=order["orderId"])
        q, px = _vwap(fills) if fills else (float(order["executedQty"]), float(order["avgPrice"]))
        fee = sum(float(f["commission"]) for f in fills) if fills else q * px * self.fee_rate
        o.qty = q
        tr = self.book(o, px, fee, fill_ms, client_id=cid, order_id=order["orderId"],
                       exchange_time_ms=int(order.get("updateTime") or time.time() * 1000))
        self._log(side=o.side, type="MARKET", quantity=q, price=px, client_id=cid, exchange_id=order["orderId"],
                  status="FILLED", reason=o.reason, event="fill", executed_qty=q, avg_price=px, commission=fee,
                  commission_asset="USDT", reduce_only=not o.opens)
        return tr

    async def resolve_unknown(self) -> list[dict[str, Any]]:
        """Look up the orders whose answer was lost: filled -> booked (as if answered), never
        arrived -> abandoned (its signal is stale: not re-sent). Raises while still unreachable."""
        closed = []
        while self.unknown:
            o, cid, fill_ms = self.unknown[0]
            order = await self.client.query_order(self.symbol, cid)
            self.unknown.pop(0)
            if order is not None and order.get("status") == "FILLED":
                tr = await self._book_order(o, order, cid, fill_ms)
                if tr is not None:
                    closed.append(tr)
            else:
                log.warning("order %s never reached the exchange: abandoned (not re-sent)", cid)
                self._log(side=o.side, type="MARKET", quantity=o.qty, price=None, client_id=cid, exchange_id=None,
                          status="ABANDONED", reason=o.reason, event="lookup")
        return closed

    async def _final(self, order: dict, cid: str, tries: int = 20) -> dict:
        """The order once the exchange reports it done (an ACK answer says ``NEW``)."""
        for i in range(tries):
            if order.get("status") in ("FILLED", "EXPIRED", "CANCELED", "REJECTED") or \
                    float(order.get("executedQty") or 0) > 0 and order.get("status") != "PARTIALLY_FILLED":
                break
            await asyncio.sleep(min(0.05 * 2 ** i, 1.0))
            order = await self.client.query_order(self.symbol, cid) or order
        if order.get("status") != "FILLED":
            raise FuturesError(200, None, f"order {cid} ended {order.get('status')} (executed "
                                          f"{order.get('executedQty')})")
        return order


async def _adopt(acc: ExchangeAccount, client: UsdmClient, symbol: str, ex: dict | None = None) -> list[str]:
    """Check the restored position against the exchange's; adopt what the exchange holds."""
    lines = []
    ex = ex if ex is not None else await client.position(symbol)
    amt = float(ex["positionAmt"]) if ex else 0.0
    if acc.position is None and abs(amt) > 1e-12:
        side = "long" if amt > 0 else "short"
        acc.position = Position(qty=abs(amt), entry_price=float(ex["entryPrice"]), stop=None, take_profit=None,
                                side=side)
        acc.margin = float(ex.get("isolatedMargin") or 0.0) or abs(amt) * float(ex["entryPrice"]) / acc.spec.leverage
        lines.append(f"the exchange holds a {side} position of {abs(amt):g} {symbol} @ {ex['entryPrice']} this "
                     "session did not record: adopted, without stop-loss / take-profit")
    elif acc.position is not None:
        lines.append(f"position restored: {acc.position.side} {acc.position.qty:g} @ {acc.position.entry_price:g} "
                     f"(the exchange: {amt:g})")
    for line in lines:
        log.warning(line)
    return lines


__all__ = ["ExchangeAccount", "client_order_id", "first_bracket"]
