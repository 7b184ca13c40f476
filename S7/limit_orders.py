"""LIMIT orders for the executor: the price, and the life of one resting order.

With ``--order-type limit`` a signal becomes a LIMIT order (GTC), or a
``LIMIT_MAKER`` with ``--post-only``, priced from the signal candle's close:

- BUY at ``close * (1 - offset_bps / 10 000)`` rounded **down** to the tick, SELL at
  ``close * (1 + offset_bps / 10 000)`` rounded **up** (a positive offset waits for a
  better price; a negative one crosses: a taker order with a price cap);
- the quantity goes through S6's :meth:`~S6.filters.SymbolFilters.check_order` at that
  price (LOT_SIZE step, MIN_NOTIONAL), as for a MARKET order.

Then :class:`LimitManager` follows the order (one at a time per symbol, like every
executor order) until it is final:

1. before it is sent, a small record ``resting:<symbol>:<interval>`` (client id,
   deadline) is committed to the store, beside the order's intent;
2. fills are recorded as they happen -- partial ones too -- from the user-data
   stream's ``executionReport`` events (:mod:`S7.user_stream`) while it is healthy,
   else from the exchange's answers (lookups at most every ``poll_s``, ``myTrades``):
   position, ledger, order log and the kill-switch see each fill once (idempotent
   per trade id);
3. at the deadline (``timeout_s`` seconds after it was placed, or the close of the
   ``timeout_candles``-th candle after the signal; default: 1 candle) what is left is
   **cancelled**; the cancel's answer and ``myTrades`` give the exact filled part;
4. ``fallback="market"`` then sends the unfilled remainder as a MARKET order with
   a deterministic client id (``<limit id>-m``): a restart never sends it twice. A
   ``LIMIT_MAKER`` the exchange refuses because it would cross (``-2010 Order would
   immediately match and take.``) takes the same fallback at once.

A restart while an order rests finds the record: the reconciliation keeps that
order open (instead of cancelling it as a leftover), applies the fills it got
meanwhile, and the wait resumes with the same deadline.

>>> from S7.orders import D
>>> from S6.filters import SymbolFilters
>>> f = SymbolFilters(symbol="BTCUSDT", base_asset="BTC", quote_asset="USDT", tick_size=D("0.01"),
...                   step_size=D("0.00001"), min_qty=D("0.00001"), min_notional=D("10"))
>>> p = LimitPolicy(offset_bps=5, post_only=True)
>>> p.order_type, p.price(f, "BUY", 27000.0), p.price(f, "SELL", 27000.0)
('LIMIT_MAKER', Decimal('26986.50'), Decimal('27013.50'))
>>> LimitPolicy(fallback="limit")
Traceback (most recent call last):
...
ValueError: fallback must be 'none' or 'market', got 'limit'
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from S7.order_sender import FALLBACK_SUFFIX, OrderSender
from S7.orders import EXCHANGE_OPEN, UNRESOLVED, D, plain

if TYPE_CHECKING:  # pragma: no cover
    from S6.filters import SymbolFilters

log = logging.getLogger(__name__)

FALLBACKS = ("none", "market")


@dataclass(frozen=True)
class LimitPolicy:
    """How signals become LIMIT orders (frozen, checked on creation)."""

    post_only: bool = False               #: LIMIT_MAKER: refused (-2010) instead of taking liquidity
    offset_bps: float = 0.0               #: BUY this far below the close, SELL this far above
    timeout_s: float | None = None        #: cancel what is left this long after placing ...
    timeout_candles: int | None = None    #: ... or at the close of the N-th candle after the signal
    fallback: str = "none"                #: "market": the unfilled remainder goes out as MARKET
    poll_s: float = 2.0                   #: testnet/live without a healthy user stream: look it up this often

    def __post_init__(self):
        if self.fallback not in FALLBACKS:
            raise ValueError(f"fallback must be 'none' or 'market', got {self.fallback!r}")
        if not -500 <= self.offset_bps <= 1000:
            raise ValueError(f"offset_bps must be in [-500, 1000], got {self.offset_bps:g}")
        if self.post_only and self.offset_bps < 0:
            raise ValueError("a post-only order with a negative offset would always cross")
        if self.timeout_s is not None and self.timeout_candles is not None:
            raise ValueError("give timeout_s or timeout_candles, not both")
        if self.timeout_s is not None and not 0 < self.timeout_s <= 7 * 86_400:
            raise ValueError(f"timeout_s must be in (0, 604800], got {self.timeout_s:g}")
        if self.timeout_candles is not None and not 1 <= self.timeout_candles <= 1000:
            raise ValueError(f"timeout_candles must be in 1..1000, got {self.timeout_candles}")
        if self.poll_s < 0:
            raise ValueError("poll_s must be >= 0")

    @property
    def order_type(self) -> str:
        return "LIMIT_MAKER" if self.post_only else "LIMIT"

    @property
    def time_in_force(self) -> str | None:
        return None if self.post_only else "GTC"

    @property
    def candles(self) -> int | None:
        """The timeout in candles (the default when no timeout is given: 1)."""
        if self.timeout_s is not None:
            return None
        return self.timeout_candles or 1

    def price(self, filters: SymbolFilters, side: str, ref: float | Decimal) -> Decimal:
        """The limit price for ``side`` from the reference ``ref`` (the close), on the tick grid."""
        k = D(repr(float(self.offset_bps))) / Decimal(10_000)
        ref = D(repr(float(ref))) if not isinstance(ref, Decimal) else ref
        if side == "BUY":
            return filters.round_price(ref * (1 - k), direction="down")
        return filters.round_price(ref * (1 + k), direction="up")

    def describe(self) -> str:
        wait = f"{self.timeout_s:g}s" if self.timeout_s is not None else \
            f"{self.candles} candle{'s' if self.candles != 1 else ''}"
        return (f"{self.order_type} {self.offset_bps:+g} bps from the close, up to {wait}, "
                f"then cancel{' + MARKET fallback' if self.fallback == 'market' else ''}")


class LimitManager:
    """Follows the resting LIMIT order of an :class:`~S7.order_sender.OrderSender` (the
    engine) -- see the module docstring."""

    def __init__(self, engine: OrderSender, policy: LimitPolicy):
        self.engine, self.policy = engine, policy
        self.key = f"resting:{engine.symbol}:{engine.cfg.interval}"
        self._last_poll = 0.0

    # ------------------------------------------------------------- the record
    def record(self) -> dict | None:
        return self.engine.store.get_meta(self.key)

    def _save(self, rec: dict | None) -> None:
        self.engine.store.set_meta(self.key, rec)

    def begin(self, cid: str, *, candle_open_ms: int, now_ms: int) -> None:
        """Before the order is sent: remember it and its deadline."""
        p = self.policy
        rec: dict[str, Any] = {"cid": cid, "placed_ms": int(now_ms), "candle_open_ms": int(candle_open_ms)}
        if p.timeout_s is not None:
            rec["deadline_ms"] = int(now_ms + p.timeout_s * 1000)
        else:
            rec["deadline_candle_ms"] = int(candle_open_ms + p.candles * self.engine.interval_ms)
        self._save(rec)

    def keep_open(self) -> set[str]:
        """Client ids the reconciliation must leave working at the exchange."""
        rec = self.record()
        return {rec["cid"]} if rec else set()

    def crossed(self, cid: str) -> None:
        """A LIMIT_MAKER refused because it would cross: the fallback policy applies."""
        rec = self.record()
        if rec and rec.get("cid") == cid:
            rec["crossed"] = True
            self._save(rec)

    def _due(self, rec: dict, now_ms: int | None, candle_open_ms: int | None) -> bool:
        if "deadline_ms" in rec:
            return now_ms is not None and now_ms >= rec["deadline_ms"]
        return candle_open_ms is not None and candle_open_ms >= rec["deadline_candle_ms"]

    # ------------------------------------------------------------------ steps
    async def step(self, *, now_ms: int | None, candle_open_ms: int | None = None, poll: bool = False) -> None:
        """Advance the resting order: look it up (``poll``: at most every ``poll_s``),
        cancel it at its deadline, and once it is final apply the fallback and forget it."""
        rec = self.record()
        if not rec:
            return
        eng = self.engine
        row = eng.store.get_order(rec["cid"])
        if row is None:                  # the intent was never written: nothing was sent
            self._save(None)
            return
        if row["status"] in UNRESOLVED:
            if poll and not hasattr(eng.venue, "on_price") and not eng.stream_live:
                if time.monotonic() - self._last_poll < self.policy.poll_s:
                    return
                self._last_poll = time.monotonic()
                await eng.sync_orders()
                row = eng.store.get_order(rec["cid"])
            if row["status"] in EXCHANGE_OPEN and self._due(rec, now_ms, candle_open_ms):
                rec["expired"] = True
                self._save(rec)          # persisted first: a crash after the cancel still falls back
                await self._cancel(row)
                row = eng.store.get_order(rec["cid"])
        if row["status"] not in UNRESOLVED:
            await self._finish(row, rec)

    async def _cancel(self, row: dict) -> None:
        from S7.exchange_client import AuthFailed, ExchangeError, OrderNotFound

        eng, cid = self.engine, row["client_order_id"]
        done = D(row["executed_qty"])
        try:
            resp = await eng.venue.cancel_order(symbol=eng.symbol, client_order_id=cid)
        except OrderNotFound:            # filled (or cancelled) in the meantime: ask what it is
            found, resp = await eng.lookup_order(cid, what="lookup after a refused cancel")
            if not found:
                return
        except AuthFailed:
            raise
        except ExchangeError as exc:
            log.warning("order %s: cancel at the deadline failed (%s); will retry", cid, exc.message)
            eng.needs_reconcile = True
            return
        if resp is None:
            return
        state = await eng.record_order(resp, row, event="cancel")
        log.info("order %s: %s %s %s timed out: %s of %s filled, rest %s", cid, row["type"], row["side"],
                 row["quantity"], plain(state.executed_qty), row["quantity"],
                 "cancelled" if state.status == "CANCELED" else state.status)
        if state.executed_qty == done:   # no fill to refresh the balances: the cancel freed the reserve
            await eng.try_refresh_balances()

    async def _finish(self, row: dict, rec: dict) -> None:
        left = D(row["quantity"]) - D(row["executed_qty"])
        if self.policy.fallback == "market" and left > 0 and (rec.get("expired") or rec.get("crossed")):
            await self.engine.fallback_market(row, left)
        self._save(None)


__all__ = ["FALLBACKS", "FALLBACK_SUFFIX", "LimitManager", "LimitPolicy"]
