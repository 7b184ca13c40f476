"""Every run on disk side by side (like freqtrade's ``backtesting-show``).

    python S5/compare.py                               # all backtests, optimisations, walk-forwards, parity checks
    python S5/compare.py --symbol BTCUSDT --interval 1h --sort sharpe
    python S5/compare.py --rules S4/rules_ta_only.yaml --csv runs.csv   # or --rules rules_ta_only

Prints a table (market, window, rules, costs, sizing, the main metrics; in- and
out-of-sample rows of an optimisation) and writes ``reports/compare.html``: the
table and the equity curves overlaid, each normalised to start at 1. ``--rules`` picks
the runs of one rules file exactly (``--rules rules`` is S4/rules.yaml, never
rules_ta_only). Runs saved under the older file names are listed too, with a note.
The logic is in :mod:`S5.run_catalog`.
"""

from __future__ import annotations

from pathlib import Path

from S1.cli import ArgumentParser, add_common_args, main_entry


def build_parser() -> ArgumentParser:
    from S5.run_catalog import COMPARE_METRICS, KINDS

    p = ArgumentParser(prog="python S5/compare.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--symbol", help="only this market, e.g. BTCUSDT")
    p.add_argument("--interval", help="only this interval, e.g. 1h")
    p.add_argument("--rules", help="only runs of this rules file: a path (S4/rules_ta_only.yaml) or its name "
                                   "(rules_ta_only); exact -- rules is S4/rules.yaml only")
    p.add_argument("--kind", choices=KINDS, help="only this kind of run")
    p.add_argument("--sort", choices=COMPARE_METRICS, help="best first by this metric (max drawdown: smallest first)")
    p.add_argument("--csv", type=Path, metavar="FILE", help="also write the table as CSV")
    p.add_argument("--html", type=Path, metavar="FILE", help="the HTML page (default reports/compare.html)")
    p.add_argument("--no-html", action="store_true", help="print the table only")
    p.add_argument("--standalone", action="store_true", help="embed plotly.js in the HTML (one self-contained file)")
    add_common_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console

    from S1.datasets import atomic_write_text, data_dir, reports_dir
    from S1.errors import UserError
    from S1.report_page import write_page
    from S5.run_catalog import compare_html, load_catalog, rich_table

    if args.rules is not None:
        from S1.datasets import rules_token

        rules_token(args.rules)         # a name no rule file can have: one line, before reading anything
    full = load_catalog()
    cat = full.filter(symbol=args.symbol, interval=args.interval, rules=args.rules, kind=args.kind).sorted(args.sort)
    if not cat.runs:
        what = "no run on disk" if not full.runs else f"none of the {len(full.runs)} run(s) on disk matches the filters"
        raise UserError(f"{what} (looked in {data_dir()} and {reports_dir()})",
                        "run e.g. python S5/backtest.py --symbol BTCUSDT --interval 1h --days 365, "
                        "or loosen --symbol/--interval/--rules/--kind")
    console = Console()
    for note in full.notes:     # on stderr, as S1.datasets.existing_dataset_path's note
        Console(stderr=True).print(note, style="yellow", markup=False, highlight=False)
    console.print(rich_table(cat, width=console.width))
    for p, why in cat.skipped:
        console.print(f"[yellow]skipped {p.name}: {why}[/yellow]")
    if args.csv is not None:
        atomic_write_text(args.csv, cat.table().to_csv(index=False))
        print(f"table -> {args.csv}")
    if not args.no_html:
        out = args.html or reports_dir() / "compare.html"
        write_page(out, compare_html(cat, standalone=args.standalone or None, folder=out.parent))
        print(f"report -> {out}")
    return 0


if __name__ == "__main__":
    main_entry(main)
