"""A portfolio backtest: several symbols, one pot of cash, S4's one decision per symbol per bar.

The work is split in two:

1. **per symbol, independent** (:func:`prepare_symbol`, fanned out by
   :func:`prepare_symbols` with :func:`S1.fanout.fan_out` -- in this process, local
   processes or a Dask cluster, results in symbol order): the rules' masks
   (:func:`S5.hooks.rule_codes`: the first entry / exit rule firing per bar), the ATR
   the sizer reads and the ranking score, as plain arrays;
2. **the cash-coupled loop, sequential** (:func:`run_portfolio`): one walk over the
   union of the symbols' bar times (a symbol with gaps, a later start or an earlier end
   trades only on the bars it has) that calls :func:`S4.decide.decide` per symbol per
   bar with the portfolio's state, exactly as :func:`S5.hooks.decided_path` does for
   one symbol.

Execution at each bar time ``T`` (the same model as S5's decided backtest):

- decisions of the symbol's previous bar fill at its bar's **open** (``open x (1 +/-
  slippage)``): exits first (they free cash), then entries; fees as S5's
  :class:`~S5.costs.Costs` (entries ``entry_rate``; signal exits maker / single rate;
  stop, take-profit, kill-switch and end-of-data exits taker);
- equity = cash + every open position at its symbol's latest close (mark-to-market);
  S6's kill-switch (when configured) steps on that equity;
- at the close each symbol present decides: a held position can exit (stop-loss /
  take-profit on closed bars, exit rules, kill-switch), a flat symbol whose entry rule
  fired is an entry **candidate**;
- **ranking** (when more candidates than free slots, ``max_open`` minus the open
  positions and the entries waiting for their fill): the highest trailing return over
  the last ``rank_lookback`` bars (``close[t] / close[t - L] - 1``, unknown = last)
  first, then the symbol name (alphabetical) -- :func:`rank_key`. Candidates beyond the
  free slots are skipped with reason ``max_open``;
- each accepted candidate is sized in that order by :func:`S4.decide.size_entry`
  against the **current portfolio equity** and the free cash (cash minus what the
  entries already decided and not yet filled reserved, ``qty x close x (1 +
  fee_buffer)``), capped and rounded by the symbol's exchange filters;
- an entry that would fill on the symbol's last bar is not taken; a position open at
  the symbol's last bar is closed at that close (``exit_reason`` ``end``).

Cash never goes negative: an entry whose fill (a gap up beyond the sizer's
``fee_buffer``) would cost more than the cash is cut to what the cash buys (rounded down
by the filters; dropped -- ``skips["cash_at_fill"]`` -- when that is below the filters'
minimum). Spot positions pay no funding: ``funding`` is 0 and the books satisfy
``final equity == init_cash + sum(trade pnl) - funding`` (to float rounding: both
sides add the same fill amounts in a different order).

A one-symbol portfolio takes exactly the decisions of :func:`S5.hooks.decided_path`
(the tests check it trade for trade), which ties it to the parity-proven path.

>>> import numpy as np, pandas as pd
>>> t = pd.date_range("2024-01-01", periods=5, freq="h", tz="UTC")
>>> def sym(name, closes, entry):
...     c = np.asarray(closes, float)
...     return SymbolInputs(name, t.asi8, c, c, c, c, np.full(5, 1.0), np.asarray(entry), np.full(5, -1),
...                         ("e",), ("x",), 0, trailing_return(c, 2))
>>> a = sym("AAA", [10, 10, 11, 12, 13], [-1, 0, -1, -1, -1]); b = sym("BBB", [10, 10, 10, 10, 10], [-1, 0, -1, -1, -1])
>>> from S6.config import RiskConfig
>>> risk = RiskConfig().replace(kill_switch={"max_drawdown": None}, stops={"stop_loss_pct": 0.5})
>>> res = run_portfolio([a, b], risk=risk, interval="1h", max_open=1, costs=Costs(fees=0.0, slippage=0.0))
>>> res.trades[["symbol", "entry_price", "exit_price", "exit_reason"]].values.tolist()   # BBB lost the rank
[['AAA', 11.0, 13.0, 'end']]
>>> res.skips
{'max_open': 1}
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from S1.errors import UserError
from S5.costs import Costs

TRADE_COLUMNS = ("symbol", "entry_time", "exit_time", "side", "size", "entry_price", "exit_price", "fees", "pnl",
                 "return", "entry_rule", "exit_reason")
#: How competing entries are ranked (written into the JSON).
RANKING = ("highest trailing return over the last rank_lookback bars (close[t] / close[t-L] - 1; unknown last), "
           "then symbol name A-Z")


@dataclass(frozen=True)
class SymbolInputs:
    """One symbol's arrays for the loop (picklable: they come back from worker processes)."""

    symbol: str
    times: np.ndarray          #: int64 ns UTC open times, increasing
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    atr: np.ndarray            #: the ATR the sizer reads (NaN: unknown)
    entry_code: np.ndarray     #: index of the first entry rule firing (-1: none)
    exit_code: np.ndarray      #: index of the first exit rule firing (-1: none)
    entry_names: tuple
    exit_names: tuple
    cooldown: int
    score: np.ndarray          #: ranking score per bar (higher first; NaN: last)
    filters: Any = None        #: S6 SymbolFilters (None: no rounding)
    trailing: Any = None       #: the rule file's trailing_stop (``("atr", k)`` / ``("pct", f)``), None: none
    simulated: bool = False
    sources: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.times)


