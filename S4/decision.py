"""Fuse TA rules, sentiment and the ML score into buy/sell signals.

    python S4/decision.py --symbol ETHUSDC --interval 1h --days 365 --rules S4/rules.yaml
    python S4/decision.py --symbol BTCUSDT --interval 1h --days 365 --rules S4/rules_ta_only.yaml --set rsi_buy=35

reads ``data/ethusdc_1h_365d_ta.parquet`` (S2), ``data/sentiment_1h.parquet`` (S3) when
the rules read sentiment (``data/sentiment_eth_1h.parquet`` instead when S3 wrote that
per-asset series; ``--sentiment market|asset|auto|FILE``), ``data/ethusdc_1h_365d_ml.parquet`` (S4/model.py) when they
read ml_proba, and writes ``data/ethusdc_1h_365d__rules_signals.parquet`` (named after the rules file:
``--rules S4/rules_ta_only.yaml`` writes ``…__rules_ta_only_signals.parquet``): the inputs plus
entry, exit (bool), signal (1 buy, -1 sell, 0 hold) and rule (which rule fired),
and a chart ``reports/ethusdc_1h_365d__rules_signals.png``. The rule language: S4/README.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.errors import UserError
from S1.options import add_output_switches, add_rules_option

DEFAULT_RULES = Path(__file__).resolve().with_name("rules.yaml")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="S4/decision.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--symbol", required=True, help="e.g. ETHUSDC")
    p.add_argument("--interval", default="1h", help="Binance interval (default 1h, as S1/historical.py)")
    p.add_argument("--days", type=int, default=365, help="window of the S1/S2 files (default 365, as S1/historical.py)")
    add_rules_option(p, help="rule file (default S4/rules.yaml; see S4/rules_ta_only.yaml, S4/rules_ml.yaml); "
                             "outputs carry its name")
    p.add_argument("--set", dest="overrides", action="append", metavar="PARAM=VALUE", default=[],
                   help="override a param of the rule file (repeatable), e.g. --set rsi_buy=35")
    p.add_argument("--sentiment", default="auto", metavar="auto|market|asset|FILE",
                   help="which sentiment series: auto (default: the base asset's data/sentiment_<asset>_<interval>"
                        ".parquet when S3 wrote it with --per-symbol, else the market-wide sentiment_<interval>), "
                        "market, asset, or a Parquet file")
    p.add_argument("--sentiment-max-age", default=None, metavar="DURATION",
                   help="leave candles without sentiment when the last score is older than this (e.g. 1d)")
    add_output_switches(p, html=False)
    add_common_args(p)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    import pandas as pd

    from S1.datasets import Dataset, report_path

    ds = Dataset.from_args(args)
    from S4.rules import parse_assignments
    from S4.signals import build_signals

    max_age = None
    if args.sentiment_max_age:
        try:
            max_age = pd.Timedelta(args.sentiment_max_age)
        except ValueError:
            raise UserError(f"--sentiment-max-age {args.sentiment_max_age!r} is not a duration",
                            "use e.g. 6h or 1d") from None
    from S4.signals import SENTIMENT_SCOPES

    scope, sentiment_file = (args.sentiment, None) if args.sentiment in SENTIMENT_SCOPES else ("auto", args.sentiment)
    res = build_signals(ds, args.rules,
                        params=parse_assignments(args.overrides), sentiment_file=sentiment_file,
                        sentiment_max_age=max_age, sentiment_scope=scope)
    c = res.counts
    label = " (simulated market data)" if res.simulated else ""
    print(f"wrote {res.path}: {c['rows']:,} rows, {c['entries']} entries, {c['exits']} exits{label}")
    print("params: " + (", ".join(f"{k}={v}" for k, v in res.rules.params.items()) or "(none)"))
    chosen = res.metadata["signals"].get("sentiment")
    if chosen:
        print(f"sentiment: {chosen['file']} ({chosen['used']}, --sentiment {chosen['requested']}: {chosen['reason']})")
    fired = res.by_rule()
    print("fired: " + (", ".join(f"{k} {v}" for k, v in fired.items()) or "nothing"))
    for col, share in res.coverage.items():
        print(f"{col} known on {share:.1%} of the bars" + (" -- rules reading it cannot fire on the rest"
                                                           if share < 1 else ""))
    last = res.frame.iloc[-1] if len(res.frame) else None
    if last is not None:
        state = {1: "BUY", -1: "SELL", 0: "hold"}[int(last["signal"])]
        print(f"last bar {res.frame.index[-1]}: {state}")
    if not args.no_png and len(res.frame):
        from S4.plots import save_png, signals_chart

        title = f"{ds.label} -- {Path(args.rules).name}" + label
        png = save_png(signals_chart(res.frame, title=title, rules=res.rules),
                       report_path(ds, "signals", "png", rules=args.rules))
        print(f"chart: {png}")
    return 0


if __name__ == "__main__":
    main_entry(main)
