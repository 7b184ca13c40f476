"""Reconciliation: make the executor's memory agree with the exchange **before acting**.

Run on start and after any reconnect (a request that failed for network reasons,
an order whose outcome stayed unknown). It reads, in this order:

1. **our unresolved orders** (intents persisted before a crash, outcomes unknown,
   orders still open): each is looked up by its client id. Found -> its status
   and fills are recorded. Not at the exchange -> the request never landed: the
   intent is ``ABANDONED`` (never re-sent: its signal is stale). A lookup that
   fails leaves the order unresolved and the engine does not trade until it is
   resolved.
2. **open orders** of the symbol: ours (``s7-`` client ids) are cancelled when
   ``cancel_stale`` (an open MARKET order is a leftover), except the ones in
   ``keep`` -- the resting LIMIT order the engine still waits for
   (:mod:`S7.limit_orders`), whose fills are applied and which stays working;
   other orders are reported and left alone.
3. **recent fills** (``myTrades``): fills of our orders missing from the store are
   applied (idempotent per trade id); fills of other orders are counted, ignored.
4. **balances**: when the account holds less of the base asset than the tracked
   position (a testnet reset, a manual sale), the position is lowered to what is
   there, with a warning; more than the position is reported (not ours).
5. **stop-loss and take-profit**: an open position whose levels were never placed
   (a crash after the entry order was sent or its fill booked, before the levels)
   gets them from what the entry intent decided: its ``stop_distance`` and
   ``tp_distance`` from the average fill price, placed by ``place_levels`` (the
   engine's, with its tick rounding and ``--no-stops``), or exactly when not given.

It says what it found, one line per finding (:meth:`ReconcileReport.lines`).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable

from S7.exchange_client import ExchangeError, TradingVenue, lookup_order
from S7.ledger import Ledger
from S7.orders import ABANDONED, EXCHANGE_OPEN, INTENT, UNKNOWN, Fill, OrderState, is_ours, plain
from S7.store import Position

log = logging.getLogger(__name__)


@dataclass
class ReconcileReport:
    """What a reconciliation found and did."""

    when: str
    resolved: list[tuple[str, str, str]] = field(default_factory=list)   # (client id, before, after)
    unresolved: list[str] = field(default_factory=list)
    open_ours: list[str] = field(default_factory=list)
    cancelled: list[str] = field(default_factory=list)
    resting: list[str] = field(default_factory=list)    # ours, kept working (a LIMIT order being waited for)
    open_foreign: int = 0
    fills_applied: int = 0
    fills_foreign: int = 0
    balances: dict[str, tuple[Decimal, Decimal]] = field(default_factory=dict)
    position_before: Position | None = None
    position_after: Position | None = None
    closed_trips: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when nothing is left unresolved (the engine may act)."""
        return not self.unresolved

    def lines(self, base: str, quote: str) -> list[str]:
        out = [f"reconcile ({self.when}): "
               + (f"{len(self.resolved)} pending order(s) resolved" if self.resolved else "no pending order")
               + (f", {len(self.unresolved)} STILL UNRESOLVED (no trading until they are)" if self.unresolved else "")]
        for cid, before, after in self.resolved:
            out.append(f"  order {cid}: {before} -> {after}")
        kept = f", {len(self.resting)} resting LIMIT kept" if self.resting else ""
        out.append(f"  open orders: {len(self.open_ours)} ours ({len(self.cancelled)} cancelled{kept}), "
                   f"{self.open_foreign} not ours (left alone)")
        out.append(f"  fills: {self.fills_applied} of ours applied from the exchange, "
                   f"{self.fills_foreign} of other orders ignored")
        b = self.balances
        fmt = lambda a: (f"{a} {plain(b[a][0])} free / {plain(b[a][1])} locked" if a in b else f"{a} 0")  # noqa: E731
        out.append(f"  balances: {fmt(base)}, {fmt(quote)}")
        p = self.position_after
        if p is not None:
            pos = (f"{plain(p.qty)} {base} @ {p.entry_price:,.2f} (stop {p.stop}, take-profit {p.take_profit})"
                   if p.is_open else "flat")
            out.append(f"  position: {pos}")
        out += [f"  note: {n}" for n in self.notes]
        return out


