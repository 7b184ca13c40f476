"""Backtest several symbols as one portfolio: one pot of cash, S4's decision on every symbol.

    python S5/portfolio.py --symbols BTCUSDT,ETHUSDT,BNBUSDT --interval 1h --days 365 --rules S4/rules.yaml --max-open 2
    python S5/portfolio.py --symbols BTCUSDT,ETHUSDT --max-open 1 --fee 0.001 --slippage-bps 5 --cash 5000 --name duo
    python S5/portfolio.py --symbols BTCUSDT,ETHUSDT --max-open 1 --scheduler tcp://host:8786

reads each symbol's ``_ta`` file (python S2/indicators.py), sizes every entry with S6 against the current
portfolio equity, fills at the symbol's next open and ranks competing entries by the trailing return over
--rank-lookback bars (then the symbol name). Writes data/portfolio_<name>_equity.parquet, _trades.parquet,
_backtest.json and reports/portfolio_<name>.html. The options are spelled as in every other script
(S1/options.py: --interval 1h and --days 365 by default, --fee, --slippage-bps, --cash, --risk, --no-html);
the old --fees / --slippage / --init-cash / --no-report still work for one release. See S5/README.md,
"Portfolios".
"""

from __future__ import annotations

from collections.abc import Sequence

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.options import (
    add_cash_option,
    add_fee_options,
    add_output_switches,
    add_portfolio_options,
    add_risk_option,
    add_rules_option,
    slippage_fraction,
)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python S5/portfolio.py", description=__doc__.split("\n\n")[0])
    add_portfolio_options(p)
    add_rules_option(p, help="S4 rule file for every symbol (default S4/rules.yaml), or a YAML map "
                             "'symbols: {SYM: file}' (+ 'default:')")
    add_fee_options(p)
    add_cash_option(p)
    add_risk_option(p, allow_none=False, help="S6 risk file (default S6/risk.yaml, what S7 uses)")
    p.add_argument("--no-stops", action="store_true", help="ignore the risk file's stop-loss / take-profit")
    add_output_switches(p, png=False)
    p.add_argument("--scheduler", default=None, metavar="tcp://HOST:8786",
                   help="prepare the symbols on a Dask distributed cluster (default: local)")
    p.add_argument("--workers", type=int, default=1, help="local worker processes for the per-symbol work")
    from S5.exchange import add_execution_args
    add_execution_args(p)
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.fees, args.slippage = args.fee, slippage_fraction(args)   # the names S5.exchange.costs_from_args reads
    from rich.console import Console

    from S5.backtest_files import metrics_table
    from S5.exchange import costs_from_args
    from S5.portfolio_files import portfolio_files

    run = portfolio_files(args.symbols, args.interval, args.days, rules=args.rules, max_open=args.max_open,
                          name=args.name, costs=costs_from_args(args), init_cash=args.cash, risk=args.risk,
                          rank_lookback=args.rank_lookback, exchange_filters=args.exchange_filters,
                          exchange_info=args.exchange_info, use_stops=not args.no_stops, scheduler=args.scheduler,
                          workers=args.workers, report=not args.no_html)
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
