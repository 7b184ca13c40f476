"""Tune one rule set on a portfolio: ``python S5/optimize.py --symbols A,B,C --max-open 2 ...``.

The objective of a trial is the portfolio backtest's metric (:func:`S5.portfolio_backtest.run_portfolio`)
on the **training split**: the bars before the time ``train_frac`` of the way through the union
of the symbols' bar times. Every symbol's rules are evaluated on its training rows only (later
rows are not passed in) and the portfolio starts flat with the whole cash. The best params are
then reported on the test split (rules evaluated on all rows -- they are causal -- the portfolio
started flat at the split time), next to the rule file's own params. The single-symbol search
(:func:`S5.optimize_lib.optimize`) is unchanged; this module reuses its settings
(:class:`~S5.optimize_lib.OptimizeConfig`: objective, trials, train share, min trades, seed,
costs, init cash, risk) and sampler.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from S1.errors import UserError
from S5.portfolio_backtest import PortfolioResult, SymbolInputs, prepare_symbol, run_portfolio


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


def optimize_portfolio(frames: dict[str, pd.DataFrame], rules, *, interval: str, max_open: int, config,
                       rank_lookback: int = 24, filters: dict | None = None, storage: str | None = None,
                       study_name: str | None = None, progress: bool = False) -> PortfolioOptimizeResult:
    """Search ``rules.param_space()`` with the portfolio objective (see the module docstring).
    ``frames``: each symbol's rule-input frame (:func:`S4.signals.load_rule_inputs`)."""
    import optuna

    from S5.hooks import load_risk
    from S5.optimize_lib import objective_value
    from S5.trial_loop import make_sampler

    space = rules.param_space()
    if not space:
        raise UserError("the rule file has no searchable params (no low/high or choices)",
                        "give params ranges, e.g. rsi_buy: {value: 30, low: 20, high: 40}")
    risk = load_risk(config.risk)
    if risk is None:
        from S5.backtest_lib import DEFAULT_RISK

        risk = load_risk(DEFAULT_RISK)
    filters = filters or {}
    union = np.unique(np.concatenate([f.index.as_unit("ns").asi8 for f in frames.values()]))
    split_ns = int(union[min(len(union) - 1, max(1, int(len(union) * config.train_frac)))])
    train_frames = {s: f.loc[f.index.as_unit("ns").asi8 < split_ns] for s, f in frames.items()}

    def run(fr: dict, r, lo_ns=None) -> PortfolioResult:
        inputs = [prepare_symbol(f, r, symbol=s, risk=risk, rank_lookback=rank_lookback, filters=filters.get(s))
                  for s, f in fr.items()]
        if lo_ns is not None:
            inputs = [x for x in (slice_inputs(i, lo_ns) for i in inputs) if len(x) >= 3]
        return run_portfolio(inputs, risk=risk, interval=interval, max_open=max_open, costs=config.costs,
                             init_cash=config.init_cash)

    def objective(trial) -> float:
        res = run(train_frames, rules.suggest(trial))
        m = res.metrics
        trial.set_user_attr("train", {"n_trades": int(m["n_trades"]), "total_return": float(m["total_return"])})
        if int(m["n_trades"]) < config.min_trades:
            raise optuna.TrialPruned(f"{int(m['n_trades'])} trades < min {config.min_trades}")
        value = objective_value(m, config.objective)
        if not np.isfinite(value):
            raise optuna.TrialPruned(f"{config.objective} is undefined")
        return value

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", storage=storage, study_name=study_name,
                                load_if_exists=storage is not None, sampler=make_sampler(config.sampler, config.seed))
    study.optimize(objective, n_trials=max(0, config.n_trials - len(study.trials)), show_progress_bar=progress)
    counts = {}
    for t in study.trials:
        counts[t.state.name.lower()] = counts.get(t.state.name.lower(), 0) + 1
    if not any(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials):
        raise UserError(f"no trial reached {config.min_trades} trades on the training bars ({counts})",
                        "lower --min-trades, widen the params ranges, or use a longer window")
    best_rules = rules.with_params(**{k: v for k, v in study.best_params.items() if k in space})
    best_params = {k: best_rules.param(k) for k in space}
    return PortfolioOptimizeResult(
        best_params, float(study.best_value), pd.Timestamp(split_ns, tz="UTC"),
        run(train_frames, best_rules), run(frames, best_rules, split_ns),
        run(train_frames, rules), run(frames, rules, split_ns), counts, study)


def optimize_command(args) -> int:
    """``python S5/optimize.py --symbols A,B --max-open N ...``: search, print, write
    ``data/portfolio_<name>_optimize.json`` (best params, split, in- vs out-of-sample metrics)."""
    import json

    from rich.console import Console

    from S1.datasets import atomic_write_text, portfolio_path
    from S4.signals import load_rule_inputs
    from S5.exchange import costs_from_args
    from S5.hooks import load_risk
    from S5.metrics import format_metric, to_jsonable
    from S5.optimize_lib import OptimizeConfig
    from S5.portfolio_files import parse_symbols

    if not args.symbols:
        raise UserError("give --symbol SYMBOL (one market) or --symbols A,B (a portfolio)", "e.g. --symbol ETHUSDC")
    if args.max_open is None:
        raise UserError("--symbols needs --max-open", "e.g. --max-open 2")
    unsupported = [o for o, v in (("--walk-forward", getattr(args, "walk_forward", None)),
                                  ("--workers", getattr(args, "workers", 1) != 1 or None),
                                  ("--report-only", getattr(args, "report_only", False) or None)) if v]
    if unsupported:
        raise UserError(f"{', '.join(unsupported)} with --symbols is not supported yet",
                        "drop it: the portfolio search runs in this process")
    syms = parse_symbols(args.symbols)
    inputs = {s: load_rule_inputs(s, args.interval, args.days, args.rules) for s in syms}
    rules = inputs[syms[0]].rules
    config = OptimizeConfig(objective=args.objective, n_trials=args.trials,
                            train_frac=0.7 if args.train_frac is None else args.train_frac,
                            min_trades=args.min_trades, seed=args.seed, costs=costs_from_args(args),
                            init_cash=args.init_cash, risk=load_risk(args.risk), sampler=args.sampler)
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
    name = "_".join(s.lower() for s in syms[:4]) + (f"_{len(syms)}" if len(syms) > 4 else "")
    path = portfolio_path(name, "optimize")
    doc = to_jsonable({"symbols": syms, "interval": args.interval, "days": args.days, "rules": args.rules,
                       "max_open": args.max_open, "objective": args.objective, "simulated": simulated,
                       "best_params": res.best_params, "best_value": res.best_value,
                       "split_time": res.split_time.isoformat(), "trials": res.counts,
                       "comparison": {c: comp[c].to_dict() for c in comp.columns}})
    atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False))
    print(f"wrote {path}")
    return 0


__all__ = ["PortfolioOptimizeResult", "optimize_command", "optimize_portfolio", "slice_inputs"]