def trailing_return(close: np.ndarray, lookback: int) -> np.ndarray:
    """``close[t] / close[t - lookback] - 1`` (NaN for the first ``lookback`` bars)."""
    out = np.full(len(close), np.nan)
    if 0 < lookback < len(close):
        out[lookback:] = close[lookback:] / close[:-lookback] - 1.0
    return out


def rank_key(score: float, symbol: str) -> tuple:
    """Sort key of an entry candidate: highest score first, unknown scores last, then symbol A-Z."""
    return (0, -score, symbol) if math.isfinite(score) else (1, 0.0, symbol)


def prepare_symbol(frame: pd.DataFrame, rules, *, symbol: str, risk, rank_lookback: int = 24, filters=None,
                   simulated: bool = False, sources: dict | None = None) -> SymbolInputs:
    """The arrays of one symbol: ``frame`` has the candles and every column ``rules`` reads."""
    from S4.decide import Policy
    from S5.hooks import atr_values, check_market, load_risk, rule_codes

    cfg = load_risk(risk)
    check_market(rules, "spot")          # the portfolio is spot, long only: short rules are refused
    if not isinstance(frame.index, pd.DatetimeIndex) or not frame.index.is_monotonic_increasing:
        raise UserError(f"{symbol}: the frame needs an increasing UTC time index", "pass S4's rule-input frame")
    if len(frame) < 3:
        raise UserError(f"{symbol}: only {len(frame)} bars", "use a longer window (--days)")
    ent, ext = rule_codes(frame, rules)
    close = frame["close"].to_numpy(np.float64)
    idx = frame.index.tz_convert("UTC") if frame.index.tz is not None else frame.index.tz_localize("UTC")
    return SymbolInputs(
        symbol=symbol, times=idx.as_unit("ns").asi8.astype(np.int64),
        open=frame["open"].to_numpy(np.float64), high=frame["high"].to_numpy(np.float64),
        low=frame["low"].to_numpy(np.float64), close=close, atr=atr_values(frame, cfg.stops.atr_period),
        entry_code=ent, exit_code=ext, entry_names=tuple(r.name for r in rules.entry),
        exit_names=tuple(r.name for r in rules.exit), cooldown=Policy.from_rules(rules).cooldown,
        score=trailing_return(close, int(rank_lookback)), filters=filters,
        trailing=getattr(rules, "trailing_stop", None), simulated=bool(simulated), sources=dict(sources or {}))


