"""Paper-trade several symbols in one process against ONE balance (dry-run), with the ranking
and ``--max-open`` of the S5 portfolio backtest (:mod:`S5.portfolio_backtest`).

One :class:`S7.engine.Engine` per symbol (the same S4 decision, orders, ledger and
reconciliation as a single-symbol run) over:

- **one simulated account** (:class:`SharedAccount`: one :class:`S7.matching.MatchingBook` holding
  the quote balance and every base asset; each engine gets a per-symbol view of it,
  :class:`SymbolVenue`, so all engines spend the same cash);
- **one kill-switch** fed with the portfolio's equity and every symbol's closed trades;
- **one coordinator** (:class:`Coordinator`): an engine's entry is not sent at once but queued;
  once every symbol's candle of that time was decided, the queued entries are ranked exactly
  as the backtest ranks them (:func:`S5.portfolio_backtest.rank_key`: trailing return over
  ``rank_lookback`` closes, then symbol name), those beyond ``max_open`` (open positions plus
  entries waiting for their fill count) are skipped (``max_open``), and the rest are re-sized in
  that order against the portfolio equity (cash + every position at its latest close) and the
  free cash minus what the entries before them reserved, then sent (MARKET, filled at the next
  price of their symbol).

:func:`replay_portfolio` replays candle frames through it (each time: every symbol's open --
fills --, then every close is marked, then every symbol's candle, then the ranked entries),
which is what ``python S7/portfolio_executor.py --dry-run`` runs and what the parity test
compares with the S5 portfolio backtest.
"""

from __future__ import annotations

import math
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from S1.errors import UserError
from S5.portfolio_backtest import rank_key
from S7.engine import Engine
from S7.simulator import SimulatedExchange


class SharedAccount:
    """One simulated spot account for several symbols (all quoted in the same asset)."""

    def __init__(self, filters: dict, *, balance: float = 10_000.0, fee_rate: float = 0.001,
                 slippage_bps: float = 0.0, fee_asset: str = "quote"):
        from S7.matching import MatchingBook

        quotes = {f.quote_asset for f in filters.values()}
        if len(quotes) != 1:
            raise UserError(f"one balance needs one quote asset, got {sorted(quotes)}",
                            "trade symbols with the same quote asset together (e.g. all ...USDT)")
        bases = [f.base_asset for f in filters.values()]
        if len(set(bases)) != len(bases):
            raise UserError(f"two symbols share a base asset ({bases})", "list each base asset once")
        self.quote = quotes.pop()
        self.filters = dict(filters)
        self.prices: dict[str, Decimal] = {}
        self.now_ms = 0
        self.book = MatchingBook(filters=self.filters, balances={self.quote: balance}, fee_rate=fee_rate,
                                 price_of=lambda s: self.prices.get(s), market_fill="next_price",
                                 clock=lambda: self.now_ms, slippage_bps=slippage_bps, fee_asset=fee_asset)

    def venue(self, symbol: str) -> SymbolVenue:
        return SymbolVenue(self, self.filters[symbol])

    def balances(self) -> dict[str, Decimal]:
        """Free + locked of every asset."""
        return {b["asset"]: Decimal(b["free"]) + Decimal(b["locked"]) for b in self.book.account()["balances"]}

    def free_quote(self) -> float:
        for b in self.book.account()["balances"]:
            if b["asset"] == self.quote:
                return float(Decimal(b["free"]))
        return 0.0


class SymbolVenue(SimulatedExchange):
    """A one-symbol view of a :class:`SharedAccount` (the simulator's API, the shared book)."""

    def __init__(self, account: SharedAccount, filters):   # noqa: D107 - no own book: the account's
        self.shared = account
        self.filters = filters
        self.symbol = filters.symbol
        self.name = f"dry-run simulator ({filters.symbol}, shared account)"
        self.state_file = None
        self.book = account.book
        self.restored = False

    @property
    def now_ms(self) -> int:
        return self.shared.now_ms

    @now_ms.setter
    def now_ms(self, value: int) -> None:
        self.shared.now_ms = max(self.shared.now_ms, int(value))

    @property
    def last_price(self):
        return self.shared.prices.get(self.symbol)

    @last_price.setter
    def last_price(self, value) -> None:
        if value is not None:
            self.shared.prices[self.symbol] = value


