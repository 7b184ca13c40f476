"""Tune one rule set on a portfolio: ``python S5/optimize.py --symbols A,B,C --max-open 2 ...``.

The objective of a trial is the portfolio backtest's metric (:func:`S5.portfolio_backtest.run_portfolio`)
on the **training split**: the bars before the time ``train_frac`` of the way through the union
of the symbols' bar times. Every symbol's rules are evaluated on its training rows only (later
rows are not passed in) and the portfolio starts flat with the whole cash. The best params are
then reported on the test split (rules evaluated on all rows -- they are causal -- the portfolio
started flat at the split time), next to the rule file's own params. The single-symbol search
(:func:`S5.optimizer.optimize`) is unchanged; this module reuses its settings
(:class:`~S5.optimizer.OptimizeConfig`: objective, trials, train share, min trades, seed,
costs, init cash, risk) and sampler.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from S1.errors import UserError
from S5.portfolio_backtest import PortfolioResult, SymbolInputs, prepare_symbol, run_portfolio
from S5.trial_loop import best_trial


def slice_inputs(inp: SymbolInputs, start_ns: int | None = None, end_ns: int | None = None) -> SymbolInputs:
    """The bars of ``inp`` with ``start_ns <= time < end_ns`` (arrays sliced, nothing recomputed)."""
    lo = 0 if start_ns is None else int(np.searchsorted(inp.times, start_ns, side="left"))
    hi = len(inp) if end_ns is None else int(np.searchsorted(inp.times, end_ns, side="left"))
    cut = slice(lo, hi)
    return replace(inp, times=inp.times[cut], open=inp.open[cut], high=inp.high[cut], low=inp.low[cut],
                   close=inp.close[cut], atr=inp.atr[cut], entry_code=inp.entry_code[cut],
                   exit_code=inp.exit_code[cut], score=inp.score[cut])


@dataclass
class PortfolioOptimizeResult:
    best_params: dict[str, Any]
    best_value: float
    split_time: pd.Timestamp
    in_sample: PortfolioResult
    out_of_sample: PortfolioResult
    default_in_sample: PortfolioResult
    default_out_of_sample: PortfolioResult
    counts: dict[str, int]
    study: Any

    def comparison(self) -> pd.DataFrame:
        keys = ("total_return", "sharpe", "sortino", "calmar", "max_drawdown", "n_trades", "win_rate")
        cols = {"best, train": self.in_sample, "best, test": self.out_of_sample,
                "default, train": self.default_in_sample, "default, test": self.default_out_of_sample}
        return pd.DataFrame({c: [r.metrics.get(k) for k in keys] for c, r in cols.items()}, index=list(keys))


def _search(objective, config, *, storage=None, study_name=None, progress=False, seed_offset: int = 0):
    import optuna

    from S5.trial_loop import make_sampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", storage=storage, study_name=study_name,
                                load_if_exists=storage is not None,
                                sampler=make_sampler(config.sampler, config.seed + seed_offset))
    study.optimize(objective, n_trials=max(0, config.n_trials - len(study.trials)), show_progress_bar=progress)
    counts: dict[str, int] = {}
    for t in study.trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise UserError(f"no trial reached {config.min_trades} trades on the training bars ({counts})",
                        "lower --min-trades, widen the params ranges, or use a longer window")
    return study, counts


def _objective_fn(run, config):
    from S5.optimizer import trial_score

    def objective(trial) -> float:
        m = run(trial).metrics
        trial.set_user_attr("train", {"n_trades": int(m["n_trades"]), "total_return": float(m["total_return"])})
        return trial_score(m, config)

    return objective


def _search_setup(frames: dict[str, pd.DataFrame], rules, config, filters: dict | None):
    """What both portfolio searches start from: the rules' search space (none is a
    :class:`UserError`), the risk file (``config.risk``, else the backtest's default),
    the exchange filters per symbol and the union of the symbols' bar times (ns)."""
    from S5.hooks import load_risk

    space = rules.param_space()
    if not space:
        raise UserError("the rule file has no searchable params (no low/high or choices)",
                        "give params ranges, e.g. rsi_buy: {value: 30, low: 20, high: 40}")
    risk = load_risk(config.risk)
    if risk is None:
        from S5.backtest_files import DEFAULT_RISK

        risk = load_risk(DEFAULT_RISK)
    union = np.unique(np.concatenate([f.index.as_unit("ns").asi8 for f in frames.values()]))
    return space, risk, filters or {}, union


def optimize_portfolio(frames: dict[str, pd.DataFrame], rules, *, interval: str, max_open: int, config,
                       rank_lookback: int = 24, filters: dict | None = None, storage: str | None = None,
                       study_name: str | None = None, progress: bool = False) -> PortfolioOptimizeResult:
    """Search ``rules.param_space()`` with the portfolio objective (see the module docstring).
    ``frames``: each symbol's rule-input frame (:func:`S4.signals.load_rule_inputs`)."""
    space, risk, filters, union = _search_setup(frames, rules, config, filters)
    split_ns = int(union[min(len(union) - 1, max(1, int(len(union) * config.train_frac)))])
    train_frames = {s: f.loc[f.index.as_unit("ns").asi8 < split_ns] for s, f in frames.items()}

    def run(fr: dict, r, lo_ns=None) -> PortfolioResult:
        inputs = [prepare_symbol(f, r, symbol=s, risk=risk, rank_lookback=rank_lookback, filters=filters.get(s))
                  for s, f in fr.items()]
        if lo_ns is not None:
            inputs = [x for x in (slice_inputs(i, lo_ns) for i in inputs) if len(x) >= 3]
        return run_portfolio(inputs, risk=risk, interval=interval, max_open=max_open, costs=config.costs,
                             init_cash=config.init_cash)

    objective = _objective_fn(lambda trial: run(train_frames, rules.suggest(trial)), config)

    study, counts = _search(objective, config, storage=storage, study_name=study_name, progress=progress)
    best = best_trial(study)
    best_rules = rules.with_params(**{k: v for k, v in best.params.items() if k in space})
    best_params = {k: best_rules.param(k) for k in space}
    return PortfolioOptimizeResult(
        best_params, float(best.value), pd.Timestamp(split_ns, tz="UTC"),
        run(train_frames, best_rules), run(frames, best_rules, split_ns),
        run(train_frames, rules), run(frames, rules, split_ns), counts, study)


@dataclass
class PortfolioWalkForward:
    """Per fold: the window times, the chosen params, the test window's portfolio; the stitched test equity."""

    folds: list[dict[str, Any]]
    tests: list[PortfolioResult]
    equity: pd.Series
    metrics: dict[str, Any]


def walk_forward_portfolio(frames: dict[str, pd.DataFrame], rules, *, interval: str, max_open: int, config, wf,
                           rank_lookback: int = 24, filters: dict | None = None) -> PortfolioWalkForward:
    """Walk-forward on a portfolio: ``wf`` (:class:`S5.walkforward_search.WalkForwardConfig`) plans
    the folds on the union of the symbols' bar times; fold ``k`` searches on its train window
    (rules evaluated on the rows before the window's end, the portfolio started flat at its
    start), then runs the chosen params once on its test window (rows up to the window's end),
    started flat with the equity the previous test window ended with (the test windows
    compound, as :func:`S5.walkforward_search.stitch` chains them)."""
    from S5 import metrics as M
    from S5.bars import bars_per_year

    space, risk, filters, union = _search_setup(frames, rules, config, filters)
    index = pd.DatetimeIndex(union, tz="UTC")
    plan = wf.plan(index, interval)
    ns = {s: f.index.as_unit("ns").asi8 for s, f in frames.items()}
    edge = lambda b: int(union[b]) if b < len(union) else int(union[-1]) + 1   # noqa: E731

    def run(r, lo: int, hi: int, cash: float) -> PortfolioResult:
        lo_ns, hi_ns = edge(lo), edge(hi)
        inputs = [prepare_symbol(f.loc[ns[s] < hi_ns], r, symbol=s, risk=risk, rank_lookback=rank_lookback,
                                 filters=filters.get(s)) for s, f in frames.items() if (ns[s] < hi_ns).sum() >= 3]
        inputs = [x for x in (slice_inputs(i, lo_ns) for i in inputs) if len(x) >= 3]
        if not inputs:
            raise UserError("a walk-forward window holds no symbol with 3 bars", "use fewer folds or longer windows")
        return run_portfolio(inputs, risk=risk, interval=interval, max_open=max_open, costs=config.costs,
                             init_cash=cash)

    folds, tests, cash = [], [], float(config.init_cash)
    for f in plan.folds:
        objective = _objective_fn(lambda trial, f=f: run(rules.suggest(trial), f.train_start, f.train_end,
                                                         config.init_cash), config)
        study, counts = _search(objective, config, seed_offset=f.k)
        top = best_trial(study)
        best = rules.with_params(**{k: v for k, v in top.params.items() if k in space})
        test = run(best, f.test_start, f.test_end, cash)
        cash = test.final_equity
        tests.append(test)
        folds.append({**plan.fold_dict(f), "params": {k: best.param(k) for k in space},
                      "train_value": float(top.value), "trials": counts,
                      "test_metrics": {k: test.metrics.get(k)
                                       for k in ("total_return", "sharpe", "max_drawdown", "n_trades")}})
    equity = pd.concat([t.equity["equity"] for t in tests])
    tr = pd.concat([t.trades for t in tests], ignore_index=True)
    met = M.compute_metrics(equity.to_numpy(), init_cash=config.init_cash, periods_per_year=bars_per_year(interval),
                            trade_pnl=tr["pnl"].to_numpy(np.float64), trade_return=tr["return"].to_numpy(np.float64),
                            trade_fees=tr["fees"].to_numpy(np.float64),
                            in_position=np.concatenate([t.open_counts > 0 for t in tests]),
                            first_open=1.0, last_close=float(np.prod([t.buy_and_hold().iloc[-1] / t.init_cash
                                                                     for t in tests])))
    met = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in met.items()}
    met["folds"] = len(tests)
    return PortfolioWalkForward(folds, tests, equity, met)