@dataclass
class PortfolioResult:
    """What :func:`run_portfolio` computed."""

    equity: pd.DataFrame        #: index time; cash, equity, one value column per symbol (qty x latest close)
    trades: pd.DataFrame        #: TRADE_COLUMNS
    skips: dict[str, int]
    trips: list[dict]
    symbols: list[str]
    init_cash: float
    funding: float
    max_open: int
    open_counts: np.ndarray     #: open positions at each bar's close
    closes: pd.DataFrame        #: each symbol's close on the union index (NaN where it has no bar)
    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def final_equity(self) -> float:
        return float(self.equity["equity"].iloc[-1])

    def buy_and_hold(self) -> pd.Series:
        """Equal-weight buy-and-hold of the same symbols: ``init_cash / N`` bought at each
        symbol's first open (no fees), held to its last close (cash before its start)."""
        out = np.zeros(len(self.closes))
        share = self.init_cash / len(self.symbols)
        for s in self.symbols:
            c = self.closes[s].to_numpy()
            first = int(np.flatnonzero(np.isfinite(c))[0])
            v = pd.Series(c).ffill().to_numpy() / self._first_open[s] * share
            v[:first] = share
            out += v
        return pd.Series(out, index=self.closes.index, name="buy_and_hold")

    _first_open: dict = field(default_factory=dict, repr=False)


def _close(pos: dict, px: float, rate: float) -> tuple[float, float]:
    fee = pos["qty"] * px * rate
    return pos["qty"] * px - fee, fee


