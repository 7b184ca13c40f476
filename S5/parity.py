"""Check that paper trading reproduces the backtest: same candles, rules, sizing, fees, filters.

    python S5/parity.py --symbol BTCUSDT --interval 1h --days 365 --rules S4/rules.yaml
    python S5/parity.py --symbol BTCUSDT --interval 1h --days 365 --rules S4/rules_ta_only.yaml --no-stops
    python S5/parity.py --symbol BTCUSDT --interval 1h --days 365 --rules S4/rules.yaml --risk none
    python S5/parity.py --symbols BTCUSDT,ETHUSDT,SOLUSDT --interval 1h --days 365 --rules S4/rules.yaml \\
        [--workers 2 | --scheduler tcp://host:8786]     # one line per symbol and a total

builds the S4 signals of the rule file from ``data/btcusdt_1h_365d_ta.parquet`` (S2; plus S3's
sentiment / S4's ML scores when the rules read them), runs the S5 backtest (S4's decision function
bar by bar) and an S7 dry-run replay of the same closed candles, writes both trade lists to
``data/btcusdt_1h_365d__rules_parity.json`` (named after the rules file) and prints ``N trades, M mismatches``; the exit code is 1 when
the lists differ (entry / exit times exactly, prices and quantities to 1e-9 relative). See S5/README.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from S1.cli import ArgumentParser, add_common_args, main_entry


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="S5/parity.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--symbol", default=None, help="e.g. BTCUSDT (or --symbols for many)")
    p.add_argument("--symbols", default=None, metavar="A,B,...",
                   help="check many symbols, comma-separated: one line each and a total (S5/parity_symbols.py)")
    p.add_argument("--workers", type=int, default=1, metavar="N",
                   help="with --symbols: run the symbols in N local processes (1: one after the other, here)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="with --symbols: run them on a Dask cluster, e.g. tcp://10.0.0.5:8786 (workers need this "
                        "repo and the same DATA_DIR, e.g. s3://...)")
    p.add_argument("--interval", default="1h", help="Binance interval (default 1h, as S1/historical.py)")
    p.add_argument("--days", type=int, default=365, help="window of the S1/S2 files (default 365, as S1/historical.py)")
    from S1.options import (
        add_cash_option,
        add_fee_options,
        add_futures_options,
        add_risk_option,
        add_rules_option,
    )

    add_rules_option(p)
    add_risk_option(p, help="S6 risk config of both sides (default S6/risk.yaml); 'none': all in, no stops")
    p.add_argument("--no-stops", action="store_true", help="both sides ignore the stop-loss / take-profit levels")
    add_fee_options(p)      # --fee, --slippage-bps: the backtest's defaults (0.001, 5 bp), both sides
    add_cash_option(p)
    add_futures_options(p)   # the backtest and the replay take the same market, leverage and brackets
    p.add_argument("--exchange-info", default=None, metavar="FILE",
                   help="saved exchangeInfo body for the symbol's filters (default: the cache, else generic filters)")
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.init_cash = args.cash      # the one vocabulary (S1/options.py): --cash
    from S1.datasets import Dataset
    from S1.errors import UserError
    from S1.fanout import check_scheduler
    from S1.options import slippage_fraction
    from S5.parity_check import parity_files

    if (args.symbol is None) == (args.symbols is None):
        raise UserError("give --symbol or --symbols (one of them)", "e.g. --symbol BTCUSDT or --symbols BTCUSDT,ETHUSDT")
    check_scheduler(args.scheduler, args.workers)
    if args.symbols is None and (args.workers != 1 or args.scheduler is not None):
        raise UserError("--workers / --scheduler spread --symbols", "list the symbols with --symbols A,B,...")
    options = {"risk": args.risk, "use_stops": not args.no_stops, "fee": args.fee, "init_cash": args.init_cash,
               "exchange_info": args.exchange_info, "market": args.market, "leverage": args.leverage,
               "funding": not args.no_funding, "maint_margin_rate": args.maint_margin_rate,
               "slippage": slippage_fraction(args)}
    if args.symbols is not None:
        return _many(args, options)
    res = parity_files(Dataset.from_args(args), args.rules, **options)
    if res.warning:
        print(f"WARNING: {res.warning}", flush=True)
    for m in res.mismatches[:10]:
        print(f"  trade {m['trade']}: {m['field']}: backtest {m['backtest']!r} != paper {m['paper']!r}")
    label = " (simulated market data)" if res.settings.get("simulated") else ""
    print(f"wrote {res.path}{label}")
    print(res.line())
    return 0 if res.ok else 1


def _many(args, options: dict) -> int:
    """``--symbols``: one line per symbol (in the order given) and a total; 1 when any differs or failed."""
    from S5.parity_symbols import parity_symbols, parse_symbols, total_line

    results = parity_symbols(parse_symbols(args.symbols), args.interval, args.days, args.rules,
                             scheduler=args.scheduler, workers=args.workers, **options)
    warned = set()
    for r in results:
        if r.warning and r.warning not in warned:
            warned.add(r.warning)
            print(f"WARNING: {r.warning}", flush=True)
    for r in results:
        print(r.line() + (f" -> {r.path}" if r.path else "") + (" (simulated market data)" if r.simulated else ""))
        for m in r.first_mismatches:
            print(f"  {m}")
    print(total_line(results))
    return 0 if all(r.ok for r in results) else 1


if __name__ == "__main__":
    main_entry(main)
