"""Order sending for the executor: one order out, its answer recorded, fills booked.

:class:`OrderSender` is the part of the engine that talks to the venue about orders
(the engine, :class:`S7.engine.Engine`, is one; :class:`S7.limit_orders.LimitManager`
uses it for its resting order -- neither module imports the other):

- :meth:`OrderSender._send`: the intent committed to the store (client id, side,
  quantity, reason, stop / take-profit distances), then
  :func:`S7.exchange_client.submit_order` (MARKET, or the LIMIT policy's order);
  a client id already in the store is never sent again;
- :meth:`OrderSender._not_sent`: an order refused before sending (filters: ``REFUSED``,
  kill-switch: ``BLOCKED``) recorded with its reason;
- :meth:`OrderSender.record_order` / :meth:`OrderSender.sync_orders`: what the exchange
  says about our orders (fills from ``myTrades`` when a lookup carries none), the
  stop / take-profit placed at the fill (:func:`S4.decide.levels`), closed round
  trips fed to the kill-switch, balances refreshed;
- :meth:`OrderSender.fallback_market`: the unfilled remainder of a LIMIT order as MARKET;
- the answers: ``-1013`` re-reads the filters, ``-2010`` asks for a reconciliation,
  rate limits drop the signal, an unknown outcome blocks new orders until a lookup.

The state it works on (venue, ledger, store, filters, balances, ``needs_reconcile``,
stats, the LIMIT manager) is the engine's: the engine sets it up in its ``__init__``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pandas as pd

from S4.decide import Size, levels
from S6.alerts import AlertEvent, error_event, order_rejected_event
from S6.filters import SymbolFilters
from S7.exchange_client import AuthFailed, ExchangeError, SubmitResult, submit_order
from S7.orders import (
    ABANDONED,
    EXCHANGE_OPEN,
    INTENT,
    RATE_LIMITED,
    REFUSED,
    REJECTED,
    UNKNOWN,
    Fill,
    OrderState,
    client_order_id,
    plain,
)

log = logging.getLogger("S7.engine")

#: Suffix of the client id of a fallback MARKET order (``s7-`` + 28 hex + ``-m``: 33 chars).
FALLBACK_SUFFIX = "-m"

@dataclass
class Decision:
    """What the engine did with one closed candle (for logs, tests and the benchmark)."""

    candle_open_ms: int
    action: str = "none"          #: none | buy | sell | skipped | refused | blocked | waiting | stale | seen
    reason: str | None = None
    client_order_id: str | None = None
    result: SubmitResult | None = None
    entry_rule: str | None = None
    exit_rule: str | None = None
    equity: float | None = None
    allowed: bool | None = None
    seen_at: float = 0.0          #: time.perf_counter() when the candle reached the engine
    sent_at: float | None = None  #: time.perf_counter() just before the order request
    decision: Any = None          #: S4's :class:`~S4.decide.Action` for this candle (when it decided)


class OrderSender:
    """Sends and records the orders of one symbol (see the module docstring); the base of
    :class:`S7.engine.Engine`."""

    @property
    def interval_ms(self) -> int:
        """The candle length in milliseconds."""
        return self._interval_ms

    def _alert(self, event: AlertEvent) -> None:
        if self.alerter is None:
            return
        try:
            task = asyncio.get_running_loop().create_task(self.alerter.asend(event))
        except RuntimeError:
            self.alerter.send(event)
            return
        self._alerts.add(task)
        task.add_done_callback(self._alerts.discard)

    async def refresh_balances(self) -> None:
        acct = await self.venue.account()
        self.balances = {b["asset"]: (Decimal(b["free"]), Decimal(b["locked"])) for b in acct.get("balances", [])
                         if b["asset"] in (self.base, self.quote)}

    async def try_refresh_balances(self) -> None:
        """:meth:`refresh_balances`; an exchange error is logged and makes a reconcile due."""
        try:
            await self.refresh_balances()
        except ExchangeError as exc:
            log.warning("balances not refreshed (%s)", exc.message)
            self.needs_reconcile = True

    async def lookup_order(self, cid: str, *, what: str = "lookup") -> tuple[bool, dict | None]:
        """What the exchange says of our order ``cid``: ``(True, order)`` (``order`` None when
        the exchange does not know it), or ``(False, None)`` when the ``what`` failed (logged; a
        reconcile is due and the caller retries later). A refused key is raised."""
        try:
            return True, await self.venue.get_order(symbol=self.symbol, client_order_id=cid)
        except AuthFailed:
            raise
        except ExchangeError as exc:
            log.warning("order %s: %s failed (%s); will retry", cid, what, exc.message)
            self.needs_reconcile = True
            return False, None

    async def sync_orders(self, *, all_orders: bool = False) -> bool:
        """Look up our unresolved orders and record what the exchange says (while the user
        stream is live only the ones of unknown outcome, unless ``all_orders``: the open
        ones report themselves). Returns True when none is left unresolved."""
        pending = self.store.unresolved(self.symbol)
        if self.stream_live and not all_orders:
            pending = [r for r in pending if r["status"] not in EXCHANGE_OPEN]
        for row in pending:
            cid = row["client_order_id"]
            found, order = await self.lookup_order(cid)
            if not found:
                continue
            if order is None:
                age_s = time.time() - row["updated_ms"] / 1000
                if row["status"] in (INTENT, UNKNOWN) and age_s > getattr(self.venue, "recv_window_s", 0) + 1:
                    self.store.update_order(cid, status=ABANDONED, error="never reached the exchange; not re-sent")
                    self.ledger.log_event(self.store.get_order(cid), status=ABANDONED, event="lookup",
                                          note="not found by client id after its recvWindow: never executed")
                continue
            await self.record_order(order, row, event="lookup")
        return not self.store.unresolved(self.symbol)

    async def record_order(self, order: dict, row: dict, *, event: str) -> OrderState:
        state, _ = self.ledger.order_response(order, event=event)
        if state.executed_qty > 0 and not order.get("fills") and self._booked(state) < state.executed_qty:
            # a lookup result carries no fills: take the missing ones from myTrades
            for t in await self.venue.my_trades(symbol=self.symbol, order_id=state.order_id):
                self.ledger.fill(Fill.from_my_trade(t, client_order_id=state.client_order_id))
        if state.side == "BUY" and state.executed_qty > 0 and state.avg_price is not None:
            self._place_levels(row, float(state.avg_price))
        self._feed_closed_trips(self.ledger.take_closed())
        if state.executed_qty > 0:
            await self.try_refresh_balances()
        return state

    def _booked(self, state: OrderState) -> Decimal:
        """The quantity of ``state``'s order already in the store's fills."""
        return sum((Decimal(f["qty"]) for f in self.store.fills(self.symbol)
                    if f["client_order_id"] == state.client_order_id), Decimal(0))

    def _place_levels(self, row: dict, fill_price: float) -> None:
        """The stop / take-profit at the fill: S4's :func:`~S4.decide.levels` (tick grid)."""
        if not self.cfg.use_stops:
            return
        stop, tp = levels(fill_price, Size(stop_distance=row.get("stop_distance"),
                                           tp_distance=row.get("tp_distance")), self.filters)
        if self.store.position(self.symbol).is_open:
            self.store.set_levels(self.symbol, stop=stop, take_profit=tp)

    def _feed_closed_trips(self, trips: list[dict]) -> None:
        for trip in trips:
            at = pd.Timestamp(int(trip["exit_time_ms"]), unit="ms", tz="UTC") if trip.get("exit_time_ms") else None
            self.kill_switch.record_trade(float(trip["pnl"]), at=at)
            if trip.get("candle_open_ms") is not None:  # the cooldown counts from the exit signal's candle
                self.store.set_meta(f"last_exit_candle:{self.symbol}:{self.cfg.interval}", int(trip["candle_open_ms"]))

    def _cid(self, d: Decision, side: str) -> str:
        return client_order_id(symbol=self.symbol, interval=self.cfg.interval, candle_open_ms=d.candle_open_ms,
                               side=side, strategy=self.cfg.strategy)

    def _not_sent(self, d: Decision, side: str, qty, price: float, status: str, reason: str, why: str, at,
                  *, cid: str | None = None, **extra) -> None:
        cid = cid or self._cid(d, side)
        d.client_order_id = cid
        self.store.insert_order(cid, symbol=self.symbol, interval=self.cfg.interval,
                                candle_open_ms=d.candle_open_ms, side=side, type="MARKET", quantity=qty or "0",
                                price=plain(Decimal(repr(price))), status=status, reason=reason, error=why)
        self.order_log.append(symbol=self.symbol, side=side, type="MARKET", quantity=qty, price=price,
                              client_id=cid, exchange_id=None, status=status, reason=reason, event="not_sent",
                              error=why, interval=self.cfg.interval, candle=_iso(d.candle_open_ms), time=at, **extra)
        self.stats[f"orders_{status.lower()}"] += 1

    async def _send(self, d: Decision, side: str, qty: str, price: float, reason: str, at, *,
                    stop_distance: float | None = None, tp_distance: float | None = None,
                    limit_price: str | None = None, limit: Any = None,
                    cid: str | None = None) -> None:
        """Send one order: MARKET, or with ``limit_price`` the policy's LIMIT / LIMIT_MAKER."""
        cid = cid or self._cid(d, side)
        d.client_order_id, d.action = cid, side.lower()
        lim = (limit or self.cfg.limit) if limit_price is not None else None
        otype = lim.order_type if lim is not None else "MARKET"
        ref = limit_price if lim is not None else plain(Decimal(repr(price)))
        existing = self.store.get_order(cid)
        if existing is not None:  # this signal already made an order (a restart): never a second one
            log.warning("candle %s: order %s for this signal exists (%s): not sent again",
                        _iso(d.candle_open_ms), cid, existing["status"])
            d.action = "waiting"
            return
        self.store.insert_order(cid, symbol=self.symbol, interval=self.cfg.interval, candle_open_ms=d.candle_open_ms,
                                side=side, type=otype, quantity=qty, price=ref, status=INTENT, reason=reason,
                                stop_distance=stop_distance, tp_distance=tp_distance, sends=1)
        row = self.store.get_order(cid)
        if lim is not None:  # the deadline is committed with the intent (a restart resumes the wait)
            self.limits.begin(cid, candle_open_ms=d.candle_open_ms, now_ms=self._clock_ms())
        self.ledger.log_event(row, status=INTENT, event="intent", candle=_iso(d.candle_open_ms))
        d.sent_at = time.perf_counter()
        self.stats["orders_sent"] += 1
        log.info("candle %s: %s %s %s %s%s (%s) -> %s", _iso(d.candle_open_ms), side, qty, self.symbol, otype,
                 f" @ {ref}" if lim is not None else "", reason, cid)
        res = await submit_order(self.venue, symbol=self.symbol, side=side, order_type=otype, quantity=qty,
                                 client_order_id=cid, max_rate_wait=self.cfg.max_rate_wait,
                                 price=ref if lim is not None else None,
                                 time_in_force=lim.time_in_force if lim is not None else None)
        d.result = res
        if res.sends > 1:
            self.store.update_order(cid, sends=res.sends)
        await self._after_submit(res, row)
        if lim is not None:  # filled at once, or refused as post-only: settle it now
            await self.limits.step(now_ms=self._clock_ms())

    def _clock_ms(self) -> int:
        return self._now_ms if self._now_ms is not None else int(time.time() * 1000)

    async def fallback_market(self, row: dict, left: Decimal) -> None:
        """The unfilled remainder of a LIMIT order (timed out, or refused as post-only) as MARKET."""
        side, lcid = row["side"], row["client_order_id"]
        cid = lcid + FALLBACK_SUFFIX
        d = Decision(int(row["candle_open_ms"]))
        price = self.last_price or float(row["price"])
        reason = f"{row['reason']} (limit fallback)"
        if side == "SELL":
            qty = self.store.position(self.symbol).qty   # whatever is still held
        else:
            free_quote = self.balances.get(self.quote, (Decimal(0), Decimal(0)))[0]
            qty = min(left, free_quote / Decimal(repr(price * (1 + self.cfg.fee_buffer))))
        if qty <= 0:
            return
        check = self.filters.check_order(qty, price, side=side, order_type="MARKET")
        if not check.ok:
            log.warning("order %s: the unfilled %s %s not sent as MARKET: %s", lcid, side, plain(left), check.reason)
            if self.store.get_order(cid) is None:
                self._not_sent(d, side, plain(check.qty), price, REFUSED, reason, check.reason, None, cid=cid,
                               filter=check.filter)
            return
        await self._send(d, side, plain(check.qty), price, reason, None, cid=cid,
                         stop_distance=row.get("stop_distance"), tp_distance=row.get("tp_distance"))

    async def _after_submit(self, res: SubmitResult, row: dict) -> None:
        cid = row["client_order_id"]
        side, qty = row["side"], row["quantity"]
        if res.status == "accepted":
            note = "; ".join(res.notes) or None
            state = await self.record_order(res.order, row, event="lookup" if res.found_by_lookup else "accepted")
            if note:
                log.info("order %s: %s", cid, note)
            if state.status in EXCHANGE_OPEN:
                self.stats["orders_open"] += 1
            return
        err = res.error
        code = getattr(err, "code", None)
        msg = err.message if err is not None else "; ".join(res.notes)
        if res.status == "rejected" and code == -2010 and row["type"] == "LIMIT_MAKER" and \
                "immediately match" in (msg or "").lower():
            self.store.update_order(cid, status=REJECTED, error=msg)
            self.ledger.log_event(self.store.get_order(cid), status=REJECTED, event="rejected", code=code, error=msg)
            self.stats["orders_post_only_rejected"] += 1
            fb = self.cfg.limit.fallback if self.cfg.limit is not None else "none"
            log.warning("order %s: LIMIT_MAKER %s %s @ %s would cross the book (-2010): rejected; %s", cid, side, qty,
                        row["price"], "sent as MARKET instead (--limit-fallback market)" if fb == "market"
                        else "signal dropped (no fallback)")
            if self.limits is not None:
                self.limits.crossed(cid)
            return
        if res.status == "rejected":
            self.store.update_order(cid, status=REJECTED, error=msg)
            self.ledger.log_event(self.store.get_order(cid), status=REJECTED, event="rejected", code=code, error=msg)
            self.stats["orders_rejected"] += 1
            self._alert(order_rejected_event(symbol=self.symbol, side=side, qty=qty, price=row["price"], reason=msg,
                                             code=code))
            if code == -1013:
                log.error("order %s REJECTED by the exchange filters (-1013): %s -- re-reading exchangeInfo", cid, msg)
                await self._reload_filters()
            elif code == -2010:
                log.error("order %s REJECTED (-2010, e.g. insufficient balance): %s -- balances will be re-read",
                          cid, msg)
                self.needs_reconcile = True
            else:
                log.error("order %s REJECTED: %s", cid, msg)
            return
        if res.status == "rate_limited":
            self.store.update_order(cid, status=RATE_LIMITED, error=msg)
            self.ledger.log_event(self.store.get_order(cid), status=RATE_LIMITED, event="rate_limited", error=msg)
            self.stats["orders_rate_limited"] += 1
            self._alert(error_event(f"S7 {self.symbol} order", f"not sent, rate limited: {msg}"))
            log.error("order %s NOT SENT: rate limited (%s); the signal is dropped", cid, msg)
            return
        self.store.update_order(cid, status=UNKNOWN, error=msg)
        self.ledger.log_event(self.store.get_order(cid), status=UNKNOWN, event="unknown", error=msg)
        self.stats["orders_unknown"] += 1
        self.needs_reconcile = True
        self._alert(error_event(f"S7 {self.symbol} order", f"outcome unknown for {cid}: {msg}"))
        log.error("order %s: outcome UNKNOWN (%s); nothing more is sent until a lookup resolves it", cid, msg)

    async def _reload_filters(self) -> None:
        try:
            entry = await self.venue.symbol_info(self.symbol)
            self.filters = SymbolFilters.from_symbol_info(entry)
        except ExchangeError as exc:
            log.warning("exchangeInfo not re-read (%s)", exc.message)


def _iso(ms: int) -> str:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")


__all__ = ["FALLBACK_SUFFIX", "Decision", "OrderSender"]
