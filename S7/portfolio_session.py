"""Paper-trade several symbols in one process against ONE balance -- live on the spot testnet
(default), live with real money (explicit flag + keys), in a dry-run on live candles, or as a
replay of files -- with the ranking and ``--max-open`` of the S5 portfolio backtest
(:mod:`S5.portfolio_backtest`).

One :class:`S7.engine.Engine` per symbol (the same S4 decision, orders, ledger, reconciliation
and indicators -- informative columns included -- as a single-symbol run) over:

- **one account**: on the testnet / live one :class:`S7.exchange_client.BinanceTradingClient`
  shared by every engine (:class:`LiveAccount` reads its quote balance once per candle time); in a
  dry-run one simulated account (:class:`SharedAccount`: one :class:`S7.matching.MatchingBook`
  holding the quote balance and every base asset; each engine trades through a per-symbol view
  of it, :class:`SymbolVenue`);
- **one kill-switch** fed with the portfolio's equity and every symbol's closed trades;
- **one coordinator** (:class:`Coordinator`): an engine's orders are not sent at once but queued;
  once every symbol's candle of that time was decided, the state is taken as the backtest takes
  it at the close (equity = quote balance + every position at its symbol's close, the free quote
  balance, the slots used: open positions plus entries waiting for their fill), then the exits go
  out, then the queued entries, ranked exactly as the backtest ranks them
  (:func:`S5.portfolio_backtest.rank_key`: trailing return over ``rank_lookback`` closes, then
  symbol name); those beyond ``max_open`` are skipped (``max_open``) and the rest are re-sized in
  that order against that equity and the free cash minus what the entries before them reserved,
  then sent (MARKET). Exits thus wait for the other symbols' candles of the same time (a few
  milliseconds from one database), and entries never see cash an exit of the same close freed --
  as in the backtest, whose fills come at the next open.

:class:`S7.portfolio_live.PortfolioSession` (``python S7/portfolio_executor.py``) runs it on live candles: the
streamer's database of all the symbols (:class:`S7.sources.MultiDbSource`) or REST polls
(:class:`S7.sources.MergedSource`). A candle time is decided once every symbol's candle of it is
in, or ``group_wait`` seconds after the first one arrived (a symbol without a candle then --
an outage -- sits that time out). :func:`replay_portfolio` replays candle frames through the same
coordinator (each time: every symbol's open -- fills --, then every close is marked, then every
symbol's candle, then the orders), which is what ``--replay-days`` runs and what the parity test
compares with the S5 portfolio backtest.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger("S7.portfolio")


def _one_quote(filters: dict) -> str:
    quotes = {f.quote_asset for f in filters.values()}
    if len(quotes) != 1:
        raise UserError(f"one balance needs one quote asset, got {sorted(quotes)}",
                        "trade symbols with the same quote asset together (e.g. all ...USDT)")
    bases = [f.base_asset for f in filters.values()]
    if len(set(bases)) != len(bases):
        raise UserError(f"two symbols share a base asset ({bases})", "list each base asset once")
    return quotes.pop()


class SharedAccount:
    """One simulated spot account for several symbols (all quoted in the same asset); with
    ``state_file`` it persists like the single-symbol dry-run account (restored on restart)."""

    def __init__(self, filters: dict, *, balance: float = 10_000.0, fee_rate: float = 0.001,
                 slippage_bps: float = 0.0, fee_asset: str = "quote", state_file: Path | None = None):
        import json

        from S7.matching import MatchingBook

        self.quote = _one_quote(filters)
        self.filters = dict(filters)
        self.prices: dict[str, Decimal] = {}
        self.now_ms = 0
        self.state_file = Path(state_file) if state_file else None
        self.book = MatchingBook(filters=self.filters, balances={self.quote: balance}, fee_rate=fee_rate,
                                 price_of=lambda s: self.prices.get(s), market_fill="next_price",
                                 clock=lambda: self.now_ms, slippage_bps=slippage_bps, fee_asset=fee_asset)
        self.restored = False
        if self.state_file is not None and self.state_file.exists():
            try:
                snap = json.loads(self.state_file.read_text(encoding="utf-8"))
                self.book.restore(snap["book"])
                self.now_ms = int(snap.get("now_ms", 0))
                self.restored = True
            except (ValueError, KeyError, TypeError) as exc:
                raise UserError(f"the dry-run account {self.state_file} is unreadable ({type(exc).__name__})",
                                "move it away to start a fresh simulated account") from None

    def save(self) -> None:
        if self.state_file is None:
            return
        import json

        from S1.datasets import atomic_write_text

        atomic_write_text(self.state_file, json.dumps({"book": self.book.snapshot(), "now_ms": self.now_ms}))

    def venue(self, symbol: str) -> SymbolVenue:
        return SymbolVenue(self, self.filters[symbol])

    async def refresh(self) -> None:
        """Nothing to read: the simulated book is the account."""

    def balances(self) -> dict[str, Decimal]:
        """Free + locked of every asset."""
        return {b["asset"]: Decimal(b["free"]) + Decimal(b["locked"]) for b in self.book.account()["balances"]}

    def quote_total(self) -> float:
        return float(self.balances().get(self.quote, Decimal(0)))

    def free_quote(self) -> float:
        for b in self.book.account()["balances"]:
            if b["asset"] == self.quote:
                return float(Decimal(b["free"]))
        return 0.0


class LiveAccount:
    """The quote balance of the one exchange account every engine trades (testnet / live): read
    with ``GET /api/v3/account`` once per candle time (:meth:`refresh`), before anything is decided."""

    def __init__(self, venue, filters: dict):
        self.venue = venue
        self.quote = _one_quote(filters)
        self.filters = dict(filters)
        self._free = self._locked = Decimal(0)
        self.reads = 0

    async def refresh(self) -> None:
        from S7.exchange_client import ExchangeError

        try:
            acct = await self.venue.account()
        except ExchangeError as exc:
            log.warning("account not re-read (%s): the last balance is used", exc.message)
            return
        self.reads += 1
        for b in acct.get("balances", []):
            if b.get("asset") == self.quote:
                self._free, self._locked = Decimal(str(b["free"])), Decimal(str(b["locked"]))

    def quote_total(self) -> float:
        return float(self._free + self._locked)

    def free_quote(self) -> float:
        return float(self._free)


class SymbolVenue(SimulatedExchange):
    """A one-symbol view of a :class:`SharedAccount` (the simulator's API, the shared book)."""

    def __init__(self, account: SharedAccount, filters):
        self.shared = account
        self.filters = filters
        self.symbol = filters.symbol
        self.name = f"dry-run simulator ({filters.symbol}, shared account)"
        self.state_file = None
        self.book = account.book
        self.restored = False

    def _save(self) -> None:
        self.shared.save()

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
    """Queues the engines' orders of one candle time; :meth:`flush` sends the exits, then the
    ranked entries ``max_open`` allows (see the module docstring)."""

    def __init__(self, account, *, max_open: int, rank_lookback: int = 24):
        if isinstance(max_open, bool) or not isinstance(max_open, int) or max_open < 1:
            raise UserError(f"--max-open must be a whole number >= 1, got {max_open!r}", "e.g. --max-open 2")
        self.account, self.max_open, self.rank_lookback = account, max_open, int(rank_lookback)
        self.engines: dict[str, PortfolioEngine] = {}
        self.closes: dict[str, float] = {}
        self.queue: list[tuple] = []
        self.exits: list[tuple] = []
        self.reserved = 0.0
        self.skips: Counter = Counter()
        self.most_open = 0

    def mark(self, symbol: str, close: float) -> None:
        self.closes[symbol] = float(close)

    def equity(self) -> float:
        """The quote balance (free + locked) + every symbol's position (and its dust) at its latest close."""
        eq = self.account.quote_total()
        for s, e in self.engines.items():
            pos = e.store.position(s)
            q = float(pos.qty + pos.dust)
            if q:
                px = self.closes.get(s) or float(e.last_price or 0.0)
                eq += q * px
        return eq

    def busy(self) -> int:
        """Symbols holding a position or waiting for an order's fill."""
        return sum(1 for s, e in self.engines.items() if e.store.position(s).is_open or e.store.unresolved(s))

    async def flush(self) -> None:
        """The state at the close, then the exits, then the ranked entries with a slot (sized in rank order)."""
        from S4.decide import size_entry
        from S7.orders import plain

        queue, self.queue = self.queue, []
        exits, self.exits = self.exits, []
        queue.sort(key=lambda q: q[0])
        busy = self.busy()          # a position exiting now still holds its slot (its fill comes later)
        self.reserved = 0.0
        eq = self.equity() if queue else 0.0
        cash = self.account.free_quote()   # before this batch's orders lock or free any of it (no double count)
        for eng, d, qty, price, reason, at, kw in exits:
            await Engine._send(eng, d, "SELL", qty, price, reason, at, **kw)
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
        self.most_open = max(self.most_open, self.busy())


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
        if kw.get("cid") is None and side == "BUY":
            d.action = "queued"
            self.coordinator.queue.append((rank_key(self.score(), self.symbol), self, d, float(price), reason, at,
                                           self._last_ind))
            return
        if kw.get("cid") is None and side == "SELL" and at is not None:     # a decision at the close
            d.action, d.reason = "queued", reason
            self.coordinator.exits.append((self, d, qty, price, reason, at, kw))
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


__all__ = ["Coordinator", "LiveAccount", "PortfolioEngine", "SharedAccount", "SymbolVenue", "replay_portfolio"]