def run_portfolio(inputs: list[SymbolInputs], *, risk, interval: str, max_open: int, costs: Costs = Costs(),
                  init_cash: float = 10_000.0, use_stops: bool = True, flatten_on_trip: bool | None = None,
                  fee_buffer: float = 0.003) -> PortfolioResult:
    """The portfolio loop (see the module docstring) over prepared symbols."""
    from S1.intervals import interval_ms
    from S4.decide import (
        ENTER,
        EXIT,
        SKIP,
        Bar,
        Policy,
        Position,
        decide,
        levels,
        size_entry,
        trail,
        trail_spec,
    )
    from S5.hooks import MemoryKillSwitch, _kill_switch_enabled, load_risk

    cfg = load_risk(risk)
    if cfg is None:
        raise UserError("no risk config given", "pass --risk S6/risk.yaml")
    if isinstance(max_open, bool) or not isinstance(max_open, int) or max_open < 1:
        raise UserError(f"--max-open must be a whole number >= 1, got {max_open!r}", "e.g. --max-open 2")
    if not inputs:
        raise UserError("no symbols given", "pass --symbols BTCUSDT,ETHUSDT")
    names = [s.symbol for s in inputs]
    if len(set(names)) != len(names):
        raise UserError(f"a symbol is given twice in {names}", "list each symbol once")
    if not (math.isfinite(init_cash) and init_cash > 0):
        raise UserError(f"init_cash must be positive, got {init_cash!r}", "e.g. --init-cash 10000")
    step_td = pd.Timedelta(milliseconds=interval_ms(interval))
    flatten = cfg.kill_switch.flatten_on_trip if flatten_on_trip is None else flatten_on_trip
    ks = MemoryKillSwitch(cfg) if _kill_switch_enabled(cfg.kill_switch) else None
    fee_in, single = costs.entry_rate, costs.single_rate
    from S5.costs import price_grid

    grids = [price_grid(s.filters) if s.filters is not None else costs.tick_grid for s in inputs]
    fill_at = lambda k, px, buy: costs.fill(px, buy=buy, grid=grids[k])
    exit_rate = (lambda risk_exit: single if single is not None else
                 (costs.taker_rate if risk_exit else costs.maker_rate))
    end_rate = single if single is not None else costs.taker_rate
    m = len(inputs)
    union = np.unique(np.concatenate([s.times for s in inputs]))
    nu = len(union)
    union_idx = pd.DatetimeIndex(union, tz="UTC").rename("time")
    # the (step, symbol, bar) triples in time order, symbols in input order within a step
    u_all = np.concatenate([np.searchsorted(union, s.times) for s in inputs])
    s_all = np.concatenate([np.full(len(s), k) for k, s in enumerate(inputs)])
    i_all = np.concatenate([np.arange(len(s)) for s in inputs])
    order = np.lexsort((s_all, u_all))
    u_all, s_all, i_all = u_all[order], s_all[order], i_all[order]
    bounds = np.searchsorted(u_all, np.arange(nu + 1))
    policies = [Policy(cooldown=s.cooldown, use_stops=use_stops, flatten_on_trip=flatten) for s in inputs]
    lens = [len(s) for s in inputs]

    cash, reserved, funding = float(init_cash), 0.0, 0.0
    pos: list[dict | None] = [None] * m          # qty, entry_price, entry_fee, position, trade fields
    pending: list[tuple | None] = [None] * m     # (action, decision bar, reserve)
    last_exit: list[int | None] = [None] * m
    last_close = np.full(m, np.nan)
    held: set[int] = set()
    n_pending_entries = 0
    eq_out, cash_out = np.empty(nu), np.empty(nu)
    values = np.zeros((nu, m))
    open_counts = np.zeros(nu, dtype=np.int64)
    trades: list[dict] = []
    skips: dict[str, int] = {}

    def skip(reason: str) -> None:
        skips[reason] = skips.get(reason, 0) + 1

    def exit_now(k: int, i: int, px: float, rate: float, reason: str, t) -> float:
        nonlocal cash
        p = pos[k]
        proceeds, fee = _close(p, px, rate)
        cash += proceeds
        pnl = p["qty"] * (px - p["entry_price"]) - p["entry_fee"] - fee
        trades.append({"symbol": inputs[k].symbol, "entry_time": p["entry_time"], "exit_time": t,
                       "side": p["side"], "size": p["qty"], "entry_price": p["entry_price"], "exit_price": px,
                       "fees": p["entry_fee"] + fee, "pnl": pnl, "return": pnl / (p["qty"] * p["entry_price"]),
                       "entry_rule": p["entry_rule"], "exit_reason": reason, "entry_bar": p["entry_bar"],
                       "exit_bar": i})
        pos[k] = None
        held.discard(k)
        return pnl

    for u in range(nu):
        lo_b, hi_b = bounds[u], bounds[u + 1]
        present = list(zip(s_all[lo_b:hi_b].tolist(), i_all[lo_b:hi_b].tolist()))
        t = union_idx[u]
        # 1. fills at the open: exits first, then entries
        for k, i in present:
            pe = pending[k]
            if pe is not None and pe[0].kind == EXIT:
                act, j, _ = pe
                pending[k] = None
                pnl = exit_now(k, i, fill_at(k, inputs[k].open[i], False), exit_rate(act.exit_kind != "signal"),
                               act.reason, t)
                last_exit[k] = j
                if ks is not None:
                    ks.record_trade(pnl, at=t)
        for k, i in present:
            pe = pending[k]
            if pe is not None and pe[0].kind == ENTER:
                act, j, reserve = pe
                pending[k] = None
                n_pending_entries -= 1
                reserved -= reserve
                s = inputs[k]
                fill = fill_at(k, s.open[i], True)
                qty = act.size.qty
                if qty * fill * (1.0 + fee_in) > cash:          # a gap beyond the fee buffer: what the cash buys
                    qty = cash / (fill * (1.0 + fee_in))
                    if s.filters is not None:
                        qty = float(s.filters.round_qty(qty))
                        if not s.filters.check_order(qty, fill, side="BUY", order_type="MARKET").ok:
                            qty = 0.0
                    if not qty > 0:
                        skip("cash_at_fill")
                        continue
                fee = qty * fill * fee_in
                cash -= qty * fill + fee
                stop, tp = levels(fill, act.size, s.filters)
                spec = trail_spec(s.trailing, s.atr[j]) if s.trailing is not None else None
                pos[k] = {"qty": qty, "entry_price": fill, "entry_fee": fee, "side": act.side, "entry_time": t,
                          "entry_rule": act.rule, "entry_bar": i,
                          "position": Position(qty=qty, entry_price=fill, stop=stop, take_profit=tp, side=act.side,
                                               trail=spec)}
                held.add(k)
        if n_pending_entries == 0:
            reserved = 0.0                                     # no drift from float subtraction
        # 2. mark to market at the close
        for k, i in present:
            last_close[k] = inputs[k].close[i]
        eq = cash + sum(pos[k]["qty"] * last_close[k] for k in held)
        allowed = ks.update_equity(eq, at=t + step_td) if ks is not None else True
        # 3. decisions at the close
        candidates = []
        for k, i in present:
            s = inputs[k]
            if pending[k] is not None:
                continue
            ec, xc = s.entry_code[i], s.exit_code[i]
            p = pos[k]
            if p is None and ec < 0:
                continue                                      # decide() would hold: no entry rule fired
            bar = Bar(high=s.high[i], low=s.low[i], close=s.close[i], time=t,
                      entry_rule=s.entry_names[ec] if ec >= 0 else None,
                      exit_rule=s.exit_names[xc] if xc >= 0 else None)
            since = None if last_exit[k] is None else i - last_exit[k]
            if p is not None:
                act = decide(bar, position=p["position"], policy=policies[k], entries_allowed=allowed,
                             bars_since_exit=since)
                if act.kind == EXIT and i < lens[k] - 1:
                    pending[k] = (act, i, 0.0)
                elif act.kind != EXIT:
                    p["position"] = trail(p["position"], bar)     # the trailing stop follows the closed bar
                continue
            act = decide(bar, position=None, policy=policies[k], entries_allowed=allowed, bars_since_exit=since)
            if act.kind == SKIP:
                skip(act.reason)
            elif act.kind == ENTER and i < lens[k] - 2:       # an entry filling on the last bar is not taken
                candidates.append((rank_key(float(s.score[i]), s.symbol), k, i, bar, since))
        if candidates:
            candidates.sort(key=lambda c: c[0])
            for _, k, i, bar, since in candidates:
                if len(held) + n_pending_entries >= max_open:
                    skip("max_open")
                    continue
                s = inputs[k]
                free = cash - reserved
                sizer = (lambda b, eq=eq, free=free, s=s, i=i: size_entry(
                    equity=eq, cash=free, price=s.close[i], atr=s.atr[i], risk=cfg, filters=s.filters,
                    fee_buffer=fee_buffer))
                act = decide(bar, position=None, policy=policies[k], entries_allowed=allowed, sizer=sizer,
                             bars_since_exit=since)
                if act.kind == ENTER:
                    reserve = act.size.qty * s.close[i] * (1.0 + fee_buffer)
                    pending[k] = (act, i, reserve)
                    reserved += reserve
                    n_pending_entries += 1
                else:
                    skip(act.reason)
        # 4. a symbol's data ends: close its position at that close
        for k, i in present:
            if i == lens[k] - 1 and pos[k] is not None:
                exit_now(k, i, fill_at(k, inputs[k].close[i], False), end_rate, "end", t)
        eq = cash + sum(pos[k]["qty"] * last_close[k] for k in held)
        for k in held:
            values[u, k] = pos[k]["qty"] * last_close[k]
        eq_out[u], cash_out[u] = eq, cash
        open_counts[u] = len(held)

    equity = pd.DataFrame({"cash": cash_out, "equity": eq_out}, index=union_idx)
    for k, s in enumerate(inputs):
        equity[s.symbol] = values[:, k]
    cols = list(TRADE_COLUMNS) + ["entry_bar", "exit_bar"]
    tr = pd.DataFrame(trades, columns=cols)
    tr["side"] = tr["side"].astype("string")
    for c in ("entry_time", "exit_time"):
        tr[c] = pd.to_datetime(tr[c], utc=True)
    tr = tr.sort_values(["exit_time", "symbol"], kind="stable").reset_index(drop=True)
    closes = pd.DataFrame({s.symbol: pd.Series(s.close, index=s.times).reindex(union).to_numpy() for s in inputs},
                          index=union_idx)
    res = PortfolioResult(equity, tr, skips, ks.trips if ks is not None else [], names, float(init_cash), funding,
                          max_open, open_counts, closes, _first_open={s.symbol: float(s.open[0]) for s in inputs})
    res.metrics = portfolio_metrics(res, interval)
    res.params = {"interval": interval, "symbols": names, "max_open": max_open, "init_cash": float(init_cash),
                  "fees": costs.fees, "slippage": costs.slippage, **({} if costs.is_plain else costs.as_dict()),
                  "ranking": RANKING, "use_stops": bool(use_stops), "fee_buffer": fee_buffer,
                  "execution": "S4.decide per symbol on each bar's close -> fill at that symbol's next open; "
                               "exits fill before entries; sizing against the portfolio equity at the close",
                  "risk": {"sizing": cfg.sizing.model_dump(), "stops": cfg.stops.model_dump(),
                           "kill_switch": cfg.kill_switch.model_dump()},
                  "decisions": {"entries": len(tr) , "skipped": dict(skips)}, "funding": funding}
    return res


