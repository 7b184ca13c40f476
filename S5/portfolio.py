"""Backtest several symbols as one portfolio: one pot of cash, S4's decision on every symbol.

    python S5/portfolio.py --symbols BTCUSDT,ETHUSDT,BNBUSDT --interval 1h --days 365 \\
        --rules S4/rules.yaml --max-open 2 [--name majors] [--risk S6/risk.yaml]
    python S5/portfolio.py --symbols BTCUSDT,ETHUSDT --interval 1h --days 365 --max-open 1 \\
        --scheduler tcp://host:8786          # per-symbol preparation on a Dask cluster

reads each symbol's ``_ta`` file (python S2/indicators.py), sizes every entry with S6 against the current
portfolio equity, fills at the symbol's next open and ranks competing entries by the trailing return over
--rank-lookback bars (then the symbol name). Writes data/portfolio_<name>_equity.parquet, _trades.parquet,
_backtest.json and reports/portfolio_<name>.html. See S5/README.md, "Portfolios".
"""

from __future__ import annotations

from collections.abc import Sequence

from S1.cli import ArgumentParser, add_common_args, main_entry


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="S5/portfolio.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--symbols", required=True, help="comma-separated, e.g. BTCUSDT,ETHUSDT,BNBUSDT")
    p.add_argument("--interval", required=True, help="Binance interval, e.g. 1h")
    p.add_argument("--days", required=True, type=int, help="window of the _ta files, e.g. 365")
    p.add_argument("--rules", default="S4/rules.yaml",
                   help="an S4 rule file for every symbol, or a YAML map 'symbols: {SYM: file}' (+ 'default:')")
    p.add_argument("--max-open", required=True, type=int, help="most positions open at once, e.g. 2")
    p.add_argument("--name", default=None, help="names the output files (default: from the symbols)")
    p.add_argument("--rank-lookback", type=int, default=24,
                   help="bars of trailing return that rank competing entries (24)")
    p.add_argument("--fees", type=float, default=0.001, help="fee per side, fraction of the notional (0.001)")
    p.add_argument("--slippage", type=float, default=0.0005, help="slippage per side, fraction of the price (0.0005)")
    p.add_argument("--init-cash", type=float, default=10_000.0, help="starting cash in quote currency (10000)")
    p.add_argument("--risk", default=None, metavar="YAML", help="S6 risk config (default S6/risk.yaml, what S7 uses)")
    p.add_argument("--no-stops", action="store_true", help="ignore the risk config's stop-loss / take-profit")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:8786",
                   help="prepare the symbols on a Dask distributed cluster (default: local)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes for the per-symbol work (1)")
    from S5.exchange import add_execution_args
    add_execution_args(p)
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from rich.console import Console

    from S5.backtest_files import metrics_table
    from S5.exchange import costs_from_args
    from S5.portfolio_files import portfolio_files

    run = portfolio_files(args.symbols, args.interval, args.days, rules=args.rules, max_open=args.max_open,
                          name=args.name, costs=costs_from_args(args), init_cash=args.init_cash, risk=args.risk,
                          rank_lookback=args.rank_lookback, exchange_filters=args.exchange_filters,
                          exchange_info=args.exchange_info, use_stops=not args.no_stops, scheduler=args.scheduler,
                          workers=args.workers, report=not args.no_report)
    if run.warning:
        print(f"WARNING: {run.warning}", flush=True)
    label = " [SIMULATED market data]" if run.simulated else ""
    res = run.result
    Console().print(metrics_table(res.metrics, title=f"portfolio {','.join(res.symbols)} {args.interval}{label}"))
    print(f"skipped entries: {res.skips or 'none'}; most positions open: {res.metrics['max_open_positions']}")
    for path in run.paths.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    main_entry(main)
