"""S6's risk settings turned into the engine's explicit hooks (size, stops, kill-switch).

:func:`risk_hooks` reads an S6 :class:`~S6.config.RiskConfig` and returns
:class:`RiskHooks` for :func:`S5.engine.run_backtest`:

- **size** -- S6's own functions (:func:`S6.sizing.size_position`, and
  :func:`S6.sizing.kelly_fraction` for Kelly) are evaluated per entry on a unit of
  equity at the fill price ``open[t+1] x (1 + slippage)``. The engine spends
  ``notional x (1 + fee)`` of the equity, so the quantity bought is exactly S6's:
  ``fixed``: ``fixed_fraction x equity / price``; ``atr``: ``R x equity / (k x ATR[t])``
  (or the ``stop_loss_pct`` stop distance); all capped at ``max_position_fraction``.
  The fill price cancels out of the quantity: nothing after bar t's close is used.
  An entry with an unknown ATR (warm-up) is skipped.
- **kelly** -- win rate and payoff from the strategy's own closed trades *before* the
  entry is decided (a first pass of the same signals, returns are size-free), no
  position until ``kelly_min_trades`` have closed, ``kelly_fraction`` x Kelly capped
  at ``kelly_cap``.
- **stops** -- S6's :func:`~S6.sizing.stop_price` / :func:`~S6.sizing.take_profit_price`
  at the fill price: ``fill - k x ATR[t]`` (or ``fill x (1 - stop_loss_pct)``) and
  ``take_profit_rr`` x the stop distance (or ``take_profit_pct``), passed to vectorbt
  as fractions of the fill price.
- **kill-switch** -- S6's ``KillSwitchConfig`` (``flatten_on_trip`` closes the position).

:func:`decided_path` is the other way to run a risk config, the one paper trading
uses: S4's :func:`S4.decide.decide` on every closed bar (entries, exits, stops on
closed bars, cooldown, S6's kill-switch step functions) and S4's
:func:`S4.decide.size_entry` for the quantity, with its own cash book (the S5 fee
model). :func:`S5.engine.run_decided` feeds its decisions to vectorbt.

>>> import numpy as np, pandas as pd
>>> from S6.config import RiskConfig
>>> t = pd.date_range("2024-01-01", periods=3, freq="h", tz="UTC")
>>> f = pd.DataFrame({"open": [100.0, 100, 100], "high": [100.0] * 3, "low": [100.0] * 3,
...                   "close": [100.0] * 3, "atr14": [5.0] * 3, "entry": [True, False, False]}, index=t)
>>> cfg = RiskConfig().replace(kill_switch={"max_drawdown": None})
>>> h = risk_hooks(f, cfg, interval="1h", fees=0.0, slippage=0.0)
>>> [round(float(x[0]), 12) for x in (h.size, h.sl_stop, h.tp_stop)]   # 1% / (2 x 5) x 100 = 10% of equity
[0.1, 0.1, 0.2]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from S1.errors import UserError


@dataclass(frozen=True)
class RiskHooks:
    """The engine arguments built from a RiskConfig (arrays are per decision bar)."""

    size: np.ndarray | Callable[[Any], np.ndarray]
    sl_stop: np.ndarray | None
    tp_stop: np.ndarray | None
    kill_switch: Any | None
    flatten_on_trip: bool
    config: Any

    def describe(self) -> dict[str, Any]:
        cfg = self.config
        return {"risk": {"sizing": cfg.sizing.model_dump(), "stops": cfg.stops.model_dump(),
                         "kill_switch": cfg.kill_switch.model_dump() if self.kill_switch is not None else None}}


def load_risk(risk) -> Any:
    """A RiskConfig from a RiskConfig, a path, or None (-> None)."""
    from S6.config import RiskConfig

    if risk is None or isinstance(risk, RiskConfig):
        return risk
    if isinstance(risk, (str, Path)):
        return RiskConfig.load(risk)
    raise UserError(f"risk must be an S6 RiskConfig or a YAML path, got {type(risk).__name__}",
                    "pass --risk S6/risk.yaml or RiskConfig.load()")


def atr_values(frame: pd.DataFrame, period: int) -> np.ndarray:
    """``atr<period>`` from the frame (S2 wrote it) or computed with S2's TA-Lib kernel."""
    col = f"atr{period}"
    if col in frame.columns:
        return frame[col].to_numpy(dtype=np.float64, na_value=np.nan)
    from S2.ta import atr

    return atr(frame["high"].to_numpy(np.float64), frame["low"].to_numpy(np.float64),
               frame["close"].to_numpy(np.float64), period)