async def reconcile(venue: TradingVenue, ledger: Ledger, *, when: str = "start", cancel_stale: bool = True,
                    recent_trades: int = 1000, keep: set[str] | frozenset[str] = frozenset(),
                    place_levels: Callable[[dict, float], None] | None = None) -> ReconcileReport:
    """Reconcile ``ledger``'s symbol with ``venue`` (see the module docstring).
    Raises :class:`S7.exchange_client.ExchangeError` when the exchange cannot be read."""
    store, symbol = ledger.store, ledger.symbol
    rep = ReconcileReport(when)
    rep.position_before = store.position(symbol)
    try:
        await venue.sync_time()
    except ExchangeError as exc:
        rep.notes.append(f"clock sync failed ({exc.message}); using the previous offset")

    # 1. our unresolved orders, by client id
    for row in store.unresolved(symbol):
        cid, before = row["client_order_id"], row["status"]
        state, order = await lookup_order(venue, symbol=symbol, client_order_id=cid)
        if state == "failed":
            rep.unresolved.append(cid)
            continue
        if state == "absent":
            age_s = (time.time() * 1000 - row["updated_ms"]) / 1000
            if before in (INTENT, UNKNOWN) and age_s > getattr(venue, "recv_window_s", 0) + 1:
                store.update_order(cid, status=ABANDONED,
                                   error="never reached the exchange (not found by client id); not re-sent")
                ledger.log_event(store.get_order(cid), status=ABANDONED, event="reconcile",
                                 note="not found at the exchange by client id: never executed, not re-sent")
                rep.resolved.append((cid, before, ABANDONED))
            elif before in (INTENT, UNKNOWN):
                rep.unresolved.append(cid)   # its recvWindow has not passed yet
            else:
                # the exchange lost it (testnet reset): nothing can fill any more
                store.update_order(cid, status=ABANDONED, error="the exchange no longer knows this order")
                ledger.log_event(store.get_order(cid), status=ABANDONED, event="reconcile",
                                 note="the exchange no longer knows this order (testnet reset?)")
                rep.resolved.append((cid, before, ABANDONED))
            continue
        st = ledger.order_state(OrderState.from_rest(order), event="reconcile")
        await _order_fills(venue, ledger, order, rep)
        after = (st or store.get_order(cid))["status"]
        if after != before:
            rep.resolved.append((cid, before, after))
        if after in EXCHANGE_OPEN and cid in keep:
            rep.resting.append(cid)      # a LIMIT order the engine still waits for: left working
        elif after in EXCHANGE_OPEN and not cancel_stale:
            rep.unresolved.append(cid)   # still working at the exchange; step 2 cancels it otherwise

    # 2. open orders of the symbol
    for o in await venue.open_orders(symbol=symbol):
        cid = o.get("clientOrderId", "")
        if not is_ours(cid):
            rep.open_foreign += 1
            continue
        rep.open_ours.append(cid)
        if cid in keep and store.get_order(cid) is not None:
            if cid not in rep.resting:
                rep.resting.append(cid)
            continue
        if cancel_stale:
            try:
                res = await venue.cancel_order(symbol=symbol, client_order_id=cid)
                state = OrderState.from_rest({**res, "clientOrderId": cid})
                if store.get_order(cid) is not None:
                    ledger.order_state(state, event="reconcile", note="stale open order cancelled")
                rep.cancelled.append(cid)
                if cid in rep.unresolved:
                    rep.unresolved.remove(cid)
                await _order_fills(venue, ledger, o, rep)
            except ExchangeError as exc:
                rep.notes.append(f"could not cancel stale order {cid}: {exc.message}")
                if cid not in rep.unresolved and store.get_order(cid) is not None:
                    rep.unresolved.append(cid)
        elif store.get_order(cid) is None:
            rep.notes.append(f"open order {cid} looks like ours but is not in this executor's store")

    # 3. recent fills
    trades = await venue.my_trades(symbol=symbol, limit=recent_trades)
    for t in trades:
        row = store.order_by_exchange_id(symbol, int(t["orderId"]))
        if row is None:
            rep.fills_foreign += 1
            continue
        r = ledger.fill(Fill.from_my_trade(t, client_order_id=row["client_order_id"]))
        if r is not None and r.new:
            rep.fills_applied += 1

    # 4. balances against the position
    acct = await venue.account()
    for b in acct.get("balances", []):
        if b["asset"] in (ledger.base_asset, ledger.quote_asset):
            rep.balances[b["asset"]] = (Decimal(b["free"]), Decimal(b["locked"]))
    pos = store.position(symbol)
    held = sum(rep.balances.get(ledger.base_asset, (Decimal(0), Decimal(0))))
    if pos.is_open and held < pos.qty:
        new = store.clamp_position(symbol, held)
        rep.notes.append(f"the account holds {plain(held)} {ledger.base_asset}, less than the tracked position "
                         f"{plain(pos.qty)} (testnet reset or a manual sale?): position lowered to {plain(new.qty)}")
        log.warning("reconcile: %s", rep.notes[-1])
    elif held > pos.qty:
        rep.notes.append(f"the account holds {plain(held - pos.qty)} {ledger.base_asset} more than the strategy's "
                         "position: not ours, not traded")
    _restore_levels(ledger, rep, place_levels)
    rep.position_after = store.position(symbol)
    rep.closed_trips = ledger.take_closed()
    for line in rep.lines(ledger.base_asset, ledger.quote_asset):
        log.info("%s", line)
    return rep