def optimize_command(args) -> int:
    """``python S5/optimize.py --symbols A,B --max-open N ...``: search, print, write
    ``data/portfolio_<name>_optimize.json`` (best params, split, in- vs out-of-sample metrics)."""
    import json

    from rich.console import Console

    from S1.datasets import Dataset, atomic_write_text, portfolio_path
    from S4.signals import load_rule_inputs
    from S5.exchange import costs_from_args
    from S5.hooks import load_risk
    from S5.metrics import format_metric, to_jsonable
    from S5.optimizer import OptimizeConfig
    from S5.portfolio_files import parse_symbols

    if not args.symbols:
        raise UserError("give --symbol SYMBOL (one market) or --symbols A,B (a portfolio)", "e.g. --symbol ETHUSDC")
    if args.max_open is None:
        raise UserError("--symbols needs --max-open", "e.g. --max-open 2")
    unsupported = [o for o, v in (("--workers", getattr(args, "workers", 1) != 1 or None),
                                  ("--report-only", getattr(args, "report_only", False) or None)) if v]
    if unsupported:
        raise UserError(f"{', '.join(unsupported)} with --symbols is not supported yet",
                        "drop it: the portfolio search runs in this process")
    syms = parse_symbols(args.symbols)
    inputs = {s: load_rule_inputs(Dataset(s, args.interval, args.days), args.rules) for s in syms}
    rules = inputs[syms[0]].rules
    config = OptimizeConfig(objective=args.objective, n_trials=args.trials,
                            train_frac=0.7 if args.train_frac is None else args.train_frac,
                            min_trades=args.min_trades, seed=args.seed, costs=costs_from_args(args),
                            init_cash=args.init_cash, risk=load_risk(args.risk), sampler=args.sampler)
    name = "_".join(s.lower() for s in syms[:4]) + (f"_{len(syms)}" if len(syms) > 4 else "")
    if getattr(args, "walk_forward", None) is not None:
        from S5.walkforward_search import WalkForwardConfig

        wf = WalkForwardConfig(n_folds=args.walk_forward, mode=args.wf_mode or "rolling", train=args.wf_train,
                               test=args.wf_test, gap=0 if args.wf_gap is None else args.wf_gap,
                               train_frac=0.7 if args.train_frac is None else args.train_frac)
        out = walk_forward_portfolio({s: i.frame for s, i in inputs.items()}, rules, interval=args.interval,
                                     max_open=args.max_open, config=config, wf=wf)
        for f in out.folds:
            print(f"fold {f['fold']}: test {f['test'][0]} .. {f['test'][1]}  params {f['params']}  "
                  f"test return {format_metric('total_return', f['test_metrics']['total_return'])}")
        print("stitched test windows: " + ", ".join(f"{k} {format_metric(k, out.metrics[k])}" for k in (
            "total_return", "sharpe", "max_drawdown", "n_trades") if k in out.metrics))
        path = portfolio_path(name, "walkforward")
        atomic_write_text(path, json.dumps(to_jsonable({
            "symbols": syms, "interval": args.interval, "days": args.days, "rules": args.rules,
            "max_open": args.max_open, "objective": args.objective, "folds": out.folds, "metrics": out.metrics,
            "simulated": any(i.simulated for i in inputs.values())}), indent=2, allow_nan=False))
        print(f"wrote {path}")
        return 0
    res = optimize_portfolio({s: i.frame for s, i in inputs.items()}, rules, interval=args.interval,
                             max_open=args.max_open, config=config, storage=args.storage,
                             study_name=args.study_name)
    simulated = any(i.simulated for i in inputs.values())
    console = Console()
    label = " [SIMULATED market data]" if simulated else ""
    console.print(f"portfolio {','.join(syms)} max-open {args.max_open}: trials {res.counts}{label}")
    console.print("best params (chosen on train): " + ", ".join(f"{k}={v}" for k, v in res.best_params.items()))
    comp = res.comparison()
    for m in comp.index:
        console.print(f"{m:>14}: " + "  ".join(f"{c} {format_metric(m, comp.loc[m, c])}" for c in comp.columns))
    path = portfolio_path(name, "optimize")
    doc = to_jsonable({"symbols": syms, "interval": args.interval, "days": args.days, "rules": args.rules,
                       "max_open": args.max_open, "objective": args.objective, "simulated": simulated,
                       "best_params": res.best_params, "best_value": res.best_value,
                       "split_time": res.split_time.isoformat(), "trials": res.counts,
                       "comparison": {c: comp[c].to_dict() for c in comp.columns}})
    atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False))
    print(f"wrote {path}")
    return 0


__all__ = ["PortfolioOptimizeResult", "PortfolioWalkForward", "optimize_command", "optimize_portfolio",
           "slice_inputs", "walk_forward_portfolio"]
