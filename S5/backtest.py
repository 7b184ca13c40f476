"""Backtest the S4 signals with vectorbt and write an HTML report.

    python S5/backtest.py --symbol ETHUSDC --interval 1h --days 365
    python S5/backtest.py --symbol BTCUSDT --interval 1h --days 365 --rules S4/rules_ta_only.yaml
    python S5/backtest.py --symbol ETHUSDC --interval 1h --days 365 --fee 0.001 --slippage-bps 5 --cash 10000 --risk S6/risk.yaml

reads the signals of ``--rules`` (default S4/rules.yaml): ``data/ethusdc_1h_365d__rules_signals.parquet``
(python S4/decision.py; a file of the older name ``ethusdc_1h_365d_signals.parquet`` is read with a note),
trades it with the risk settings paper trading uses (S6/risk.yaml; ``--risk none``: all in, no stops --
printed loudly) and writes ``reports/ethusdc_1h_365d__rules_backtest.html``,
``data/ethusdc_1h_365d__rules_backtest.json``, ``data/ethusdc_1h_365d__rules_equity.parquet`` and
``data/ethusdc_1h_365d__rules_trades.parquet`` -- every output carries the rules name.
Signals decided on a closed bar fill at the next bar's open; quantities are rounded to the symbol's LOT_SIZE and
entries below minQty / MIN_NOTIONAL are skipped when its filters are known (--exchange-filters). See S5/README.md.
"""

from __future__ import annotations

from collections.abc import Sequence

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.options import (
    add_cash_option,
    add_fee_options,
    add_futures_options,
    add_output_switches,
    add_risk_option,
    add_rules_option,
    rules_label,
    slippage_fraction,
)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="S5/backtest.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--symbol", required=True, help="e.g. ETHUSDC")
    p.add_argument("--interval", default="1h", help="Binance interval (default 1h, as S1/historical.py)")
    p.add_argument("--days", type=int, default=365, help="window of the signals file (default 365, as S1/historical.py)")
    add_rules_option(p)
    add_fee_options(p)
    add_cash_option(p)
    add_risk_option(p, help="S6 risk config: position size, stop-loss/take-profit and kill-switch, decided bar by "
                            "bar as paper trading (S7) does (default S6/risk.yaml, what S7 uses); 'none': every "
                            "entry all in with no stops (the vectorised signals)")
    p.add_argument("--no-stops", action="store_true",
                   help="ignore the risk config's stop-loss / take-profit (S7: --no-stops)")
    add_output_switches(p, png=False)
    from S5.exchange import add_execution_args

    add_execution_args(p)
    add_futures_options(p)
    p.add_argument("--detail", default=None, metavar="INTERVAL",
                   help="resolve a bar touching both the stop and the take-profit on lower-timeframe candles "
                        "(e.g. 1m: data/<symbol>_1m_<days>d.parquet); without it the stop is assumed first")
    add_common_args(p)
    return p


def _decided_options(args) -> dict | None:
    if args.market == "spot" and args.detail is None and args.leverage == 1.0:
        return None
    return {"market": args.market, "leverage": args.leverage, "funding": not args.no_funding,
            "maint_margin_rate": args.maint_margin_rate, "detail": args.detail}


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.fees, args.slippage = args.fee, slippage_fraction(args)   # the names S5.exchange.costs_from_args reads
    from rich.console import Console

    from S1.datasets import Dataset
    from S5.backtest_files import backtest_files, metrics_table
    from S5.exchange import costs_from_args

    ds = Dataset.from_args(args)
    run = backtest_files(ds, costs=costs_from_args(args),
                         init_cash=args.cash, risk=args.risk, report=not args.no_html,
                         exchange_filters=args.exchange_filters, exchange_info=args.exchange_info,
                         decided_options=_decided_options(args), use_stops=not args.no_stops, rules_file=args.rules)
    label = " [SIMULATED market data]" if run.simulated else ""
    console = Console()
    if run.warning:
        print(f"WARNING: {run.warning}", flush=True)
    console.print(metrics_table(run.result.metrics, title=f"{ds.label} -- "
                                f"{rules_label(args.rules)}{label}"))
    for trip in run.result.kill_switch:
        console.print(f"kill-switch tripped at {trip['at']}: {trip['reason']} -- {trip['detail']}")
    for path in run.paths.values():
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    main_entry(main)
