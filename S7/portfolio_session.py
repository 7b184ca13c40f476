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

:class:`PortfolioSession` (``python S7/portfolio_executor.py``) runs it on live candles: the
streamer's database of all the symbols (:class:`S7.sources.MultiDbSource`) or REST polls
(:class:`S7.sources.MergedSource`). A candle time is decided once every symbol's candle of it is
in, or ``group_wait`` seconds after the first one arrived (a symbol without a candle then --
an outage -- sits that time out). :func:`replay_portfolio` replays candle frames through the same
coordinator (each time: every symbol's open -- fills --, then every close is marked, then every
symbol's candle, then the orders), which is what ``--replay-days`` runs and what the parity test
compares with the S5 portfolio backtest.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass, field
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

    def __init__(self, account: SharedAccount, filters):   # noqa: D107 - no own book: the account's
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


# ------------------------------------------------------------------------- live session
@dataclass(frozen=True)
class PortfolioConfig:
    """A live portfolio session (frozen; checked by :meth:`PortfolioSession.check`)."""

    symbols: tuple[str, ...]
    interval: str = "1h"
    rules: str | Path = "S4/rules.yaml"        #: one rule file, or a YAML map as S5/portfolio.py takes
    max_open: int = 1
    mode: str = "testnet"
    i_understand_real_money: bool = False
    rank_lookback: int = 24
    source: str = "db"
    db: Path | None = None
    poll: float = 0.02
    duration: float | None = None
    window: int | None = None
    risk_config: Path | None = None
    balance: float = 10_000.0                  #: dry-run: the simulated account's quote cash
    fee_rate: float = 0.001                    #: dry-run
    slippage_bps: float = 0.0                  #: dry-run
    exchange_info: Path | None = None          #: dry-run: the filters
    use_stops: bool = True
    flatten_on_trip: bool | None = None
    max_candle_age_s: float | None = None
    recv_window_ms: int = 5000
    group_wait: float = 5.0                    #: seconds a candle time waits for the other symbols' candles
    name: str | None = None
    state_dir: Path | None = None              #: default data/state
    order_log: Path | None = None              #: default data/orders.jsonl

    @property
    def label(self) -> str:
        syms = [str(x).lower() for x in self.symbols]
        return self.name or "_".join(syms[:4]) + (f"_{len(syms)}" if len(syms) > 4 else "")


def session_trades(store, symbols, interval: str) -> list[dict[str, Any]]:
    """The round trips of a session from its orders and fills: per symbol, a filled BUY and the
    SELL after it; ``entry_signal`` / ``exit_signal`` are the open times (ISO) of the candles that
    decided them (what the backtest's ``entry_bar - 1`` / ``exit_bar - 1`` are), prices the average
    fills, ``qty`` what the BUY bought. An open position is a trade without ``exit_*``."""
    out = []
    for s in symbols:
        fills: dict[str, list[dict]] = {}
        for f in store.fills(s):
            fills.setdefault(f["client_order_id"], []).append(f)
        cur = None
        for o in sorted(store.orders(s), key=lambda o: (o["created_ms"], o["client_order_id"])):
            fs = fills.get(o["client_order_id"])
            if not fs:
                continue
            q = sum(Decimal(f["qty"]) for f in fs)
            px = float(sum(Decimal(f["qty"]) * Decimal(f["price"]) for f in fs) / q)
            sig = None if o.get("candle_open_ms") is None else pd.Timestamp(int(o["candle_open_ms"]), unit="ms",
                                                                           tz="UTC").isoformat()
            if o["side"] == "BUY":
                cur = {"symbol": s, "entry_signal": sig, "entry_price": px, "qty": float(q),
                       "entry_reason": o.get("reason")}
            elif cur is not None:
                out.append({**cur, "exit_signal": sig, "exit_price": px, "exit_reason": o.get("reason")})
                cur = None
        if cur is not None:
            out.append(cur)
    return out


class PortfolioSession:
    """Several symbols' engines on live candles against one account (see the module docstring).
    :meth:`run` until ``stop`` is set, ``duration`` passes or the source ends; ``groups`` counts the
    candle times decided, ``last_group_ms`` is the latest one (tests wait on them)."""

    def __init__(self, cfg: PortfolioConfig, *, settings=None, stop: asyncio.Event | None = None,
                 progress: bool = True):
        from S1.settings import get_settings

        self.cfg = cfg
        self.settings = settings or get_settings()
        self.stop = stop or asyncio.Event()
        self.progress = progress
        self.groups = 0
        self.last_group_ms: int | None = None
        self.engines: dict[str, PortfolioEngine] = {}
        self.coordinator: Coordinator | None = None
        self.store = None
        self.lines: list[str] = []
        self.checks: list[dict] = []       #: after every candle time: positions open, free quote (invariants)

    def check(self):
        """Every per-symbol setting checked as the single-symbol executor checks it (one line each)."""
        from S1.intervals import check_interval
        from S5.portfolio_files import parse_symbols, rules_map
        from S7.config import SessionConfig, check_config

        cfg = self.cfg
        syms = parse_symbols(list(cfg.symbols))
        check_interval(cfg.interval)
        if cfg.source not in ("db", "rest"):
            raise UserError(f"unknown --source {cfg.source!r}", "use db or rest")
        if not 0 <= cfg.group_wait <= 600:
            raise UserError(f"--group-wait must be in [0, 600] seconds, got {cfg.group_wait:g}", "e.g. --group-wait 5")
        if cfg.rank_lookback < 1:
            raise UserError(f"--rank-lookback must be >= 1, got {cfg.rank_lookback}", "e.g. --rank-lookback 24")
        Coordinator(None, max_open=cfg.max_open)      # --max-open checked in one line
        table = rules_map(cfg.rules, syms)
        return syms, {s: check_config(SessionConfig(
            symbol=s, interval=cfg.interval, rules=Path(table[s]), mode=cfg.mode,
            i_understand_real_money=cfg.i_understand_real_money, source=cfg.source, db=cfg.db, duration=cfg.duration,
            poll=cfg.poll, window=cfg.window, risk_config=cfg.risk_config, balance=cfg.balance, fee_rate=cfg.fee_rate,
            slippage_bps=cfg.slippage_bps, recv_window_ms=cfg.recv_window_ms, max_candle_age_s=cfg.max_candle_age_s,
            exchange_info=cfg.exchange_info, use_stops=cfg.use_stops, flatten_on_trip=cfg.flatten_on_trip),
            self.settings) for s in syms}

    async def run(self) -> dict[str, Any]:
        from S1.datasets import orders_log_path, realtime_db_path, state_path
        from S1.errors import NetworkError
        from S6.alerts import WebhookAlerter
        from S6.killswitch import KillSwitch
        from S7.exchange_client import AuthFailed, BinanceTradingClient, ExchangeError
        from S7.ledger import Ledger
        from S7.order_log import OrderLog
        from S7.session import (
            _auth_error,
            _min_tradable,
            default_window,
            dry_run_filters,
            exchange_filters,
            load_strategy,
            risk_difference,
        )
        from S7.sources import MergedSource, MultiDbSource, RestPollSource
        from S7.store import ExecutorStore

        cfg, settings = self.cfg, self.settings
        syms, scfgs = self.check()
        strat = {s: load_strategy(c) for s, c in scfgs.items()}
        risk = strat[syms[0]][2]
        warning = risk_difference(scfgs[syms[0]])
        if warning:
            log.warning(warning)
        window = cfg.window or max(default_window(st[1], st[0], cfg.interval) for st in strat.values())
        window = max(window, cfg.rank_lookback + 2)
        tag = {"dry-run": "dryrun"}.get(cfg.mode, cfg.mode)
        sdir = Path(cfg.state_dir) if cfg.state_dir else state_path("")
        sdir.mkdir(parents=True, exist_ok=True)
        base = f"s7_{tag}_portfolio_{cfg.label}_{cfg.interval}"
        # -- candles
        if cfg.source == "rest":
            source: Any = MergedSource({s: RestPollSource(s, cfg.interval, settings=settings, poll=max(cfg.poll, 1.0))
                                        for s in syms})
        else:
            source = MultiDbSource(cfg.db or realtime_db_path(syms, cfg.interval), syms, cfg.interval, poll=cfg.poll)
        history = await source.history(window)
        log.info("candles: %s (%s closed candles of warm-up)", source.description,
                 ", ".join(f"{s} {len(h)}" for s, h in history.items()))
        # -- the account
        secrets: tuple[str, ...] = ()
        client = None
        if cfg.mode == "dry-run":
            filters = {}
            for s in syms:
                h = history[s]
                filters[s], origin = await dry_run_filters(s, settings, file=cfg.exchange_info,
                                                           price=float(h["close"].iloc[-1]) if len(h) else None)
            account: Any = SharedAccount(filters, balance=cfg.balance, fee_rate=cfg.fee_rate,
                                         slippage_bps=cfg.slippage_bps, fee_asset="received",
                                         state_file=sdir / f"{base}.sim.json")
            venues = {s: account.venue(s) for s in syms}
            for s in syms:
                if len(history[s]) and venues[s].last_price is None:
                    venues[s].on_price(float(history[s]["close"].iloc[-1]),
                                       int(history[s].index[-1].value // 1_000_000))
        else:
            testnet = cfg.mode == "testnet"
            key = settings.binance_testnet_api_key if testnet else settings.binance_api_key
            secret = settings.binance_testnet_api_secret if testnet else settings.binance_api_secret
            url = settings.binance_testnet_api_url if testnet else settings.binance_api_url
            secrets = (key.get_secret_value(), secret.get_secret_value())
            client = BinanceTradingClient(base_url=url, api_key=secrets[0], api_secret=secrets[1],
                                          timeout=settings.http_timeout, recv_window_ms=cfg.recv_window_ms,
                                          name=f"{cfg.mode} {url}")
        self.store = store = ExecutorStore(sdir / f"{base}.db")
        simulated = bool(settings.simulated_market or (cfg.mode == "dry-run" and settings.is_local))
        order_log = OrderLog(Path(cfg.order_log) if cfg.order_log else orders_log_path(),
                             mode=f"{cfg.mode} portfolio", extra_secrets=secrets, simulated=simulated)
        try:
            if client is not None:
                try:
                    await client.sync_time()
                    filters = {s: await exchange_filters(client, s) for s in syms}
                except ExchangeError as exc:
                    if isinstance(exc, AuthFailed):
                        raise _auth_error(exc, cfg.mode) from None
                    raise NetworkError(f"cannot reach {client.name} ({exc.message})",
                                       "check the connection and the URL in .env") from None
                account = LiveAccount(client, filters)
                venues = {s: client for s in syms}
            alerter = WebhookAlerter.from_settings(settings, config=risk.alerts)
            ks = KillSwitch(risk, path=sdir / f"kill_switch_{tag}_portfolio_{cfg.label}.json")
            self.coordinator = coord = Coordinator(account, max_open=cfg.max_open, rank_lookback=cfg.rank_lookback)
            clock = (lambda: account.now_ms) if cfg.mode == "dry-run" else None
            for s in syms:
                rules, indicators, _, sentiment, rtag = strat[s]
                # its own client ids: a single-symbol executor of the same rules on the account never collides
                stag = f"portfolio:{cfg.label}:{rtag}"
                ledger = Ledger(store, order_log, symbol=s, interval=cfg.interval, base_asset=filters[s].base_asset,
                                quote_asset=filters[s].quote_asset, min_tradable=_min_tradable(filters[s]),
                                clock_ms=clock)
                self.engines[s] = PortfolioEngine(
                    engine_config_for(s, cfg, stag, window), rules=rules, venue=venues[s], ledger=ledger,
                    filters=filters[s], kill_switch=ks, risk=risk, indicators=indicators, alerter=alerter,
                    sentiment=sentiment, coordinator=coord)
            for s, e in self.engines.items():
                try:
                    rep = await e.start()
                except AuthFailed as exc:
                    raise _auth_error(exc, cfg.mode) from None
                except ExchangeError as exc:
                    raise NetworkError(f"reconciliation of {s} with {e.venue.name} failed ({exc.message})",
                                       "check the connection; nothing was sent") from None
                for line in rep.lines(filters[s].base_asset, filters[s].quote_asset):
                    log.info("%s %s", s, line)
            pending: dict[int, dict[str, Any]] = {}
            for s in syms:                          # the newest closed candle of each: acted on when fresh
                h = history[s]
                self.engines[s].seed(h.iloc[:-1])
                if len(h):
                    from S7.sources import CandleEvent

                    pending.setdefault(int(h.index[-1].value // 1_000_000), {})[s] = CandleEvent(h.iloc[-1:])
            stopped_by = await self._loop(source, pending)
            return self._summary(stopped_by, source.description, simulated, warning)
        finally:
            store.close()
            await source.close()
            if client is not None:
                await client.close_connection()

    async def _loop(self, source, pending: dict[int, dict[str, Any]]) -> str:
        from S7.sources import CandleEvent, PriceEvent

        cfg = self.cfg
        loop = asyncio.get_running_loop()
        why = ["end of data"]
        timer = None
        if cfg.duration is not None:
            def _timeout():
                why[0] = f"--duration {cfg.duration:g}s"
                self.stop.set()
            timer = loop.call_later(cfg.duration, _timeout)
        first_seen = {t: time.monotonic() for t in pending}
        try:
            await self._ready(pending, first_seen, force=True)
            async for sym, ev in source.events(self.stop):
                if isinstance(ev, PriceEvent):
                    await self.engines[sym].on_price(ev.price, ev.t_ms)
                elif isinstance(ev, CandleEvent):
                    pending.setdefault(ev.open_ms, {})[sym] = ev
                    first_seen.setdefault(ev.open_ms, time.monotonic())
                await self._ready(pending, first_seen)
                if self.stop.is_set():
                    break
        finally:
            if timer is not None:
                timer.cancel()
        if self.stop.is_set() and why[0] == "end of data":
            why[0] = "stop signal"
        return why[0]

    async def _ready(self, pending: dict, first_seen: dict, *, force: bool = False) -> None:
        """Decide the candle times whose candles are all in (oldest first), or whose wait is over."""
        n = len(self.engines)
        while pending:
            t = min(pending)
            grp = pending[t]
            missing = [s for s in self.engines if s not in grp]
            later = all(any(s in g for tt, g in pending.items() if tt > t) for s in missing)
            if not (force or not missing or later or time.monotonic() - first_seen[t] >= self.cfg.group_wait):
                return
            del pending[t]
            first_seen.pop(t, None)
            await self.decide(t, grp)
            if len(grp) < n:
                log.info("candle %s: no candle of %s (decided without it)", _iso(t), ", ".join(missing))

    async def decide(self, t: int, grp: dict[str, Any]) -> None:
        """One candle time: the account read, every close marked, every symbol's candle decided,
        then the coordinator's exits and ranked entries; one heartbeat line per symbol."""
        from S7.heartbeat import heartbeat_line

        coord = self.coordinator
        present = [s for s in self.engines if s in grp]
        await coord.account.refresh()
        for s in present:
            coord.mark(s, float(grp[s].candle["close"].iloc[-1]))
        decided = []
        for s in present:
            ev = grp[s]
            decided.append((s, await self.engines[s].on_candle(ev.candle, ev.now_ms), ev.candle))
        await coord.flush()
        for s, d, candle in decided:
            if d is not None and d.action != "seen":
                line = heartbeat_line(self.engines[s], d, candle)
                self.lines.append(line)
                if self.progress:
                    print(line, flush=True)
        self.groups += 1
        self.last_group_ms = t
        self.checks.append({"t": t, "open": coord.busy(), "free_quote": coord.account.free_quote()})

    def _summary(self, stopped_by: str, source: str, simulated: bool, warning: str | None) -> dict[str, Any]:
        coord = self.coordinator
        return {"symbols": list(self.engines), "interval": self.cfg.interval, "mode": self.cfg.mode,
                "max_open": self.cfg.max_open, "simulated": simulated, "source": source, "stopped_by": stopped_by,
                "candle_times": self.groups, "trades": session_trades(self.store, list(self.engines),
                                                                      self.cfg.interval),
                "skipped": dict(coord.skips), "most_open": coord.most_open, "equity": coord.equity(),
                "orders": dict(Counter(r["status"] for s in self.engines for r in self.store.orders(s))),
                "risk_warning": warning}


def engine_config_for(symbol: str, cfg: PortfolioConfig, strategy: str, window: int):
    """The per-symbol :class:`S7.engine.EngineConfig` of a portfolio session."""
    from S7.engine import EngineConfig

    return EngineConfig(symbol=symbol, interval=cfg.interval, mode=cfg.mode, strategy=strategy, window=window,
                        max_candle_age_s=cfg.max_candle_age_s, flatten_on_trip=cfg.flatten_on_trip,
                        use_stops=cfg.use_stops)


def _iso(ms: int) -> str:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")


__all__ = ["Coordinator", "LiveAccount", "PortfolioConfig", "PortfolioEngine", "PortfolioSession", "SharedAccount",
           "SymbolVenue", "replay_portfolio", "session_trades"]
