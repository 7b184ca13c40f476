"""The dry-run exchange: a local fill simulator with the executor's exchange API,
no keys and no network.

:class:`SimulatedExchange` answers the same calls as the testnet client
(:class:`S7.exchange_client.BinanceTradingClient`) with Binance-shaped payloads and
the same typed errors, so the engine, the reconciliation and the order log run
the very code paths they run against the testnet. Underneath is the
:class:`S7.matching.MatchingBook` in ``next_price`` mode:

- an order is checked against the symbol's **real filters** (``-1013``) and the
  simulated balance (``-2010``) when it is sent, and accepted as ``NEW``;
- a MARKET order fills at the **next price** the market shows after it was sent
  (:meth:`SimulatedExchange.on_price`: the next candle's open in a replay, the
  streamer's in-progress candle in a live dry-run), optionally ``slippage_bps``
  worse, with the commission ``fee_rate`` charged in the asset received, as
  Binance does (BUY: base, SELL: quote);
- a LIMIT order (GTC) fills at once when marketable (taker, at the current price),
  otherwise it rests and fills **at its limit** when a later price crosses it
  (maker) -- all of it, or only the ``qty`` that price event carries (a partial
  fill); a ``LIMIT_MAKER`` (post-only) order that would be marketable is refused
  with ``-2010``, as Binance does (``fee_asset="quote"``: the commission is paid in the
  quote asset instead, as S5's backtest books it -- Binance's BNB-fee accounts do the
  like; :mod:`S5.parity_check` uses it). The same :class:`~S7.matching.MatchingBook`
  runs the local test exchange, so one price path gives the same fills on both;
- the account (balances, orders, trades) is saved after every change to a JSON
  file beside the executor state, so a restarted dry-run finds what it left.

>>> import asyncio
>>> from S6.filters import SymbolFilters
>>> from S7.orders import D
>>> f = SymbolFilters(symbol="BTCUSDT", base_asset="BTC", quote_asset="USDT", tick_size=D("0.01"),
...                   step_size=D("0.00001"), min_qty=D("0.00001"), min_notional=D("10"))
>>> sim = SimulatedExchange(f, balance=1000)
>>> sim.on_price(20000, 1_000)
[]
>>> r = asyncio.run(sim.new_order(symbol="BTCUSDT", side="BUY", type="MARKET", quantity="0.01",
...                               newClientOrderId="s7-x"))
>>> r["status"], [t["price"] for t in sim.on_price(20100, 2_000)]
('NEW', ['20100.00000000'])
>>> asyncio.run(sim.get_order(symbol="BTCUSDT", client_order_id="s7-x"))["status"]
'FILLED'
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from S6.filters import SymbolFilters
from S7.config import DEFAULT_BALANCE, DEFAULT_FEE_RATE
from S7.exchange_client import classify
from S7.matching import BookError, MatchingBook
from S7.orders import D

log = logging.getLogger(__name__)



class SimulatedExchange:
    """The dry-run venue for one symbol (see the module docstring)."""

    recv_window_s = 0.0

    def __init__(self, filters: SymbolFilters, *, balance: float = DEFAULT_BALANCE,
                 balances: dict[str, Any] | None = None, fee_rate: float = DEFAULT_FEE_RATE,
                 slippage_bps: float = 0.0, state_file: str | Path | None = None, fee_asset: str = "received"):
        if not filters.base_asset or not filters.quote_asset:
            raise ValueError("the simulator needs the symbol's base and quote assets (exchangeInfo)")
        if balance < 0 or fee_rate < 0 or fee_rate >= 0.05 or slippage_bps < 0:
            raise ValueError("balance >= 0, 0 <= fee_rate < 0.05 and slippage_bps >= 0 are required")
        self.filters = filters
        self.symbol = filters.symbol
        self.name = f"dry-run simulator ({filters.symbol}, fee {fee_rate:.2%})"
        self.now_ms = 0
        self.last_price: Any = None
        self.state_file = Path(state_file) if state_file else None
        self.book = MatchingBook(filters={filters.symbol: filters},
                                 balances=balances if balances is not None else {filters.quote_asset: balance},
                                 fee_rate=fee_rate, price_of=lambda s: self.last_price, market_fill="next_price",
                                 clock=lambda: self.now_ms, slippage_bps=slippage_bps, fee_asset=fee_asset)
        self.restored = False
        if self.state_file and self.state_file.exists():
            try:
                snap = json.loads(self.state_file.read_text(encoding="utf-8"))
                self.book.restore(snap["book"])
                self.now_ms = int(snap.get("now_ms", 0))
                self.last_price = D(snap["last_price"]) if snap.get("last_price") else None
                self.restored = True
            except (ValueError, KeyError, TypeError) as exc:
                from S1.errors import UserError

                raise UserError(f"the dry-run account {self.state_file} is unreadable ({type(exc).__name__})",
                                "move it away to start a fresh simulated account") from None

    # ------------------------------------------------------------------ market
    def on_price(self, price: Any, t_ms: int, qty: Any = None) -> list[dict]:
        """The market traded at ``price`` at ``t_ms``: fill what was waiting (a MARKET order
        at this price, a resting LIMIT order this price crosses, at its limit; ``qty``: the
        quantity traded there, None = unlimited). Returns the new trades."""
        self.now_ms = max(self.now_ms, int(t_ms))
        self.last_price = D(price)
        trades = self.book.on_price(self.symbol, self.last_price, qty)
        if trades:
            self._save()
        return trades

    def set_time(self, t_ms: int) -> None:
        self.now_ms = max(self.now_ms, int(t_ms))

    def _save(self) -> None:
        if self.state_file is None:
            return
        from S1.datasets import atomic_write_text

        snap = {"book": self.book.snapshot(), "now_ms": self.now_ms,
                "last_price": None if self.last_price is None else str(self.last_price)}
        atomic_write_text(self.state_file, json.dumps(snap))

    def _call(self, what: str, fn, *args):
        try:
            return fn(*args)
        except BookError as exc:
            raise classify(exc.http_status, json.dumps(exc.body()), what=what) from None

    # -------------------------------------------------------------- venue API
    async def sync_time(self) -> int:
        return 0

    async def server_time_ms(self) -> int:
        return self.now_ms

    async def symbol_info(self, symbol: str) -> dict:
        if symbol != self.symbol:
            raise classify(400, json.dumps({"code": -1121, "msg": "Invalid symbol."}), what="exchangeInfo")
        return self.filters.raw or {"symbol": symbol, "status": self.filters.status,
                                    "baseAsset": self.filters.base_asset, "quoteAsset": self.filters.quote_asset}

    async def new_order(self, **params) -> dict:
        params.pop("newOrderRespType", None)
        out = self._call("POST v3/order", self.book.new_order, {k: str(v) for k, v in params.items()})
        self._save()
        return out

    async def test_order(self, **params) -> dict:
        return self._call("POST v3/order/test", self.book.test_order, {k: str(v) for k, v in params.items()})

    async def get_order(self, *, symbol: str, client_order_id: str) -> dict | None:
        try:
            return self.book.query({"symbol": symbol, "origClientOrderId": client_order_id})
        except BookError as exc:
            if exc.code == -2013:
                return None
            raise classify(exc.http_status, json.dumps(exc.body()), what="GET v3/order") from None

    async def cancel_order(self, *, symbol: str, client_order_id: str) -> dict:
        out = self._call("DELETE v3/order", self.book.cancel, {"symbol": symbol, "origClientOrderId": client_order_id})
        self._save()
        return out

    async def open_orders(self, *, symbol: str | None = None) -> list[dict]:
        return self.book.open_orders({"symbol": symbol} if symbol else {})

    async def account(self) -> dict:
        return self.book.account()

    async def my_trades(self, *, symbol: str, from_id: int | None = None, start_ms: int | None = None,
                        order_id: int | None = None, limit: int = 1000) -> list[dict]:
        params: dict[str, Any] = {"symbol": symbol, "limit": limit}
        if order_id is not None:
            params["orderId"] = order_id
        elif from_id is not None:
            params["fromId"] = from_id
        elif start_ms is not None:
            params["startTime"] = start_ms
        return self._call("GET v3/myTrades", self.book.my_trades, params)

    async def close(self) -> None:
        self._save()

    async def __aenter__(self) -> "SimulatedExchange":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()


__all__ = ["DEFAULT_BALANCE", "DEFAULT_FEE_RATE", "SimulatedExchange"]