def _kill_switch_enabled(ks) -> bool:
    return any(v is not None for v in (ks.max_drawdown, ks.daily_loss_limit, ks.max_consecutive_losses))


def risk_hooks(frame: pd.DataFrame, risk, *, bars=None, costs=None, interval: str | None = None,
               fees: float | None = None, slippage: float | None = None, entries=None) -> RiskHooks:
    """Build the size / stop / kill-switch hooks of ``risk`` for the bars of ``frame``.

    Give ``bars`` and ``costs`` (as :func:`S5.engine.run_backtest` does) or
    ``interval``, ``fees`` and ``slippage``.
    """
    from S5.bars import Bars
    from S5.costs import Costs
    from S6.sizing import SizingError, kelly_fraction, size_position

    cfg = load_risk(risk)
    if cfg is None:
        raise UserError("no risk config given", "pass --risk S6/risk.yaml")
    if bars is None:
        if interval is None:
            raise UserError("risk_hooks needs bars= or interval=", "e.g. interval='1h'")
        bars = Bars.from_frame(frame, interval)
    if costs is None:
        costs = Costs(**({} if fees is None else {"fees": fees}),           # None: the one default (S5.costs)
                      **({} if slippage is None else {"slippage": slippage}))
    n = len(bars)
    ent = np.asarray(frame["entry"] if entries is None else entries, dtype=bool)
    decided = np.flatnonzero(ent[:-1])                        # an entry on the last bar never fills
    fill = bars.open[decided + 1] * (1.0 + costs.slippage)
    sz, st = cfg.sizing, cfg.stops
    need_atr = st.stop_loss_pct is None
    atr = None
    if need_atr:
        a = atr_values(frame, st.atr_period)[decided]
        atr = np.where(np.isfinite(a) & (a > 0), a, np.nan)  # unknown ATR: no size (atr) / no stop
    method = sz.method
    try:
        res = size_position(equity=np.ones(len(decided)), price=fill, config=cfg, atr=atr,
                            method="fixed" if method == "kelly" else method)
    except SizingError as exc:
        raise UserError(f"risk sizing: {exc.problem}", exc.fix or "check S6/risk.yaml") from None
    sl = tp = None
    if res.stop is not None:
        sl = np.full(n, np.nan)
        sl[decided] = 1.0 - np.asarray(res.stop, dtype=np.float64) / fill
    if res.take_profit is not None:
        tp = np.full(n, np.nan)
        tp[decided] = np.asarray(res.take_profit, dtype=np.float64) / fill - 1.0
    cost = 1.0 + costs.entry_rate   # the fee the entry pays (maker in the mixed / maker models)
    if method == "kelly":
        def size(first) -> np.ndarray:
            det = first.trade_details.sort_values("exit_bar", kind="stable")
            exit_bar = det["exit_bar"].to_numpy()
            ret = det["return"].to_numpy(np.float64)
            known = np.searchsorted(exit_bar, decided, side="right")   # trades closed by the decision bar
            cum_n = np.r_[0, np.arange(1, len(ret) + 1)]
            cum_w = np.r_[0, np.cumsum(ret > 0)]
            cum_l = np.r_[0, np.cumsum(ret < 0)]
            cum_ws = np.r_[0.0, np.cumsum(np.where(ret > 0, ret, 0.0))]
            cum_ls = np.r_[0.0, np.cumsum(np.where(ret < 0, -ret, 0.0))]
            k = known
            with np.errstate(divide="ignore", invalid="ignore"):
                p = np.where(cum_n[k] > 0, cum_w[k] / cum_n[k], np.nan)
                avg_w = np.where(cum_w[k] > 0, cum_ws[k] / cum_w[k], np.nan)
                avg_l = np.where(cum_l[k] > 0, cum_ls[k] / cum_l[k], np.nan)
                payoff = np.where(cum_l[k] == 0, np.inf, np.where(cum_w[k] == 0, 0.0, avg_w / avg_l))
            payoff = np.where(cum_n[k] > 0, payoff, np.nan)
            f = kelly_fraction(win_rate=p, payoff=payoff, fraction=sz.kelly_fraction, cap=sz.kelly_cap)
            f = np.where((cum_n[k] >= sz.kelly_min_trades) & np.isfinite(f), f, 0.0)
            out = np.zeros(n)
            out[decided] = np.minimum(f, sz.max_position_fraction) * cost
            return out
        size_arg: np.ndarray | Callable = size
    else:
        notional = np.asarray(res.size, dtype=np.float64) * fill     # share of equity, fees excluded
        size_arg = np.zeros(n)
        size_arg[decided] = np.where(np.isfinite(notional), notional * cost, 0.0)
    ks = cfg.kill_switch if _kill_switch_enabled(cfg.kill_switch) else None
    return RiskHooks(size_arg, sl, tp, ks, bool(cfg.kill_switch.flatten_on_trip), cfg)