class Coordinator:
    """Queues the engines' entries of one candle time, ranks them, sends what ``max_open`` allows."""

    def __init__(self, account: SharedAccount, *, max_open: int, rank_lookback: int = 24):
        if isinstance(max_open, bool) or not isinstance(max_open, int) or max_open < 1:
            raise UserError(f"--max-open must be a whole number >= 1, got {max_open!r}", "e.g. --max-open 2")
        self.account, self.max_open, self.rank_lookback = account, max_open, int(rank_lookback)
        self.engines: dict[str, PortfolioEngine] = {}
        self.closes: dict[str, float] = {}
        self.queue: list[tuple] = []
        self.reserved = 0.0
        self.skips: Counter = Counter()

    def mark(self, symbol: str, close: float) -> None:
        self.closes[symbol] = float(close)

    def equity(self) -> float:
        """Cash + every base asset held at its symbol's latest close."""
        bal = self.account.balances()
        eq = float(bal.get(self.account.quote, Decimal(0)))
        for s, f in self.account.filters.items():
            q = float(bal.get(f.base_asset, Decimal(0)))
            if q:
                px = self.closes.get(s) or float(self.account.prices.get(s) or 0.0)
                eq += q * px
        return eq

    def busy(self) -> int:
        """Symbols holding a position or waiting for an order's fill."""
        return sum(1 for s, e in self.engines.items() if e.store.position(s).is_open or e.store.unresolved(s))

    async def flush(self) -> None:
        """Rank the queued entries, send the ones with a slot (sized in rank order)."""
        from S4.decide import size_entry
        from S7.orders import plain

        queue, self.queue = self.queue, []
        queue.sort(key=lambda q: q[0])
        busy = self.busy()
        self.reserved = 0.0
        eq = self.equity()
        cash = self.account.free_quote()   # before this batch's orders lock any of it (no double count)
        for _, eng, d, close, reason, at, ind in queue:
            if busy >= self.max_open:
                self.skips["max_open"] += 1
                d.action, d.reason = "skipped", "max_open"
                continue
            free = cash - self.reserved
            size = size_entry(equity=eq, cash=free, price=close, atr=eng._atr(ind), risk=eng.risk, filters=eng.filters,
                              fee_buffer=eng.cfg.fee_buffer)
            if not size.ok:
                self.skips[size.refused or "sizing"] += 1
                d.action, d.reason = "skipped", size.refused or "sizing"
                continue
            self.reserved += size.qty * close * (1.0 + eng.cfg.fee_buffer)
            await Engine._send(eng, d, "BUY", plain(size.extra["check"].qty), close, reason, at,
                               stop_distance=size.stop_distance, tp_distance=size.tp_distance)
            busy += 1


class PortfolioEngine(Engine):
    """An S7 engine whose equity is the portfolio's and whose entries go through the coordinator."""

    def __init__(self, *args, coordinator: Coordinator, **kw):
        super().__init__(*args, **kw)
        self.coordinator = coordinator
        coordinator.engines[self.symbol] = self
        self._last_ind: dict = {}

    def equity(self, price: float) -> float:
        return self.coordinator.equity()

    def _size(self, ind, equity, price):
        self._last_ind = ind
        from S4.decide import size_entry

        free = self.coordinator.account.free_quote()
        return size_entry(equity=equity, cash=free, price=price, atr=self._atr(ind), risk=self.risk,
                          filters=self.filters, fee_buffer=self.cfg.fee_buffer)

    def score(self) -> float:
        c = self._w["close"]
        L = self.coordinator.rank_lookback
        return float(c[-1] / c[-1 - L] - 1.0) if 0 < L < len(c) else math.nan

    async def _send(self, d, side, qty, price, reason, at, **kw):
        if side == "BUY" and kw.get("cid") is None:
            d.action = "queued"
            self.coordinator.queue.append((rank_key(self.score(), self.symbol), self, d, float(price), reason, at,
                                           self._last_ind))
            return
        await super()._send(d, side, qty, price, reason, at, **kw)


