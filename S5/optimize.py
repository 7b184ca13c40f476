"""Search a rule file's params ranges with Optuna -- train first, test after.

    python S5/optimize.py --symbol ETHUSDC --interval 1h --days 365 --rules S4/rules.yaml --trials 200
    python S5/optimize.py --symbol ETHUSDC --interval 1h --days 365 --rules S4/rules_ta_only.yaml \\
        --objective calmar --storage postgresql+psycopg2://user:pass@dbhost/optuna --study-name eth-ta

reads ``data/ethusdc_1h_365d_ta.parquet`` (plus sentiment / ML when the rules read
them), chooses the params on the first 70 % of the bars, reports them on the last
30 %, and writes ``data/ethusdc_1h_365d_best_<rules>.yaml`` (a ready rule file),
``reports/ethusdc_1h_365d_optimize_<rules>.html`` (history, importances, in- vs
out-of-sample) and ``reports/ethusdc_1h_365d_optimize_<rules>.json``. The study is
stored (default ``sqlite:///data/optuna.db``) and resumes where it stopped. See S5/README.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from S1.cli import ArgumentParser, add_common_args, main_entry


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="S5/optimize.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--symbol", required=True, help="e.g. ETHUSDC")
    p.add_argument("--interval", required=True, help="Binance interval, e.g. 1h")
    p.add_argument("--days", required=True, type=int, help="window of the S2 file, e.g. 365")
    p.add_argument("--rules", default="S4/rules.yaml", help="rule file with params ranges (default S4/rules.yaml)")
    p.add_argument("--trials", type=int, default=200, help="total trials of the study (finished ones count; 200)")
    p.add_argument("--objective", default="sharpe", choices=["sharpe", "calmar", "sortino", "total_return"],
                   help="what to maximise on the training bars (default sharpe)")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (default sqlite:///<data dir>/optuna.db; a PostgreSQL URL lets "
                        "several machines share one study)")
    p.add_argument("--study-name", default=None, help="default <symbol>_<interval>_<days>d_<rules>_<objective>")
    p.add_argument("--train-frac", type=float, default=0.7, help="share of the bars used to choose (0.7)")
    p.add_argument("--min-trades", type=int, default=20,
                   help="trials with fewer closed trades on the training bars are pruned (20)")
    p.add_argument("--seed", type=int, default=42, help="TPE seed (42)")
    p.add_argument("--fees", type=float, default=0.001, help="fee per side (0.001)")
    p.add_argument("--slippage", type=float, default=0.0005, help="slippage per side (0.0005)")
    p.add_argument("--init-cash", type=float, default=10_000.0, help="starting equity (10000)")
    p.add_argument("--risk", default=None, metavar="YAML", help="S6 risk config applied in every trial")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    from S5.engine import Costs
    from S5.hooks import load_risk
    from S5.metrics import format_metric
    from S5.optimize_lib import OptimizeConfig, optimize_files, redact_url

    config = OptimizeConfig(objective=args.objective, n_trials=args.trials, train_frac=args.train_frac,
                            min_trades=args.min_trades, seed=args.seed,
                            costs=Costs(fees=args.fees, slippage=args.slippage), init_cash=args.init_cash,
                            risk=load_risk(args.risk))
    run = optimize_files(args.symbol, args.interval, args.days, args.rules, config=config, storage=args.storage,
                         study_name=args.study_name, report=not args.no_report)
    res = run.result
    console = Console()
    label = " [SIMULATED market data]" if run.simulated else ""
    console.print(f"study {res.study.study_name!r} in {redact_url(run.storage)}: {res.counts}{label}")
    console.print("best params (chosen on train): " + ", ".join(f"{k}={v}" for k, v in res.best_params.items()))
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


if __name__ == "__main__":
    main_entry(main)