# --------------------------------------------------------------------- decided path
@dataclass
class DecidedPath:
    """What :func:`decided_path` decided, per decision bar (arrays of length n) and per trade."""

    entries: np.ndarray          #: bool: an entry decided at this bar's close (fills at the next open)
    exits: np.ndarray            #: bool: an exit decided at this bar's close
    amounts: np.ndarray          #: quantity bought by the entry decided here (0 elsewhere)
    market_exits: np.ndarray     #: bool: the exit is a risk exit (stop, take-profit, kill-switch: MARKET)
    equity: np.ndarray           #: the loop's own equity at each close
    trades: list[dict]           #: side, entry/exit bar and time, prices, qty, fees, pnl, exit_reason
    skips: dict[str, int]        #: entries not taken, by reason
    trips: list[dict]            #: kill-switch trips


class MemoryKillSwitch:
    """S6's kill-switch step functions on an in-memory state (the S7 KillSwitch runs the
    same functions on a file): ``update_equity`` / ``record_trade`` return whether entries
    are allowed."""

    def __init__(self, config):
        from S6.killswitch import ProtectionState

        self.config = config.kill_switch if hasattr(config, "kill_switch") else config
        self.state = ProtectionState()
        self.trips: list[dict] = []

    def _apply(self, fn, value, at) -> bool:
        from S6.killswitch import to_ns

        trip = fn(self.state, self.config, value, to_ns(at))
        if trip is not None:
            self.trips.append(trip.as_dict())
        return not self.state.tripped

    def update_equity(self, equity: float, *, at) -> bool:
        from S6.killswitch import step_equity

        return self._apply(step_equity, equity, at)

    def record_trade(self, pnl: float, *, at) -> bool:
        from S6.killswitch import step_trade

        return self._apply(step_trade, pnl, at)


def rule_codes(frame: pd.DataFrame, rules, *, shorts: bool = False) -> tuple[np.ndarray, ...]:
    """Per bar, the index of the first entry rule and of the first exit rule that fire
    (-1: none), before any position logic (S4's :func:`~S4.evaluate.condition_masks`);
    ``shorts=True`` adds the first short entry and short exit rule."""
    from S4.evaluate import condition_masks, prepare_arrays

    n = len(frame)
    arrays = prepare_arrays(frame, rules)
    ent, ext = condition_masks(arrays, rules, n)

    def first(m: np.ndarray) -> np.ndarray:
        if m.shape[0] == 0:
            return np.full(n, -1, dtype=np.int64)
        out = m.argmax(axis=0).astype(np.int64)
        out[~m.any(axis=0)] = -1
        return out

    if not shorts:
        return first(ent), first(ext)
    sent, sext = condition_masks(arrays, rules, n, short=True)
    return first(ent), first(ext), first(sent), first(sext)


