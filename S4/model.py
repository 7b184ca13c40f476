"""Walk-forward ML score: ml_proba for the rules (S4/rules_ml.yaml).

    python S4/model.py --symbol ETHUSDC --interval 1h --days 365
    python S4/model.py --symbol BTCUSDT --interval 1h --days 365 --horizon 12 --train-bars 2000 --test-bars 720

reads ``data/ethusdc_1h_365d_ta.parquet`` (S2), trains scikit-learn's
HistGradientBoostingClassifier on TA features known at each bar's close to predict
whether the close ``--horizon`` bars later is higher, walk-forward (each fold is
fitted on the past only, with a gap of ``--horizon`` bars before its test block),
and writes ``data/ethusdc_1h_365d_ml.parquet`` (index open_time; ml_proba
out-of-sample, NaN before the first fold; ml_fold). Prints per-fold out-of-sample
AUC and accuracy next to the naive baseline (majority class of the training fold)
and draws them in ``reports/ethusdc_1h_365d_ml_folds.png``.
"""

from __future__ import annotations

from collections.abc import Sequence

from S1.cli import ArgumentParser, add_common_args, main_entry


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="S4/model.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--symbol", required=True, help="e.g. ETHUSDC")
    p.add_argument("--interval", default="1h", help="Binance interval (default 1h, as S1/historical.py)")
    p.add_argument("--days", type=int, default=365, help="window of the S2 file (default 365, as S1/historical.py)")
    p.add_argument("--horizon", type=int, default=4, help="predict the sign of the next-N-bar return (default 4)")
    p.add_argument("--train-bars", type=int, default=1000,
                   help="bars before the first test block (default 1000)")
    p.add_argument("--test-bars", type=int, default=500, help="bars per walk-forward test block (default 500)")
    p.add_argument("--max-train-bars", type=int, default=None,
                   help="rolling training window in bars (default: expanding, all the past)")
    p.add_argument("--max-iter", type=int, default=200, help="boosting iterations per fold (default 200)")
    p.add_argument("--threads", type=int, default=1,
                   help="OpenMP threads per fit (default 1: fastest on a busy machine; try 2+ on an idle one)")
    from S1.options import add_output_switches

    add_output_switches(p, html=False)
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from S1.datasets import Dataset
    from S1.errors import UserError
    from S4.ml_score import WalkForward, fold_lines, train_ml

    ds = Dataset.from_args(args)

    if args.max_iter < 1 or args.max_iter > 5000:
        raise UserError(f"--max-iter {args.max_iter} is out of range", "use 1..5000, e.g. --max-iter 200")
    plan = WalkForward(horizon=args.horizon, train_bars=args.train_bars, test_bars=args.test_bars,
                       max_train_bars=args.max_train_bars)
    run = train_ml(ds, plan=plan, model_params={"max_iter": args.max_iter},
                   plot=not args.no_png, threads=args.threads)
    res = run.result
    print(fold_lines(res.folds))
    o = res.overall
    label = " (simulated market data)" if run.simulated else ""
    print(f"out of sample, all folds: AUC {o['auc']:.3f}, accuracy {o['accuracy']:.3f} vs baseline "
          f"{o['baseline_accuracy']:.3f} on {o['n_scored']:,} bars{label}")
    covered = int((res.fold >= 0).sum())
    print(f"wrote {run.path}: ml_proba on {covered:,} of {len(res.fold):,} bars "
          f"(NaN before {res.folds['test_from'].iloc[0]}: no model trained yet)")
    if run.plot:
        print(f"chart: {run.plot}")
    return 0


if __name__ == "__main__":
    main_entry(main)
