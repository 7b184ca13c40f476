"""Bookkeeping: what the exchange says about our orders goes into the store and the
order log, the same way whoever says it (an order response, a lookup by client
id, ``myTrades`` during a reconciliation, or a user-data ``executionReport``).

>>> import tempfile, os
>>> from decimal import Decimal
>>> from S7.store import ExecutorStore
>>> from S7.order_log import OrderLog, read_order_log
>>> d = tempfile.mkdtemp()
>>> led = Ledger(ExecutorStore(os.path.join(d, "s.db")), OrderLog(os.path.join(d, "o.jsonl"), mode="test"),
...              symbol="ETHUSDT", interval="1m", base_asset="ETH", quote_asset="USDT",
...              min_tradable=lambda price: Decimal("0.0001"))
>>> led.store.insert_order("s7-1", symbol="ETHUSDT", side="BUY", type="LIMIT", quantity="1", status="NEW",
...                        reason="entry:demo")
True
>>> evt = {"e": "executionReport", "s": "ETHUSDT", "c": "s7-1", "S": "BUY", "o": "LIMIT", "q": "1", "p": "2500",
...        "X": "PARTIALLY_FILLED", "x": "TRADE", "i": 7, "l": "0.5", "z": "0.5", "L": "2499.5", "n": "0.0005",
...        "N": "ETH", "T": 1, "t": 9, "Z": "1249.75"}
>>> state, res = led.execution_report(evt)
>>> led.store.get_order("s7-1")["status"], res.position.qty
('PARTIALLY_FILLED', Decimal('0.4995'))
>>> [r["status"] for r in read_order_log(os.path.join(d, "o.jsonl"))]
['PARTIALLY_FILLED', 'FILL']
"""

from __future__ import annotations

import logging
from decimal import Decimal
from typing import Callable

from S7.order_log import OrderLog
from S7.orders import EXCHANGE_FINAL, FILLED, D, Fill, OrderState, plain
from S7.store import ExecutorStore, FillResult

log = logging.getLogger(__name__)


class Ledger:
    """Applies exchange truths for one symbol to the store and the order log."""

    def __init__(self, store: ExecutorStore, order_log: OrderLog, *, symbol: str, interval: str,
                 base_asset: str, quote_asset: str, min_tradable: Callable[[Decimal], Decimal],
                 clock_ms: Callable[[], int] | None = None):
        self.store, self.order_log = store, order_log
        self.symbol, self.interval = symbol, interval
        self.base_asset, self.quote_asset = base_asset, quote_asset
        self.min_tradable = min_tradable
        self.clock_ms = clock_ms
        self.closed_trips: list[dict] = []   # round trips closed since the last take_closed()

    def _time(self, t_ms: int | None = None):
        import pandas as pd

        if t_ms:
            return pd.Timestamp(int(t_ms), unit="ms", tz="UTC")
        if self.clock_ms is not None:
            return pd.Timestamp(int(self.clock_ms()), unit="ms", tz="UTC")
        return None

    def take_closed(self) -> list[dict]:
        out, self.closed_trips = self.closed_trips, []
        return out

    def log_event(self, row: dict, *, status: str, event: str, reason: str | None = None, t_ms: int | None = None,
                  **extra) -> None:
        self.order_log.append(symbol=row["symbol"], side=row.get("side"), type=row.get("type"),
                              quantity=row.get("quantity"), price=row.get("price"),
                              client_id=row.get("client_order_id"), exchange_id=row.get("exchange_order_id"),
                              status=status, reason=reason if reason is not None else row.get("reason"),
                              event=event, interval=row.get("interval"), time=self._time(t_ms), **extra)

    def order_state(self, state: OrderState, *, event: str = "update", note: str | None = None) -> dict | None:
        """Record the exchange's view of one of our orders (logged when the status or fill changes)."""
        row = self.store.get_order(state.client_order_id)
        if row is None:
            return None
        if self.is_stale(row, state):
            return row
        changed = (row["status"] != state.status or row["exchange_order_id"] != state.order_id
                   or row["executed_qty"] != plain(state.executed_qty))
        if not changed:
            return row
        self.store.update_order(state.client_order_id, status=state.status, exchange_order_id=state.order_id,
                                executed_qty=plain(state.executed_qty), quote_qty=plain(state.quote_qty))
        row = self.store.get_order(state.client_order_id)
        avg = state.avg_price
        self.log_event(row, status=state.status, event=event, t_ms=state.time_ms,
                       executed_qty=plain(state.executed_qty), quote_qty=plain(state.quote_qty),
                       avg_price=plain(avg.quantize(Decimal("0.00000001"))) if avg is not None else None,
                       note=note)
        return row

    @staticmethod
    def is_stale(row: dict, state: OrderState) -> bool:
        """True when ``state`` is older than what ``row`` already records: less executed, or
        open while the row is final. The same order is reported by REST answers, lookups and
        stream events, which can arrive in any order; an order's state never goes back."""
        if D(row.get("executed_qty")) > state.executed_qty:
            return True
        return row.get("status") in EXCHANGE_FINAL and state.status not in EXCHANGE_FINAL

    def fill(self, fill: Fill, *, client_order_id: str | None = None) -> FillResult | None:
        """Apply one of our fills (idempotent per trade id); None when the order is not ours."""
        cid = client_order_id or fill.client_order_id
        row = self.store.get_order(cid) if cid else None
        if row is None and fill.order_id is not None:
            row = self.store.order_by_exchange_id(fill.symbol, fill.order_id)
        if row is None:
            return None
        res = self.store.apply_fill(fill, base_asset=self.base_asset, quote_asset=self.quote_asset,
                                    min_tradable=self.min_tradable(fill.price),
                                    client_order_id=row["client_order_id"], reason=row.get("reason"))
        if res.new:
            self.log_event({**row, "quantity": plain(fill.qty), "price": plain(fill.price)}, status="FILL",
                           event="fill", t_ms=fill.time_ms, trade_id=fill.trade_id,
                           commission=plain(fill.commission), commission_asset=fill.commission_asset)
            if res.closed is not None:
                self.closed_trips.append({**res.closed, "client_order_id": row["client_order_id"],
                                          "candle_open_ms": row.get("candle_open_ms")})
                log.info("round trip closed (%s): pnl %+.4f %s, fees %.4f", res.closed.get("reason"),
                         res.closed["pnl"], self.quote_asset, res.closed["fees"])
        return res

    def order_response(self, resp: dict, *, event: str = "accepted", note: str | None = None
                       ) -> tuple[OrderState, list[FillResult]]:
        """A FULL ``POST /api/v3/order`` answer (or a lookup result): state, then its fills."""
        state = OrderState.from_rest(resp)
        self.order_state(state, event=event, note=note)
        results = []
        for f in Fill.from_order_response(resp):
            r = self.fill(f, client_order_id=state.client_order_id)
            if r is not None:
                results.append(r)
        return state, results

    def execution_report(self, event: dict) -> tuple[OrderState, FillResult | None]:
        """A user-data ``executionReport`` (the stream message or its ``data``)."""
        state = OrderState.from_execution_report(event)
        self.order_state(state, event="execution_report")
        f = Fill.from_execution_report(event)
        return state, (self.fill(f, client_order_id=state.client_order_id) if f is not None else None)

    @staticmethod
    def is_done(state: OrderState) -> bool:
        return state.status in EXCHANGE_FINAL

    @staticmethod
    def is_filled(state: OrderState) -> bool:
        return state.status == FILLED


__all__ = ["Ledger"]
