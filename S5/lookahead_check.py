"""Look-ahead check: recompute S2 indicators and S4 signals on truncated data and
report every value that changes once the future is removed.

    python S5/lookahead_check.py --symbol ETHUSDC --interval 1h --days 365 --rules S4/rules.yaml
    python S5/lookahead_check.py --symbol ETHUSDC --interval 1h --days 365 --rules S4/rules_ml.yaml --recompute-ml

reads the S1 candle file (and the sentiment / ML files when the rules read them),
prints a summary and writes ``reports/<stem>__<rules>_lookahead.json``. Exit code 0:
no look-ahead; 1: look-ahead found (the columns and bars are listed). See S5/README.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from S1.cli import ArgumentParser, add_common_args, main_entry


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="S5/lookahead_check.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--symbol", required=True, help="e.g. ETHUSDC")
    p.add_argument("--interval", default="1h", help="Binance interval (default 1h, as S1/historical.py)")
    p.add_argument("--days", type=int, default=365, help="window of the S1 file (default 365, as S1/historical.py)")
    from S1.options import add_rules_option

    add_rules_option(p)
    p.add_argument("--cuts", type=int, default=40, help="number of truncation points (default 40)")
    p.add_argument("--recompute-ml", action="store_true",
                   help="refit S4's walk-forward ML score at every cut (slow) instead of truncating the _ml file")
    p.add_argument("--rtol", type=float, default=1e-9, help="relative tolerance for floats (default 1e-9)")
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    from S1.errors import UserError
    from S1.datasets import Dataset
    from S5.lookahead import lookahead_files

    if args.cuts < 2:
        raise UserError(f"--cuts {args.cuts} is too small", "use at least 2 (default 40)")
    if not 0 <= args.rtol < 1:   # also NaN (issue 22)
        raise UserError(f"--rtol {args.rtol} is not a tolerance", "use a small non-negative number, e.g. 1e-9")
    run = lookahead_files(Dataset.from_args(args), args.rules, cuts=args.cuts,
                          recompute_ml=args.recompute_ml, rtol=args.rtol)
    rep = run.report
    console = Console()
    for note in rep.notes:
        console.print(f"note: {note}")
    console.print(f"{len(rep.cuts)} cuts, {len(rep.columns)} derived columns, {rep.rows_compared:,} rows compared "
                  f"({', '.join(rep.columns)})")
    if rep.passed:
        console.print(f"[bold green]PASS[/]: no value changed when the future was removed ({args.rules})")
    else:
        t = Table(title=f"LOOK-AHEAD FOUND in {args.rules}: {rep.n_changes:,} values changed")
        for c in ("column", "changes", "first bar that changed", "first cut"):
            t.add_column(c)
        for col, row in rep.by_column().iterrows():
            t.add_row(str(col), f"{int(row['changes']):,}", str(row["first_time"]), str(row["first_cut"]))
        console.print(t)
        console.print(rep.changes.head(10).to_string(index=False))
    if run.path is not None:
        print(f"wrote {run.path}")
    return 0 if rep.passed else 1


if __name__ == "__main__":
    main_entry(main)
