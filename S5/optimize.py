"""Search a rule file's params ranges with Optuna -- train first, test after.

    python S5/optimize.py --symbol ETHUSDC --interval 1h --days 365 --rules S4/rules.yaml --trials 200
    python S5/optimize.py --symbol ETHUSDC --interval 1h --days 365 --rules S4/rules_ta_only.yaml \\
        --objective calmar --storage postgresql://user:pass@dbhost/optuna --study eth-ta --workers 2

reads ``data/ethusdc_1h_365d_ta.parquet`` (plus sentiment / ML when the rules read
them), chooses the params on the first 70 % of the bars, reports them on the last
30 %, and writes ``data/ethusdc_1h_365d__<rules>_best.yaml`` (a ready rule file),
``reports/ethusdc_1h_365d__<rules>_optimize.html`` (history, importances, in- vs
out-of-sample) and ``reports/ethusdc_1h_365d__<rules>_optimize.json``. The study is
stored (default ``sqlite:///data/optuna.db``) and resumes where it stopped.

Walk-forward (rolling or anchored re-optimisation, each fold tested on unseen bars):

    python S5/optimize.py --symbol ETHUSDC --interval 1h --days 365 --rules S4/rules.yaml \\
        --walk-forward 6 --wf-test 30d [--wf-train 90d] [--wf-mode anchored] [--wf-gap 24] --trials 100 \\
        [--workers 3 | --scheduler tcp://host:8786]      # folds in 3 local processes / on a Dask cluster

writes ``reports/ethusdc_1h_365d__<rules>_walkforward.html|.json``, ``..._walkforward_folds.parquet``
and ``..._walkforward_equity.parquet`` (see S5/walkforward_files.py). ``<rules>`` is the rule
file's name (``rules`` for S4/rules.yaml), as in every output derived from a rule file. See S5/README.md.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.options import slippage_fraction


def build_parser() -> ArgumentParser:
    from S1.options import (
        add_cash_option,
        add_fee_options,
        add_output_switches,
        add_risk_option,
        add_rules_option,
    )

    p = ArgumentParser(prog="S5/optimize.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--symbol", default=None, help="e.g. ETHUSDC (or --symbols for a portfolio)")
    p.add_argument("--symbols", default=None, help="tune on a portfolio: comma-separated, e.g. BTCUSDT,ETHUSDT "
                   "(S5/portfolio.py's backtest on the training split is the objective; with --max-open)")
    p.add_argument("--max-open", type=int, default=None, help="with --symbols: most positions open at once")
    p.add_argument("--interval", default="1h", help="Binance interval (default 1h, as S1/historical.py)")
    p.add_argument("--days", type=int, default=365, help="window of the S2 file (default 365, as S1/historical.py)")
    add_rules_option(p, help="rule file with params ranges (default S4/rules.yaml)")
    p.add_argument("--trials", type=int, default=200, help="total trials of the study (finished ones count; 200)")
    p.add_argument("--objective", default="sharpe", choices=["sharpe", "calmar", "sortino", "total_return"],
                   help="what to maximise on the training bars (default sharpe)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (default sqlite:///<data dir>/optuna.db; a PostgreSQL URL lets "
                        "several machines share one study)")
    p.add_argument("--study-name", "--study", dest="study_name", default=None,
                   help="default <symbol>_<interval>_<days>d_<rules>_<objective>")
    p.add_argument("--train-frac", type=float, default=None,
                   help="share of the bars used to choose (0.7); with --walk-forward: the train share of each "
                        "fold's train + test when --wf-train is not given")
    p.add_argument("--min-trades", type=int, default=20,
                   help="trials with fewer closed trades on the training bars are pruned (20)")
    p.add_argument("--seed", type=int, default=42, help="sampler seed (42)")
    dist = p.add_argument_group("several workers (one study, see S5/README.md)")
    dist.add_argument("--workers", type=int, default=1, metavar="N",
                      help="N local worker processes on the study (1); the same command on another machine with "
                           "the same --storage (PostgreSQL) and --study joins it. --trials stays the study's total. "
                           "With --walk-forward: the folds run in N local processes")
    dist.add_argument("--scheduler", default=None, metavar="ADDRESS",
                      help="with --walk-forward: run the folds on a Dask cluster, e.g. tcp://10.0.0.5:8786 (workers "
                           "need this repo and the data; pass a PostgreSQL --storage to keep the fold studies)")
    dist.add_argument("--sampler", default="tpe", choices=["tpe", "random"],
                      help="tpe (default) or random: each trial's params depend only on --seed and its number, so "
                           "any number of workers evaluates the same trials")
    dist.add_argument("--heartbeat", type=int, default=30, metavar="SECONDS",
                      help="a running trial's heartbeat period; a worker silent for twice this (killed) has its "
                           "trial marked FAIL and the budget refilled (30)")
    dist.add_argument("--report-only", action="store_true",
                      help="run no trial: write the report of the study as it is now")
    p.add_argument("--fresh", action="store_true",
                   help="delete the stored study of the same name first and start again")
    p.add_argument("--add-trials", type=int, default=None, metavar="N",
                   help="run N trials on top of those already stored (instead of up to the --trials total)")
    dist.add_argument("--worker-only", action="store_true", help=argparse.SUPPRESS)
    dist.add_argument("--worker-index", type=int, default=0, help=argparse.SUPPRESS)
    add_fee_options(p)
    add_cash_option(p)
    add_risk_option(p, allow_none=False, help="S6 risk config applied in every trial")
    add_output_switches(p, png=False)
    from S5.exchange import add_execution_args

    add_execution_args(p)
    wf = p.add_argument_group("walk-forward")
    wf.add_argument("--walk-forward", type=int, default=None, metavar="N",
                    help="N folds: optimise on each train window, test on the next unseen window (--trials per fold)")
    wf.add_argument("--wf-mode", default=None, choices=["rolling", "anchored"],
                    help="rolling: fixed-length train windows (default); anchored: expanding from the first bar")
    wf.add_argument("--wf-train", default=None, metavar="LEN",
                    help="train window in bars (2160) or as a duration (90d, 12h, 2w); default: from --train-frac")
    wf.add_argument("--wf-test", default=None, metavar="LEN",
                    help="test window in bars or as a duration (30d); default: from --train-frac (or, with --wf-train, the bars left split into N)")
    wf.add_argument("--wf-gap", type=int, default=None, metavar="BARS",
                    help="bars left out between each train window and its test window (0)")
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # the one vocabulary (S1/options.py) -> the names the code below reads
    args.fees, args.slippage, args.init_cash, args.no_report = args.fee, slippage_fraction(args), args.cash, args.no_html
    if args.symbols or args.symbol is None:  # a portfolio (or neither: one clear error there)
        from S5.portfolio_optimize import optimize_command

        return optimize_command(args)
    from rich.console import Console
    from rich.table import Table

    from S1.datasets import Dataset, dataset_path
    from S5.exchange import costs_from_args, peek_market, with_filters
    from S5.hooks import load_risk
    from S5.metrics import format_metric
    from S5.optimizer import OptimizeConfig, optimize_files, redact_url
    from S5.trial_loop import wait_workers

    wf = _walk_forward_config(args)
    if wf is not None:
        from S1.fanout import check_scheduler

        check_scheduler(args.scheduler, args.workers)
    elif args.scheduler is not None:
        from S1.errors import UserError

        raise UserError("--scheduler spreads walk-forward folds; a single study spreads with --workers",
                        "add --walk-forward N, or use --workers N (and the same command on other machines)")
    costs = costs_from_args(args)
    ds = Dataset.from_args(args)
    ta_path = dataset_path(ds, "ta")
    if ta_path.exists():  # else the loader names the S2 command
        simulated, last_close = peek_market(ta_path)
        costs = with_filters(costs, args.symbol, mode=args.exchange_filters, file=args.exchange_info,
                             simulated=simulated, price=last_close)
    config = OptimizeConfig(objective=args.objective, n_trials=args.trials,
                            train_frac=0.7 if args.train_frac is None else args.train_frac,
                            min_trades=args.min_trades, seed=args.seed,
                            costs=costs, init_cash=args.init_cash,
                            risk=load_risk(args.risk), sampler=args.sampler, heartbeat=args.heartbeat,
                            worker_index=args.worker_index)
    if wf is not None:
        if args.fresh or args.add_trials is not None:
            from S1.errors import UserError

            raise UserError("--fresh / --add-trials are not supported with --walk-forward yet",
                            "pass a new --study for a fresh walk-forward, or a larger --trials per fold")
        return _walk_forward(args, config, wf, ds)
    config = _prepare_study(args, config, ds)
    workers = _start_workers(args, argv, config.n_trials)
    try:
        run = optimize_files(ds, args.rules, config=config, storage=args.storage,
                             study_name=args.study_name, report=not args.no_report,
                             progress=not args.worker_only, report_only=args.report_only,
                             search_only=args.worker_only or bool(workers))
    finally:
        codes = wait_workers(workers)
    if args.worker_only:
        return 0
    if workers:  # every worker is done: the report reads the whole study
        print(f"{len(workers) + 1} workers finished (extra workers' exit codes: {codes})", flush=True)
        run = optimize_files(ds, args.rules, config=config, storage=args.storage,
                             study_name=args.study_name, report=not args.no_report, progress=False,
                             report_only=True)
    res = run.result
    console = Console()
    label = " [SIMULATED market data]" if run.simulated else ""
    console.print(f"study {res.study.study_name!r} in {redact_url(run.storage)}: {res.counts}{label}")
    console.print("best params (chosen on train): " + ", ".join(f"{k}={v}" for k, v in res.best_params.items()))
    for verdict in res.verdicts():
        console.print(f"[bold yellow]note:[/] {verdict}")
    comp = res.comparison()
    t = Table(title=f"{args.objective}: in-sample vs out-of-sample")
    t.add_column("metric")
    for c in comp.columns:
        t.add_column(c, justify="right")
    for m in comp.index:
        t.add_row(m.replace("_", " "), *[format_metric(m, comp.loc[m, c]) for c in comp.columns])
    console.print(t)
    for path in run.paths.values():
        print(f"wrote {path}")
    return 0


def _prepare_study(args, config, ds):
    """``--fresh`` and ``--add-trials`` act once, here, before any worker starts: the workers then share
    one plain budget (``--trials`` = the study's total)."""
    from dataclasses import replace

    from S1.errors import UserError
    from S5.optimizer import default_storage, default_study_name, delete_stored_study, finished_trials

    if args.worker_only:
        return config
    if args.report_only and (args.fresh or args.add_trials):
        raise UserError("--report-only runs no trial", "drop --fresh / --add-trials, or drop --report-only")
    storage = args.storage or default_storage()
    args.storage = storage
    args.study_name = args.study_name or default_study_name(ds, args.rules, args.objective)
    if args.fresh:
        delete_stored_study(storage, args.study_name)
    if args.add_trials is not None:
        if not 1 <= args.add_trials <= 100_000:
            raise UserError(f"--add-trials must be from 1 to 100000, got {args.add_trials}", "e.g. --add-trials 50")
        total = finished_trials(storage, args.study_name) + args.add_trials
        print(f"--add-trials {args.add_trials}: the study's budget becomes {total} trials", flush=True)
        config = replace(config, n_trials=total)
    return config


def _start_workers(args, argv, n_trials: int) -> list:
    """Start ``--workers`` - 1 extra local processes on the study (this process is worker 0)."""
    from S1.errors import UserError
    from S5.trial_loop import spawn_workers, without_option

    if not 1 <= args.workers <= 64:
        raise UserError(f"--workers must be from 1 to 64, got {args.workers}", "e.g. --workers 2")
    if args.workers == 1 or args.worker_only or args.report_only:
        return []
    base = list(sys.argv[1:] if argv is None else argv)
    for opt in ("--workers", "--trials", "--add-trials", "--storage", "--study", "--study-name"):
        base = without_option(base, opt)
    base = without_option(base, "--fresh", takes_value=False)
    base += ["--trials", str(n_trials), "--storage", args.storage, "--study", args.study_name]
    return spawn_workers("S5.optimize", base, args.workers - 1)


def _walk_forward_config(args):
    """The walk-forward settings, checked before any data is read (None: a plain split)."""
    from S1.errors import UserError
    from S5.walkforward_search import WalkForwardConfig

    extra = [opt for opt, v in (("--wf-mode", args.wf_mode), ("--wf-train", args.wf_train),
                                ("--wf-test", args.wf_test), ("--wf-gap", args.wf_gap)) if v is not None]
    if args.walk_forward is None:
        if extra:
            raise UserError(f"{extra[0]} needs --walk-forward N", f"add e.g. --walk-forward 5, or drop {extra[0]}")
        return None
    if args.train_frac is not None and args.wf_train is not None:
        raise UserError("--train-frac has no effect with --wf-train (the train window is given)",
                        "drop --train-frac, or drop --wf-train to derive it from --train-frac")
    return WalkForwardConfig(n_folds=args.walk_forward, mode=args.wf_mode or "rolling", train=args.wf_train,
                             test=args.wf_test, gap=0 if args.wf_gap is None else args.wf_gap,
                             train_frac=0.7 if args.train_frac is None else args.train_frac)


def _walk_forward(args, config, wf, ds) -> int:
    from rich.console import Console
    from rich.table import Table

    from S5.metrics import format_metric
    from S5.optimizer import REPORT_METRICS, redact_url
    from S5.walkforward_files import FOLD_METRICS, walkforward_files

    run = walkforward_files(ds, args.rules, config=config, wf=wf,
                            storage=args.storage, study_name=args.study_name, report=not args.no_report,
                            workers=args.workers, scheduler=args.scheduler)
    res = run.result
    console = Console()
    label = " [SIMULATED market data]" if run.simulated else ""
    p = res.plan
    console.print(f"walk-forward: {len(p.folds)} {p.mode} folds, train {p.train_bars:,} / gap {p.gap:,} / test "
                  f"{p.test_bars:,} bars, {config.n_trials} trials per fold, studies "
                  f"{run.summary['study_name']}_fold<k>of{len(p.folds)} in "
                  f"{redact_url(run.storage) if run.storage else 'memory'}{label}")
    obj = config.objective
    shown = [m for m in FOLD_METRICS if m != obj]
    t = Table(title=f"per fold: {obj} in-sample (train) vs out-of-sample (test)")
    for c in ("fold", "test from", "IS", "OOS", *[f"{m} OOS" for m in shown]):
        t.add_column(c.replace("_", " "), justify="right")
    for fr in res.folds:
        t.add_row(str(fr.fold.k + 1), f"{res.plan.index[fr.fold.test_start]:%Y-%m-%d}",
                  format_metric(obj, fr.best_value), format_metric(obj, fr.out_of_sample.metrics.get(obj)),
                  *[format_metric(m, fr.out_of_sample.metrics.get(m)) for m in shown])
    console.print(t)
    t = Table(title="params chosen per fold (on its train window)")
    t.add_column("fold", justify="right")
    for k in res.space:
        t.add_column(k, justify="right")
    for fr in res.folds:
        t.add_row(str(fr.fold.k + 1), *[str(fr.best_params.get(k)) for k in res.space])
    t.add_row("stability", *[str(res.stability.loc[k, "verdict"]) for k in res.space])
    console.print(t)
    s = Table(title="stitched out-of-sample (all test windows chained)")
    s.add_column("metric")
    s.add_column("walk-forward", justify="right")
    s.add_column("rule defaults", justify="right")
    for m in REPORT_METRICS:
        s.add_row(m.replace("_", " "), format_metric(m, res.stitched.metrics.get(m)),
                  format_metric(m, res.default_stitched.metrics.get(m)))
    console.print(s)
    unstable = [str(k) for k, r in res.stability.iterrows() if r["verdict"] == "unstable"]
    agg = res.aggregate()
    console.print(f"profitable test windows {agg['profitable_test_windows']}/{agg['folds']}; walk-forward "
                  f"efficiency {format_metric('x', agg['walk_forward_efficiency'])}; unstable params: "
                  f"{', '.join(unstable) or 'none'}; latest params: "
                  + ", ".join(f"{k}={v}" for k, v in res.latest_params.items()))
    console.print(f"trade the latest params: {run.summary['latest_params_command']}", soft_wrap=True)
    for path in run.paths.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    main_entry(main)
