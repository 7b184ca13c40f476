"""The trading engine: on every closed candle, indicators (S2) on the recent window,
the rules (S4), sizing and the kill-switch (S6), then at most one order.

Per closed candle ``t`` (long only, one position per symbol, MARKET orders -- or
LIMIT orders with a deadline, :mod:`S7.limit_orders`):

1. the candle joins the window (the last ``window`` closed candles); a candle the
   engine already acted on (``last_candle`` in the store: a restart) or one that
   closed longer ago than ``max_candle_age_s`` only updates the window;
2. a reconciliation runs first when one is due (start, after a network failure or
   an order whose outcome stayed unknown); pending orders are looked up; while
   one of ours is unresolved nothing new is sent;
3. :func:`S2.ta.add_indicators` on the window, S3 sentiment joined as-of when the
   rules read it, :func:`S4.evaluate.condition_masks` -> which entry / exit rules
   fire at ``t``;
4. the equity (quote balance + the position at the close) feeds the persisted
   :class:`S6.killswitch.KillSwitch`;
5. S4's one decision function, :func:`S4.decide.decide` (the one S5's backtest uses:
   ``python S5/parity.py`` proves both trade the same) -- long: SELL everything on
   the stop-loss (low <= stop), the take-profit (high >= take-profit), an exit rule
   (``signal:<rule>``), or a kill-switch trip when ``flatten_on_trip``; flat: BUY when
   an entry rule fires, no exit rule fires on the same candle (exit wins, as in S4),
   the cooldown after the last exit has passed and the kill-switch allows entries.
   The size is :func:`S4.decide.size_entry` (S6's ``size_position``, ATR stop by
   default, capped by the free quote balance, rounded to the exchange filters by
   :meth:`S6.filters.SymbolFilters.check_order`); an order the filters refuse is not
   sent (``REFUSED``, logged, alerted);
6. the order goes out through :func:`S7.exchange_client.submit_order` with the
   signal's deterministic client id, after its intent is committed to the store.
   With a :class:`~S7.limit_orders.LimitPolicy` entries, rule exits and take-profits
   are LIMIT (or LIMIT_MAKER) orders priced from the close; stop-losses and the
   kill-switch's flattening stay MARKET (a risk exit does not wait for a better price).

Sending, recording and looking up orders is :class:`S7.order_sender.OrderSender`
(the engine's base class; :mod:`S7.limit_orders` uses it too). The stop and
take-profit are placed at the fill price minus/plus the distances S6 computed at
the signal (:func:`S4.decide.levels`), and checked on closed candles (so an exit fills at the
next price, possibly beyond the stop: a gap is a gap).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import numpy as np
import pandas as pd

from S1.errors import UserError
from S1.intervals import interval_ms
from S2.ta import IndicatorConfig, compute_indicators, warmup_rows
from S2.ta import atr as atr_kernel
from S4.decide import ENTER, EXIT, SKIP, Bar, Policy, Position, Size, decide, size_entry, trail, trail_spec
from S4.evaluate import condition_masks
from S4.rules import RuleSet
from S6.alerts import kill_switch_event, order_rejected_event
from S6.config import RiskConfig
from S6.filters import SymbolFilters
from S6.killswitch import KillSwitch
from S7.exchange_client import AuthFailed, ExchangeError, TradingVenue
from S7.feeds import FrameFeed, SentimentFeed
from S7.ledger import Ledger
from S7.limit_orders import LimitManager, LimitPolicy
from S7.order_sender import Decision, OrderSender
from S7.orders import (
    BLOCKED,
    REFUSED,
    Fill,
    OrderState,
    plain,
)
from S7.reconcile import ReconcileReport, reconcile

log = logging.getLogger(__name__)

MODES = ("dry-run", "testnet", "live")
#: Numeric candle columns the engine keeps for its window (what rules may read besides indicators).
WINDOW_COLUMNS = ("open", "high", "low", "close", "volume", "quote_volume", "trades", "taker_buy_base",
                  "taker_buy_quote")


@dataclass(frozen=True)
class EngineConfig:
    """What the engine trades and how (frozen; checked on creation)."""

    symbol: str
    interval: str
    mode: str
    strategy: str                          #: tag in every client order id (e.g. a hash of the rules)
    window: int = 300                      #: closed candles kept for the indicators
    max_candle_age_s: float | None = None  #: act only on candles younger than this (None: one interval; 0: any)
    flatten_on_trip: bool | None = None    #: None: the risk config's kill_switch.flatten_on_trip
    use_stops: bool = True
    fee_buffer: float = 0.003              #: headroom kept on the quote balance (fees, price moves)
    max_rate_wait: float = 10.0            #: longest Retry-After waited out for an order (s)
    cancel_stale: bool = True              #: cancel our leftover open orders when reconciling
    limit: LimitPolicy | None = None       #: None: MARKET orders; else LIMIT orders (S7.limit_orders)

    def __post_init__(self):
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.window < 10:
            raise ValueError("window must hold at least 10 candles")
        if not 0 <= self.fee_buffer < 0.5:
            raise ValueError("fee_buffer must be in [0, 0.5)")

    @property
    def max_age_ms(self) -> int | None:
        if self.max_candle_age_s == 0:
            return None
        return int((self.max_candle_age_s or interval_ms(self.interval) / 1000) * 1000)


class Engine(OrderSender):
    """One symbol's trading loop body (see the module docstring). Use :meth:`start`,
    :meth:`seed`, then :meth:`on_price` / :meth:`on_candle` as events arrive."""

    def __init__(self, config: EngineConfig, *, rules: RuleSet, venue: TradingVenue, ledger: Ledger,
                 filters: SymbolFilters, kill_switch: KillSwitch, risk: RiskConfig | None = None,
                 indicators: IndicatorConfig | None = None, alerter=None, sentiment: SentimentFeed | None = None,
                 features=None):
        self.cfg = config
        self.rules, self.venue, self.ledger, self.filters = rules, venue, ledger, filters
        self.store, self.order_log = ledger.store, ledger.order_log
        self.risk = risk or RiskConfig()
        self.indicators = indicators or IndicatorConfig()
        self.kill_switch = kill_switch
        if kill_switch.on_trip is None:
            kill_switch.on_trip = self._on_trip
        self.alerter = alerter
        self.sentiment = sentiment
        self.flatten = self.risk.kill_switch.flatten_on_trip if config.flatten_on_trip is None else config.flatten_on_trip
        self.symbol, self.base, self.quote = config.symbol, filters.base_asset, filters.quote_asset
        self._t = np.empty(0, dtype=np.int64)               # open times (ms) of the window
        self._w: dict[str, np.ndarray] = {c: np.empty(0) for c in WINDOW_COLUMNS}
        self.last_price: float | None = None
        self.last_close_ms: int | None = None
        self.balances: dict[str, tuple[Decimal, Decimal]] = {}
        self.needs_reconcile = True
        self.reports: list[ReconcileReport] = []
        self.decisions: list[Decision] = []
        self.stats: Counter = Counter()
        self.start_equity: float | None = None
        self.last_equity: float | None = None
        self._alerts: set[asyncio.Task] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsellable: int | None = None
        self._atr_col = f"atr{self.risk.stops.atr_period}"
        self._interval_ms = interval_ms(config.interval)
        self._required = rules.required_columns()
        #: precomputed columns as-of each candle (e.g. :class:`FrameFeed` over an S4 signals file: the
        #: indicators, the ML score): they take the place of the engine's own indicators
        self.features = features
        feat = set(features.columns) if features is not None else set()
        available = set(WINDOW_COLUMNS) | set(self.indicators.columns()) | set(
            sentiment.columns if sentiment is not None else ()) | feat
        #: higher-timeframe columns (rsi14_4h ...) the rules read and no feed brings: computed from the
        #: window with S2's functions (S7.feeds.InformativeFeed)
        from S2.informative import split_informative
        from S7.feeds import InformativeFeed

        htf = [c for c in self._required if c not in available and split_informative(c) is not None]
        self.informative = InformativeFeed(htf, base_interval=config.interval) if htf else None
        available |= set(htf)
        missing = [c for c in self._required if c not in available]
        if missing:
            raise UserError(f"the rules read {missing}, which the executor does not compute",
                            f"it has the candle columns, the indicators {self.indicators.columns()} and the "
                            "sentiment (when the rules read it); add the lengths to S2/config.yaml")
        self._min_rows = max(warmup_rows(self.indicators).values()) + 1
        self._own_indicators = not (set(self._required) - set(htf) | {self._atr_col}) <= (feat | set(WINDOW_COLUMNS))
        if not self._own_indicators:
            self._min_rows = 1          # every column comes with the candles: nothing to warm up
        #: S4's decision policy: the rules' cooldown, the stops, flattening on a kill-switch trip
        self.policy = Policy.from_rules(rules, use_stops=config.use_stops, flatten_on_trip=self.flatten)
        from S5.hooks import check_market

        check_market(rules, "spot")   # short rules: USD-M only (python -m S7.paper_replay --market usdm)
        #: the rule file's trailing stop (S4.decide.trail), moved after every candle that keeps the position
        self._trailing = getattr(rules, "trailing_stop", None)
        self.limits = LimitManager(self, config.limit) if config.limit is not None else None
        self._now_ms: int | None = None
        #: the user-data stream (S7.user_stream.UserDataStream) when one is attached (testnet / live)
        self.user_stream = None
        #: the S8 service's control channel (S7.control.ExecutorControl) when one is attached
        self.control = None
        # candles, prices, stream events and resyncs change the same state: one at a time
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ alerts
    def _on_trip(self, trip) -> None:
        """Called by the kill-switch, possibly from a worker thread: the alert goes out on the loop."""
        self.stats["kill_switch_trips"] += 1
        event = kill_switch_event(trip, symbol=self.symbol)
        loop = self._loop
        if loop is not None and loop.is_running():
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                self._alert(event)
            else:
                loop.call_soon_threadsafe(self._alert, event)
        else:
            self._alert(event)

    async def drain_alerts(self, timeout: float = 5.0) -> None:
        """Wait (bounded) for the alerts still being delivered."""
        if self._alerts:
            await asyncio.wait(list(self._alerts), timeout=timeout)

    # ------------------------------------------------------------------- setup
    async def start(self) -> ReconcileReport:
        """Reconcile with the exchange before anything else; raises on failure."""
        self._loop = asyncio.get_running_loop()
        rep = await self.reconcile("start")
        self._feed_closed_trips(rep.closed_trips)
        return rep

    async def reconcile(self, when: str) -> ReconcileReport:
        keep = self.limits.keep_open() if self.limits is not None else set()
        rep = await reconcile(self.venue, self.ledger, when=when, cancel_stale=self.cfg.cancel_stale, keep=keep,
                              place_levels=self._place_levels)   # a crash never drops the stop (issue 22)
        self.reports.append(rep)
        self.balances = dict(rep.balances)
        self.needs_reconcile = not rep.ok
        self.stats["reconciles"] += 1
        return rep

    def seed(self, history: pd.DataFrame) -> None:
        """The closed candles before the first live one (warm-up of the indicators)."""
        if len(history):
            h = history.iloc[-self.cfg.window:]
            self._t = h.index.as_unit("ms").asi8.astype(np.int64)
            self._w = {c: h[c].to_numpy(dtype=np.float64, copy=True) for c in WINDOW_COLUMNS}
            self.last_close_ms = int(self._t[-1])
            self.last_price = float(self._w["close"][-1])
            if self.start_equity is None and self.balances:
                self.start_equity = self.equity(self.last_price)

    @property
    def window(self) -> pd.DataFrame | None:
        """The candle window as a frame (index open_time UTC); None before :meth:`seed`."""
        if not len(self._t):
            return None
        return pd.DataFrame(dict(self._w), index=pd.DatetimeIndex(pd.to_datetime(self._t, unit="ms", utc=True),
                                                                     name="open_time"))

    def _append(self, open_ms: int, values: dict[str, float]) -> None:
        keep = self.cfg.window - 1
        self._t = np.append(self._t[-keep:], np.int64(open_ms))
        for c in WINDOW_COLUMNS:
            self._w[c] = np.append(self._w[c][-keep:], values[c])

    def equity(self, price: float) -> float:
        """Quote balance (free + locked) + the strategy's position (and its dust) at ``price``."""
        q = sum(self.balances.get(self.quote, (Decimal(0), Decimal(0))))
        pos = self.store.position(self.symbol)
        return float(q) + float(pos.qty + pos.dust) * price

    # ------------------------------------------------------------ user stream
    @property
    def stream_live(self) -> bool:
        """True while a user-data stream is connected and subscribed: order events arrive by
        themselves, so open orders need no lookups."""
        s = self.user_stream
        return s is not None and bool(s.healthy)

    async def on_user_event(self, ev: dict) -> None:
        """One user-data stream event (:mod:`S7.user_stream`): fills and state changes of our
        orders are booked at once -- the same ledger as the REST answers, so each trade is
        booked once (trade id) and no state goes backwards; balances from
        ``outboundAccountPosition``. Events of other symbols or other orders are ignored."""
        kind = ev.get("e")
        if kind == "outboundAccountPosition":
            for b in ev.get("B") or []:
                if b.get("a") in (self.base, self.quote):
                    self.balances[b["a"]] = (Decimal(str(b["f"])), Decimal(str(b["l"])))
            return
        if kind == "balanceUpdate":
            if ev.get("a") in (self.base, self.quote):
                log.info("balance update: %s %s (deposit/withdrawal/transfer)", ev.get("d"), ev.get("a"))
            return
        if kind != "executionReport" or ev.get("s") != self.symbol:
            return
        cid = OrderState.from_execution_report(ev).client_order_id
        if self.store.get_order(cid) is None:
            return                        # not this executor's order
        async with self._lock:
            self.stats["stream_events"] += 1
            state, _ = self.ledger.execution_report(ev)
            row = self.store.get_order(cid)
            if state.executed_qty > self._booked(state):
                # a trade event without its quantity (the real "l == 0" payload) or one we missed
                try:
                    for t in await self.venue.my_trades(symbol=self.symbol, order_id=state.order_id):
                        self.ledger.fill(Fill.from_my_trade(t, client_order_id=cid))
                except ExchangeError as exc:
                    log.warning("order %s: missing fills not read (%s); the next reconciliation books them",
                                cid, exc.message)
                    self.needs_reconcile = True
            if state.side == "BUY" and state.executed_qty > 0 and state.avg_price is not None and \
                    not self.ledger.is_stale(row, state):
                self._place_levels(row, float(state.avg_price))
            self._feed_closed_trips(self.ledger.take_closed())
            if self.limits is not None:
                await self._step_limits(int(time.time() * 1000))

    async def on_stream_subscribed(self, reason: str) -> None:
        """After every (re)subscription: what happened while nobody listened, over REST --
        our open or unknown orders looked up (their missing fills from ``myTrades``, each
        trade once), the balances re-read; a full reconciliation when one is due."""
        async with self._lock:
            self.stats["stream_resyncs"] += 1
            try:
                if self.needs_reconcile:
                    rep = await self.reconcile(f"user stream {reason}")
                    self._feed_closed_trips(rep.closed_trips)
                else:
                    await self.sync_orders(all_orders=True)
                    await self.refresh_balances()
                if self.limits is not None:
                    await self._step_limits(int(time.time() * 1000))
            except ExchangeError as exc:
                log.warning("after the user stream %s: REST re-read failed (%s); reconciling on the next candle",
                            reason, exc.message)
                self.needs_reconcile = True

    async def _step_limits(self, now_ms: int) -> None:
        try:
            await self.limits.step(now_ms=now_ms)
        except AuthFailed:
            raise
        except ExchangeError as exc:
            log.warning("resting order: %s; retried on the next event", exc.message)
            self.needs_reconcile = True

    # ----------------------------------------------------------------- prices
    async def on_price(self, price: float, t_ms: int, qty: float | str | None = None) -> None:
        """A market price (dry-run: fills what the simulator holds -- only ``qty`` of a resting
        LIMIT order when given; every mode: the last price)."""
        async with self._lock:
            await self._on_price(price, t_ms, qty)

    async def _on_price(self, price: float, t_ms: int, qty: float | str | None = None) -> None:
        self.last_price = float(price)
        on_price = getattr(self.venue, "on_price", None)
        if on_price is not None and (on_price(price, t_ms) if qty is None else on_price(price, t_ms, qty)):
            await self.sync_orders()
        if self.limits is not None:
            await self.limits.step(now_ms=int(t_ms), poll=True)

    # ----------------------------------------------------------------- candles
    async def on_candle(self, candle: pd.DataFrame, now_ms: int | None = None) -> Decision:
        """One newly closed candle (a one-row candle frame). ``now_ms``: the clock
        (the replay's, or None for the wall clock)."""
        seen = time.perf_counter()   # before the lock: a wait for a stream event counts as latency
        async with self._lock:
            return await self._on_candle(candle, now_ms, seen)

    async def _on_candle(self, candle: pd.DataFrame, now_ms: int | None, seen: float) -> Decision:
        if self._loop is None:
            self._loop = asyncio.get_running_loop()
        ot = int(candle.index[-1].value // 1_000_000)
        d = Decision(ot, seen_at=seen)
        if self.last_close_ms is not None and ot <= self.last_close_ms:
            d.action = "seen"
            return d
        row = {c: float(candle[c].to_numpy()[-1]) for c in WINDOW_COLUMNS}
        if not all(math.isfinite(row[c]) and row[c] > 0 for c in ("high", "low", "close")):
            log.warning("candle %s has a missing or non-positive price: ignored", _iso(ot))
            d.action = "seen"
            return d
        self._append(ot, row)
        self.last_close_ms = ot
        close = row["close"]
        self.last_price = close
        close_ms = int(candle["close_time"].iloc[-1].value // 1_000_000)
        now = int(time.time() * 1000) if now_ms is None else int(now_ms)
        self._now_ms = now
        at = pd.Timestamp(close_ms + 1, unit="ms", tz="UTC")
        key = f"last_candle:{self.symbol}:{self.cfg.interval}"
        done = self.store.get_meta(key)
        if done is not None and ot <= int(done):
            d.action = "seen"
            return self._done(d)
        age = self.cfg.max_age_ms
        if age is not None and now - close_ms > age:
            d.action = "stale"
            log.info("candle %s closed %.0fs ago: too old to act on (window updated only)",
                     _iso(ot), (now - close_ms) / 1000)
            return self._done(d)
        if len(self._t) < self._min_rows:
            d.action = "warmup"
            log.info("candle %s: warming up the indicators (%d of %d candles)", _iso(ot), len(self._t),
                     self._min_rows)
            return self._done(d, key)
        if self.needs_reconcile:
            try:
                await self.reconcile("reconnect")
                self._feed_closed_trips(self.reports[-1].closed_trips)
            except AuthFailed:
                raise
            except ExchangeError as exc:
                log.warning("reconciliation failed (%s): not acting on %s", exc.message, _iso(ot))
                d.action = "waiting"
                return self._done(d, key)
        if self.limits is not None:
            try:
                await self.limits.step(now_ms=now, candle_open_ms=ot)
            except AuthFailed:
                raise
            except ExchangeError as exc:
                log.warning("resting order: %s; retried on the next event", exc.message)
                self.needs_reconcile = True
        if self.store.unresolved(self.symbol) and not await self.sync_orders():
            left = self.store.unresolved(self.symbol)
            ids = ", ".join(r["client_order_id"] for r in left)
            rec = self.limits.record() if self.limits is not None else None
            if rec and [r["client_order_id"] for r in left] == [rec["cid"]]:
                log.info("candle %s: LIMIT order %s resting (%s of %s filled): no new order until it is done",
                         _iso(ot), rec["cid"], left[0]["executed_qty"], left[0]["quantity"])
            else:
                log.warning("candle %s: waiting for order(s) %s to resolve before acting", _iso(ot), ids)
            d.action = "waiting"
            return self._done(d, key)

        pos = self.store.position(self.symbol)
        equity = self.equity(close)
        d.equity = equity
        if self.start_equity is None:
            self.start_equity = equity
        self.last_equity = equity
        # the kill-switch persists its state (an fsync'd write): overlap it with the indicators
        ks = asyncio.create_task(asyncio.to_thread(self.kill_switch.update_equity, equity, at=at))
        try:
            _, _, d.entry_rule, d.exit_rule, ind = self._signals()
        finally:
            allowed = await ks
        d.allowed = allowed

        action = decide(Bar(high=row["high"], low=row["low"], close=close, entry_rule=d.entry_rule,
                            exit_rule=d.exit_rule, time=ot),
                        position=self._position(pos), policy=self.policy, entries_allowed=allowed,
                        bars_since_exit=self._bars_since_exit(ot),
                        sizer=lambda bar: self._size(ind, equity, close))
        d.decision = action
        if action.kind != EXIT and self._trailing is not None and pos.is_open:
            self._trail(self._position(pos), Bar(high=row["high"], low=row["low"], close=close))
        if action.kind == EXIT:
            await self._sell(d, pos.qty, close, self._exit_text(action, pos), at)
        elif action.kind == ENTER and self.control is not None and (paused := self.control.entry_block()):
            d.action, d.reason = "paused", paused          # the S8 service's pause: exits still work
            log.info("candle %s: entry %s not taken: %s", _iso(ot), action.rule, paused)
        elif action.kind == ENTER:
            d.reason = f"entry:{action.rule}"
            if self._trailing is not None:
                spec = trail_spec(self._trailing, self._atr(ind))
                self.store.set_meta(f"trail:{self.symbol}", list(spec) if spec is not None else None)
                self.store.set_meta(f"trailing:{self.symbol}", 0)
            await self._send(d, "BUY", plain(action.size.extra["check"].qty), close, f"entry:{action.rule}", at,
                             stop_distance=action.size.stop_distance, tp_distance=action.size.tp_distance,
                             limit_price=plain(action.size.extra["check"].price) if self.cfg.limit is not None
                             else None)
        elif action.kind == SKIP:
            self._skipped(d, action, close, at)
        return self._done(d, key)

    def _done(self, d: Decision, key: str | None = None) -> Decision:
        if key is not None:
            self.store.set_meta(key, d.candle_open_ms)
        self.decisions.append(d)
        self.stats[f"candles_{d.action}"] += 1
        return d

    def _signals(self) -> tuple[bool, bool, str | None, str | None, dict[str, np.ndarray]]:
        """Which rules fire at the last candle of the window. Array kernels only (S2's
        :func:`~S2.ta.compute_indicators`, S4's :func:`~S4.evaluate.condition_masks`): the
        pandas wrappers cost more than the whole rest of a decision."""
        w = self._w
        n = len(self._t)
        if n < self._min_rows:
            raise UserError(f"the executor's candle window holds {n} candles, fewer than the {self._min_rows} the "
                            "indicators need", "wait for more candles, or start the streamer earlier")
        ind = compute_indicators(w["high"], w["low"], w["close"], self.indicators) if self._own_indicators else {}
        if self.features is not None:
            ind.update(self.features.arrays(self._t))
        if self.informative is not None:
            ind.update(self.informative.arrays(self._t, w))
        arrays: dict[str, np.ndarray] = {}
        sent = self.sentiment.arrays(self._t) if self.sentiment is not None else {}
        for c in self._required:
            arrays[c] = ind[c] if c in ind else (w[c] if c in w else sent[c])
        ent, ext = condition_masks(arrays, self.rules, n)
        e_hits, x_hits = ent[:, -1], ext[:, -1]
        entry_rule = self.rules.entry[int(np.argmax(e_hits))].name if e_hits.any() else None
        exit_rule = self.rules.exit[int(np.argmax(x_hits))].name if len(x_hits) and x_hits.any() else None
        return bool(e_hits.any()), bool(len(x_hits) and x_hits.any()), entry_rule, exit_rule, ind

    # ------------------------------------------------------------------ orders
    def _atr(self, ind: dict[str, np.ndarray]) -> float | None:
        if self._atr_col in ind:
            v = float(ind[self._atr_col][-1])
        else:
            w = self._w
            v = float(atr_kernel(w["high"], w["low"], w["close"], self.risk.stops.atr_period)[-1])
        return v if math.isfinite(v) and v > 0 else None

    def _position(self, pos) -> Position | None:
        """The store's position as S4's decision input (levels only when stops are on)."""
        if not pos.is_open:
            return None
        spec = self.store.get_meta(f"trail:{self.symbol}") if self._trailing is not None else None
        return Position(qty=float(pos.qty), entry_price=float(pos.entry_price or 0.0), stop=pos.stop,
                        take_profit=pos.take_profit, trail=tuple(spec) if spec else None,
                        trailing=bool(spec) and bool(self.store.get_meta(f"trailing:{self.symbol}")))

    def _trail(self, position: Position, bar: Bar) -> None:
        """Move the stop after a candle that kept the position (S4's :func:`~S4.decide.trail`)."""
        moved = trail(position, bar)
        if moved is not position and moved.stop != position.stop:
            self.store.set_levels(self.symbol, stop=moved.stop, take_profit=position.take_profit)
            self.store.set_meta(f"trailing:{self.symbol}", 1)

    def _bars_since_exit(self, ot: int) -> int | None:
        last_exit = self.store.get_meta(f"last_exit_candle:{self.symbol}:{self.cfg.interval}")
        return (ot - int(last_exit)) // self._interval_ms if last_exit is not None else None

    def _size(self, ind: dict[str, np.ndarray], equity: float, price: float) -> Size:
        """S4's sizer (S6 sizing, capped by the free quote balance, the exchange filters)."""
        lim = self.cfg.limit
        px = float(lim.price(self.filters, "BUY", price)) if lim is not None else price
        free_quote = float(self.balances.get(self.quote, (Decimal(0), Decimal(0)))[0])
        return size_entry(equity=equity, cash=free_quote, price=price, atr=self._atr(ind), risk=self.risk,
                          filters=self.filters, fee_buffer=self.cfg.fee_buffer, order_price=px,
                          order_type="LIMIT" if lim is not None else "MARKET")

    @staticmethod
    def _exit_text(action, pos) -> str:
        """The order's reason: the decision's (``stop_loss`` / ``take_profit`` with the level)."""
        if action.reason in ("stop_loss", "trailing_stop"):
            return f"{action.reason}:{pos.stop:g}"
        if action.reason == "take_profit":
            return f"take_profit:{pos.take_profit:g}"
        return action.reason

    def _skipped(self, d: Decision, action, price: float, at) -> None:
        """An entry the decision did not take: cooldown (logged), kill-switch (``BLOCKED``),
        sizing or the exchange filters (``REFUSED``, the filters' refusal alerted)."""
        ot, reason = d.candle_open_ms, f"entry:{action.rule}"
        if action.reason == "cooldown":
            d.action, d.reason = "skipped", action.detail
            log.info("candle %s: entry %s ignored: %s", _iso(ot), action.rule, d.reason)
        elif action.reason == "kill_switch":
            st = self.kill_switch.state
            d.action, d.reason = "blocked", f"kill-switch tripped ({st.reason}: {st.detail})"
            self._not_sent(d, "BUY", None, price, BLOCKED, reason, d.reason, at)
            log.warning("candle %s: entry %s not taken: %s", _iso(ot), action.rule, d.reason)
        elif action.reason == "filters":
            size = action.size
            check = size.extra["check"]
            why = check.reason + (f" (size capped by the free {self.quote} balance {size.extra['cash']:,.2f})"
                                  if size.extra.get("capped") else "")
            d.action, d.reason = "refused", reason
            self._not_sent(d, "BUY", plain(check.qty), price, REFUSED, reason, why, at, filter=check.filter)
            self._alert(order_rejected_event(symbol=self.symbol, side="BUY", qty=plain(check.qty), price=price,
                                             reason=why, code=check.filter))
            log.warning("candle %s: BUY %s refused by the exchange filters before sending: %s",
                        _iso(ot), plain(check.qty), why)
        else:
            d.action, d.reason = "refused", reason
            self._not_sent(d, "BUY", None, price, REFUSED, reason, action.detail, at)
            log.warning("candle %s: %s not taken: cannot size (%s)", _iso(ot), reason, action.detail)

    async def _sell(self, d: Decision, qty: Decimal, price: float, reason: str, at) -> None:
        d.reason = reason
        # risk exits (stop-loss, kill-switch flattening) never wait for a better price
        lim = None if reason.startswith(("stop_loss", "trailing_stop", "kill_switch")) else self.cfg.limit
        px = float(lim.price(self.filters, "SELL", price)) if lim is not None else price
        check = self.filters.check_order(qty, px, side="SELL", order_type="LIMIT" if lim is not None else "MARKET")
        if not check.ok:
            d.action = "refused"
            self._not_sent(d, "SELL", plain(check.qty), price, REFUSED, reason, check.reason, at, filter=check.filter)
            pos = self.store.position(self.symbol)
            if self._unsellable != pos.entry_time_ms:   # alert once per position, not on every candle
                self._unsellable = pos.entry_time_ms
                self._alert(order_rejected_event(symbol=self.symbol, side="SELL", qty=plain(check.qty), price=price,
                                                 reason=check.reason, code=check.filter))
            log.warning("candle %s: SELL %s refused by the exchange filters before sending (the position is held): "
                        "%s", _iso(d.candle_open_ms), plain(qty), check.reason)
            return
        await self._send(d, "SELL", plain(check.qty), price, reason, at,
                         limit_price=plain(check.price) if lim is not None else None, limit=lim)

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict[str, Any]:
        pos = self.store.position(self.symbol)
        orders = self.store.orders(self.symbol)
        by_status = Counter(o["status"] for o in orders)
        price = self.last_price or 0.0
        lat = [dd.sent_at - dd.seen_at for dd in self.decisions if dd.sent_at is not None]
        return {"symbol": self.symbol, "interval": self.cfg.interval, "mode": self.cfg.mode,
                "orders": len(orders), "orders_by_status": dict(by_status),
                "sent": sum(1 for o in orders if o["status"] not in (REFUSED, BLOCKED)),
                "buys": sum(1 for o in orders if o["side"] == "BUY" and o["status"] not in (REFUSED, BLOCKED)),
                "sells": sum(1 for o in orders if o["side"] == "SELL" and o["status"] not in (REFUSED, BLOCKED)),
                "fills": len(self.store.fills(self.symbol)), "position": pos, "last_price": price,
                "unrealized": pos.unrealized(price), "realized": float(pos.realized_pnl), "fees": float(pos.fees),
                "round_trips": pos.round_trips, "start_equity": self.start_equity,
                "equity": self.equity(price) if price else self.last_equity,
                "kill_switch": self.kill_switch.status(), "candles": dict(self.stats),
                "decision_ms": [x * 1000 for x in lat]}


def _iso(ms: int) -> str:
    return pd.Timestamp(int(ms), unit="ms", tz="UTC").strftime("%Y-%m-%d %H:%M")


__all__ = ["MODES", "Decision", "Engine", "EngineConfig", "FrameFeed", "SentimentFeed"]