async def replay_portfolio(frames: dict[str, pd.DataFrame], *, interval: str, rules: dict, risk, filters: dict,
                           state_dir: Path, max_open: int, rank_lookback: int = 24, use_stops: bool = True,
                           balance: float = 10_000.0, fee_rate: float = 0.001, fee_asset: str = "quote",
                           slippage_bps: float = 0.0) -> dict[str, Any]:
    """Replay every symbol's candles through one :class:`PortfolioEngine` each (see the module
    docstring). ``rules``/``filters``: per symbol. Returns the trades (with ``symbol``), the
    order statuses, the skipped entries and the final equity."""
    from S6.killswitch import KillSwitch
    from S7.engine import EngineConfig
    from S7.feeds import FrameFeed
    from S7.ledger import Ledger
    from S7.order_log import OrderLog
    from S7.paper_replay import candle_frame, paper_trades
    from S7.session import _min_tradable
    from S7.store import ExecutorStore

    state_dir.mkdir(parents=True, exist_ok=True)
    account = SharedAccount(filters, balance=balance, fee_rate=fee_rate, slippage_bps=slippage_bps,
                            fee_asset=fee_asset)
    coord = Coordinator(account, max_open=max_open, rank_lookback=rank_lookback)
    store = ExecutorStore(state_dir / "paper.db")
    order_log = OrderLog(state_dir / "orders.jsonl", mode="dry-run portfolio replay", simulated=True)
    ks = KillSwitch(risk, path=state_dir / "kill_switch.json")
    prepared = {s: candle_frame(f, interval) for s, f in frames.items()}
    engines: dict[str, PortfolioEngine] = {}
    try:
        for s, frame in prepared.items():
            r = rules[s]
            feats = [c for c in r.required_columns() if c in frame.columns]
            atr_col = f"atr{risk.stops.atr_period}"
            if atr_col in frame.columns and atr_col not in feats:
                feats.append(atr_col)
            venue = account.venue(s)
            ledger = Ledger(store, order_log, symbol=s, interval=interval, base_asset=filters[s].base_asset,
                            quote_asset=filters[s].quote_asset, min_tradable=_min_tradable(filters[s]),
                            clock_ms=lambda: account.now_ms)
            engines[s] = PortfolioEngine(
                EngineConfig(symbol=s, interval=interval, mode="dry-run", strategy="portfolio",
                             window=max(r.lookback() + 3, 10, rank_lookback + 2), max_candle_age_s=0,
                             use_stops=use_stops),
                rules=r, venue=venue, ledger=ledger, filters=filters[s], kill_switch=ks, risk=risk,
                features=FrameFeed(frame, feats), coordinator=coord)
        for e in engines.values():
            await e.start()
        # the union of bar times; each symbol acts on its own bars only
        rows = []
        for s, f in prepared.items():
            rows.append(pd.DataFrame({"t": f.index.as_unit("ms").asi8, "s": s, "i": np.arange(len(f))}))
        ev = pd.concat(rows).sort_values(["t", "s"], kind="stable")
        order = list(prepared)
        for t, grp in ev.groupby("t", sort=True):
            present = sorted(zip(grp["s"], grp["i"]), key=lambda x: order.index(x[0]))
            for s, i in present:
                await engines[s].on_price(float(prepared[s]["open"].iloc[i]), int(t))
            for s, i in present:
                coord.mark(s, float(prepared[s]["close"].iloc[i]))
            for s, i in present:
                f = prepared[s]
                close_ms = int(f["close_time"].iloc[i].value // 1_000_000)
                await engines[s].on_candle(f.iloc[i:i + 1], close_ms + 1)
            await coord.flush()
        trades = []
        for s, f in prepared.items():
            for tr in paper_trades(store, s, last_close=float(f["close"].iloc[-1]),
                                   last_open_ms=int(f.index[-1].value // 1_000_000)):
                trades.append({"symbol": s, **tr})
        trades.sort(key=lambda x: (x["exit_time"], x["symbol"]))
        return {"trades": trades, "skipped": dict(coord.skips), "equity": coord.equity(),
                "orders": dict(Counter(r["status"] for s in prepared for r in store.orders(s))),
                "candles": {s: len(f) for s, f in prepared.items()}}
    finally:
        store.close()


__all__ = ["Coordinator", "PortfolioEngine", "SharedAccount", "SymbolVenue", "replay_portfolio"]