def _restore_levels(ledger: Ledger, rep: ReconcileReport, place_levels: Callable[[dict, float], None] | None) -> None:
    """Step 5: the open trip's stop and take-profit from its newest entry order that decided them."""
    store, symbol = ledger.store, ledger.symbol
    pos = store.position(symbol)
    if not pos.is_open or store.levels_placed(symbol):
        return
    start = pos.entry_time_ms or 0
    buys = [f for f in store.fills(symbol) if f["side"] == "BUY" and int(f["time_ms"]) >= start]
    for cid in dict.fromkeys(f["client_order_id"] for f in reversed(buys)):
        row = store.get_order(cid) if cid else None
        if row is None or not (row.get("stop_distance") or row.get("tp_distance")):
            continue
        mine = [f for f in buys if f["client_order_id"] == cid]
        qty = sum((Decimal(f["qty"]) for f in mine), Decimal(0))
        avg = float(sum((Decimal(f["qty"]) * Decimal(f["price"]) for f in mine), Decimal(0)) / qty)
        if place_levels is not None:
            place_levels(row, avg)
        else:
            sd, td = row.get("stop_distance"), row.get("tp_distance")
            store.set_levels(symbol, stop=avg - sd if sd else None, take_profit=avg + td if td else None)
        p = store.position(symbol)
        if p.stop is not None or p.take_profit is not None:
            rep.notes.append(f"stop {p.stop} and take-profit {p.take_profit} restored from the entry order {cid} "
                             f"(filled at {avg:,.8g} before a restart)")
            log.warning("reconcile: %s", rep.notes[-1])
        return


async def _order_fills(venue: TradingVenue, ledger: Ledger, order: dict, rep: ReconcileReport) -> None:
    """Apply the fills of one of our orders (``myTrades?orderId=``) when it executed anything."""
    if Decimal(str(order.get("executedQty") or 0)) <= 0 or order.get("orderId") is None:
        return
    for t in await venue.my_trades(symbol=ledger.symbol, order_id=int(order["orderId"])):
        r = ledger.fill(Fill.from_my_trade(t, client_order_id=order.get("clientOrderId")))
        if r is not None and r.new:
            rep.fills_applied += 1


__all__ = ["ReconcileReport", "reconcile"]