def decided_path(frame: pd.DataFrame, rules, *, risk, interval: str, costs=None, init_cash: float = 10_000.0,
                 filters=None, use_stops: bool = True, flatten_on_trip: bool | None = None,
                 fee_buffer: float = 0.003, market: str = "spot", futures=None, detail=None) -> DecidedPath:
    """Walk the bars of ``frame`` one at a time with :func:`S4.decide.decide` (see the
    module docstring). ``risk``: an S6 RiskConfig (or path); ``filters``: S6
    SymbolFilters (quantities rounded, small entries refused, as S7 does); ``costs``:
    S5 Costs (entries pay ``costs.entry_rate``, signal exits the maker / single rate and
    risk exits the taker rate; fills at ``open x (1 +/- slippage)``, against the side, moved onto
    the tick grid of ``filters`` (else ``costs.lot``) as S7 fills: :func:`S5.costs.fill_price`).

    Execution: a decision at bar t's close fills at bar t+1's open; an entry that would
    fill on the last bar is not taken (as in :func:`S5.engine.simulate`) and a position
    still open at the end is closed at the last close (``exit_reason`` ``end``). A
    reversal closes the position and opens the opposite one at the same open.

    ``market``: ``"spot"`` (long only: a rule file with ``short_entry`` rules is refused)
    or ``"usdm"`` (shorts; a futures book -- wallet, isolated margin, funding,
    liquidation -- see :mod:`S5.futures`; ``futures``: its :class:`~S5.futures.FuturesSpec`).
    ``detail``: an :class:`S5.detail.Detail` (lower-timeframe candles) resolving which of a
    stop and a take-profit a bar touched first (else the stop first, the worst case).
    """
    from S1.intervals import interval_ms
    from S4.decide import ENTER, EXIT, Bar, Policy, Position, decide, levels, size_entry, trail, trail_spec
    from S5.costs import Costs, price_grid
    from S5.futures import MARKETS, FuturesSpec, funding_payment, side_sign

    if market not in MARKETS:
        raise UserError(f"unknown market {market!r}", f"use one of {', '.join(MARKETS)}")
    check_market(rules, market)
    margin_book = market == "usdm"
    fut = (futures or FuturesSpec()) if margin_book else None
    cfg = load_risk(risk)
    if cfg is None:
        raise UserError("no risk config given", "pass --risk S6/risk.yaml")
    costs = costs or Costs()
    n = len(frame)
    o, h, lo, c = (frame[k].to_numpy(np.float64) for k in ("open", "high", "low", "close"))
    times = frame.index
    t_ns = pd.DatetimeIndex(times).as_unit("ns").asi8
    step = pd.Timedelta(milliseconds=interval_ms(interval))
    step_ns = int(step.value)
    codes = rule_codes(frame, rules, shorts=True)
    names = ([r.name for r in rules.entry], [r.name for r in rules.exit], [r.name for r in rules.short_entry],
             [r.name for r in rules.short_exit])
    atr = atr_values(frame, cfg.stops.atr_period)
    flatten = cfg.kill_switch.flatten_on_trip if flatten_on_trip is None else flatten_on_trip
    policy = Policy.from_rules(rules, use_stops=use_stops, flatten_on_trip=flatten)
    trailing = getattr(rules, "trailing_stop", None)
    ks = MemoryKillSwitch(cfg) if _kill_switch_enabled(cfg.kill_switch) else None
    fee_in = costs.entry_rate
    single = costs.single_rate
    entries, exits, market_x = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    amounts, equity = np.zeros(n), np.zeros(n)
    trades: list[dict] = []
    skips: dict[str, int] = {}
    cash, pos, open_trade = float(init_cash), None, None
    pending, last_exit = None, None

    def name(k: int, i: int) -> str | None:
        code = codes[k][i]
        return names[k][code] if code >= 0 else None

    grid = price_grid(filters) if filters is not None else costs.tick_grid

    def fill_price(px: float, buying: bool) -> float:   # S5.costs.fill_price: slippage, then the tick (as S7)
        return costs.fill(px, buy=buying, grid=grid)

    def open_position(i_bar: int, act, decided_at: int) -> None:
        nonlocal cash, pos, open_trade
        short = act.side == "short"
        fill = fill_price(o[i_bar], not short)
        qty = act.size.qty
        fee = qty * fill * fee_in
        cash -= fee if margin_book else qty * fill + fee
        stop, tp = levels(fill, act.size, filters, side=act.side)
        pos = Position(qty=qty, entry_price=fill, stop=stop, take_profit=tp, side=act.side,
                       trail=trail_spec(trailing, atr[decided_at]) if trailing is not None else None)
        open_trade = {"side": act.side, "entry_bar": i_bar, "entry_time": times[i_bar], "entry_price": fill,
                      "qty": qty, "entry_fee": fee, "entry_rule": act.rule, "funding": 0.0,
                      "margin": qty * fill / fut.leverage if margin_book else None}

    def close_trade(i_bar: int, px: float, fee_rate: float, reason: str, extra_fee: float | None = None) -> float:
        nonlocal cash, pos, open_trade
        sign = side_sign(pos.side)
        gross = sign * pos.qty * (px - open_trade["entry_price"])
        fee = pos.qty * px * fee_rate if extra_fee is None else extra_fee
        cash += (gross - fee) if margin_book else pos.qty * px - fee
        t = open_trade
        pnl = gross - t["entry_fee"] - fee - t["funding"]
        trades.append({**t, "exit_bar": i_bar, "exit_time": times[i_bar], "exit_price": px,
                       "fees": t["entry_fee"] + fee, "pnl": pnl, "exit_reason": reason})
        pos, open_trade = None, None
        return pnl

    for i in range(n):
        if pending is not None:
            act, j = pending
            pending = None
            if act.kind == ENTER:
                open_position(i, act, j)
            else:
                risk_exit = act.exit_kind != "signal"
                rate = single if single is not None else (costs.taker_rate if risk_exit else costs.maker_rate)
                pnl = close_trade(i, fill_price(o[i], pos.side == "short"), rate, act.reason)
                last_exit = j
                if ks is not None:
                    ks.record_trade(pnl, at=times[i])
                if act.reverses:
                    open_position(i, act.reverse, j)
        if margin_book and pos is not None:
            for k in fut.funding_between(t_ns[i], t_ns[i] + step_ns):
                mark = fut.funding_marks[k] if np.isfinite(fut.funding_marks[k]) else o[i]
                pay = funding_payment(pos.side, qty=pos.qty, mark=mark, rate=fut.funding_rates[k])
                cash -= pay
                open_trade["funding"] += pay
            if fut.liquidation:
                liq = fut.liquidation_price(pos.side, qty=pos.qty, entry=open_trade["entry_price"],
                                            margin=open_trade["margin"])
                short = pos.side == "short"
                if (h[i] >= liq) if short else (lo[i] <= liq):
                    px = max(o[i], liq) if short else min(o[i], liq)
                    left = open_trade["margin"] + side_sign(pos.side) * pos.qty * (px - open_trade["entry_price"])
                    pnl = close_trade(i, px, 0.0, "liquidation", extra_fee=left)
                    last_exit = i
                    if ks is not None:
                        ks.record_trade(pnl, at=times[i])
        if pos is None:
            eq = cash
        elif margin_book:
            eq = cash + side_sign(pos.side) * pos.qty * (c[i] - open_trade["entry_price"])
        else:
            eq = cash + pos.qty * c[i]
        equity[i] = eq
        allowed = ks.update_equity(eq, at=times[i] + step) if ks is not None else True
        bar = Bar(high=h[i], low=lo[i], close=c[i], time=times[i], entry_rule=name(0, i), exit_rule=name(1, i),
                  short_entry_rule=name(2, i), short_exit_rule=name(3, i))
        if i >= n - 2:
            sizer = None         # an entry decided now would fill on the last bar (or never): not taken
        else:
            room = eq * fut.leverage if margin_book else cash
            sizer = (lambda b, side="long", eq=eq, i=i, room=room: size_entry(
                equity=eq, cash=room, price=c[i], atr=atr[i], risk=cfg, filters=filters, fee_buffer=fee_buffer,
                side=side))
        if detail is not None and pos is not None and use_stops and pos.stop_hit(bar) and pos.take_profit_hit(bar):
            first = detail.first_touch(times[i], pos)
            if first == "take_profit":      # the lower timeframe says the take-profit came first
                pos = _replace(pos, stop=None)
        act = decide(bar, position=pos, policy=policy, entries_allowed=allowed, sizer=sizer,
                     bars_since_exit=None if last_exit is None else i - last_exit)
        if act.kind == "skip":
            skips[act.reason] = skips.get(act.reason, 0) + 1
        elif act.kind == ENTER and sizer is not None:
            entries[i], amounts[i] = True, act.size.qty
            pending = (act, i)
        elif act.kind == EXIT and i < n - 1:
            exits[i] = True
            market_x[i] = act.exit_kind != "signal"
            pending = (act, i)
            if act.reverse is not None and act.reverse.kind == "skip":
                skips[act.reverse.reason] = skips.get(act.reverse.reason, 0) + 1
            if act.reverses and sizer is None:
                pending = (_replace(act, reverse=None), i)
        elif pos is not None and act.kind != EXIT:
            pos = trail(pos, bar)
    if pos is not None:
        rate = single if single is not None else costs.taker_rate
        close_trade(n - 1, fill_price(c[-1], pos.side == "short"), rate, "end")
        equity[-1] = cash
    return DecidedPath(entries, exits, amounts, market_x, equity, trades, skips, ks.trips if ks is not None else [])


def _replace(obj, **kw):
    from dataclasses import replace

    return replace(obj, **kw)


def all_in_risk():
    """``risk=None``'s settings as an S6 RiskConfig: all the cash, no stops, no kill-switch."""
    from S6.config import RiskConfig

    return RiskConfig().replace(sizing={"method": "fixed", "fixed_fraction": 1.0, "max_position_fraction": 1.0},
                                stops={"take_profit_rr": None},
                                kill_switch={"max_drawdown": None, "daily_loss_limit": None,
                                             "max_consecutive_losses": None})


def check_market(rules, market: str) -> None:
    """Spot trading is long only: a rule file with ``short_entry`` rules is refused there."""
    if market == "spot" and getattr(rules, "has_short", False):
        raise UserError(f"{getattr(rules, 'source', 'the rule file')} has short_entry rules, which spot trading "
                        "cannot execute", "run it on USD-M perpetuals: --market usdm (or remove the short rules)")


__all__ = ["DecidedPath", "MemoryKillSwitch", "RiskHooks", "all_in_risk", "atr_values", "check_market", "decided_path", "load_risk",
           "risk_hooks", "rule_codes"]