def portfolio_metrics(res: PortfolioResult, interval: str) -> dict[str, Any]:
    """S5's metrics (:func:`S5.metrics.compute_metrics`) of the portfolio curve; the
    buy-and-hold figures are those of the equal-weight buy-and-hold of the same symbols."""
    from S5 import metrics as M
    from S5.bars import bars_per_year

    eq = res.equity["equity"].to_numpy()
    t = res.trades
    bh = res.buy_and_hold().to_numpy()
    met = M.compute_metrics(eq, init_cash=res.init_cash, periods_per_year=bars_per_year(interval),
                            trade_pnl=t["pnl"].to_numpy(np.float64), trade_return=t["return"].to_numpy(np.float64),
                            trade_fees=t["fees"].to_numpy(np.float64), in_position=res.open_counts > 0,
                            first_open=res.init_cash, last_close=float(bh[-1]))
    met = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in met.items()}
    met.update({"start": res.equity.index[0].isoformat(), "end": res.equity.index[-1].isoformat(),
                "bars": len(eq), "symbols": len(res.symbols), "max_open_positions": int(res.open_counts.max()),
                "funding": res.funding, "min_cash": float(res.equity["cash"].min())})
    if res.trips:
        met["kill_switch_trips"] = len(res.trips)
    return met


def contributions(res: PortfolioResult) -> pd.DataFrame:
    """Per symbol: trades, wins, pnl, fees and share of the total pnl."""
    t = res.trades
    g = t.groupby("symbol")
    out = pd.DataFrame({"trades": g.size(), "wins": g["pnl"].apply(lambda x: int((x > 0).sum())),
                        "pnl": g["pnl"].sum(), "fees": g["fees"].sum()}).reindex(res.symbols).fillna(0)
    total = float(t["pnl"].sum())
    out["share"] = out["pnl"] / total if total else np.nan
    return out


__all__ = ["RANKING", "TRADE_COLUMNS", "PortfolioResult", "SymbolInputs", "contributions", "portfolio_metrics",
           "prepare_symbol", "rank_key", "run_portfolio", "trailing_return"]
