"""Stress tests of a backtest's trades: bootstrap / reshuffle, worst historical moves,
stops gapped through. Reads the S5 trades/equity files and the S1 candle file.

    python S6/stress.py --symbol BTCUSDT --interval 1h --days 365
    python S6/stress.py --symbol BTCUSDT --interval 1h --days 365 --paths 20000 --seed 7 --ruin 0.6

Reads the backtest of ``--rules`` (default S4/rules.yaml) and writes data/<stem>__<rules>_stress.json,
reports/<stem>__<rules>_stress.html (offline; plotly.js shared in the reports folder) and
reports/<stem>__<rules>_stress.png, each labelled
SIMULATED when the backtest or the candles came from the simulated market. The logic lives in S6.stress_analysis and
S6.stress_report.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Sequence

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.options import add_output_switches, add_rules_option

log = logging.getLogger("S6.stress")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python S6/stress.py", description="Stress-test a backtest's trades.")
    add_common_args(p)
    p.add_argument("--symbol", required=True, help="e.g. BTCUSDT")
    p.add_argument("--interval", default="1h", help="Binance interval (default 1h, as S1/historical.py)")
    p.add_argument("--days", type=int, default=365, help="history window of the backtest in days (default 365, as S1/historical.py)")
    p.add_argument("--paths", type=int, help="simulated paths per method (default stress.paths of the config)")
    p.add_argument("--seed", type=int, help="random seed (same seed, same numbers)")
    p.add_argument("--ruin", type=float, help="ruin = equity at or below this share of the start (default 0.5)")
    p.add_argument("--top", type=int, help="worst moves per window (default 5)")
    p.add_argument("--initial-equity", type=float, help="default: first value of the equity file")
    add_rules_option(p, help="the rules whose backtest is stressed (default S4/rules.yaml)")
    p.add_argument("--risk", dest="config", type=Path, help="risk settings YAML (default S6/risk.yaml)")
    from S1.options import deprecated

    p.add_argument("--config", dest="config", type=Path, action=deprecated("--risk"))
    add_output_switches(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from S1.datasets import Dataset, dataset_path, history_command, read_candles, read_metadata, report_path
    from S1.settings import get_settings
    from S6.config import RiskConfig
    from S6.stress_analysis import load_backtest, run_stress
    from S6.stress_report import summary_rows, write_html, write_json, write_png

    cfg = RiskConfig.load(args.config)
    if args.paths is not None and not 100 <= args.paths <= 200_000:
        from S1.errors import UserError

        raise UserError(f"--paths must be within 100..200000, got {args.paths}", "e.g. --paths 5000")
    ds = Dataset.from_args(args)
    bt = load_backtest(ds, initial_equity=args.initial_equity, rules=args.rules)
    cpath = dataset_path(ds)
    candles = None
    simulated = bool(get_settings().simulated_market)
    if cpath.exists():
        candles = read_candles(cpath)
        simulated = simulated or bool(read_metadata(cpath).get("simulated", False))
    else:
        log.warning("no candle file %s: worst-move replay skipped (create it with: %s)", cpath,
                    history_command(ds))
    result = run_stress(bt, candles, config=cfg, paths=args.paths, seed=args.seed, ruin_level=args.ruin,
                        top=args.top, progress=True, simulated=simulated)
    result.summary["rules_file"] = Path(str(args.rules)).name     # titles name the rules file
    outputs = [write_json(result, dataset_path(ds, "stress", rules=args.rules))]
    if not args.no_html:
        outputs.append(write_html(result, report_path(ds, "stress", "html", rules=args.rules)))
    if not args.no_png:
        outputs.append(write_png(result, report_path(ds, "stress", "png", rules=args.rules)))

    s = result.summary
    h = s["historical"]
    if s["simulated"]:
        print("SIMULATED market data (offline mode): not real prices")
    print(f"{bt.symbol} {bt.interval} {bt.days}d: {h['trades']} trades, final {h['final_equity']:,.2f} "
          f"from {s['initial_equity']:,.2f}, max drawdown {h['max_drawdown_trades']:.1%} (trade by trade)")
    print(f"{'scenario':<10} {'final equity p5 / p50 / p95':<40} {'max DD p50 / p95':<18} P(ruin <= {s['ruin_level']:.0%})")
    for name, fe, dd, ruin in summary_rows(result):
        print(f"{name:<10} {fe:<40} {dd:<18} {ruin}")
    for win, rows in s["worst_moves"].items():
        worst = rows[0]
        gap = worst.get("loss_R_gapped")
        gap_txt = f", a stopped long loses {gap:.2f} R gapped through" if gap is not None else ""
        print(f"worst {win} move {worst['move']:.1%} at {worst['start']}{gap_txt}")
    for note in s["notes"]:
        print(f"note: {note}")
    for path in outputs:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    main_entry(main)
