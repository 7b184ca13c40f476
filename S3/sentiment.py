"""Build the timestamped sentiment_score series: data/sentiment_<interval>.parquet.

    python S3/sentiment.py --since 2024-01-01 --interval 1h
    python S3/sentiment.py --days 30 --offline                      # the local simulated news feed
    python S3/sentiment.py --since 2022-01-01 --until 2022-02-01 --sources file:headlines.csv --classifier lexicon
    python S3/sentiment.py --since 2024-06-01 --no-fetch --classifier openai
    python S3/sentiment.py --since 2024-01-01 --no-fetch --per-symbol            # + sentiment_<asset>_1h.parquet
    python S3/sentiment.py --since 2024-01-01 --no-fetch --per-symbol BTC,ETH

One row per candle open time (UTC): sentiment_score in [-1, 1] (confidence-weighted,
exponentially decayed, half-life in S3/sentiment.yaml), n_items, evidence. The value
at open time t uses only items published before t.
"""

from __future__ import annotations

from S1.cli import main_entry
from S3.cli_common import parser, quiet_http_logs


def main(argv=None) -> int:
    p = parser("news sentiment per candle (no look-ahead)")
    when = p.add_mutually_exclusive_group(required=True)
    when.add_argument("--since", help="first candle, UTC date (e.g. 2024-01-01)")
    when.add_argument("--days", type=int, metavar="N",
                      help="or: the last N days up to now, as S1/S2/S4/S5 count their window (e.g. 365)")
    p.add_argument("--until", default=None, help="last candle, UTC (default: now)")
    p.add_argument("--interval", default="1h", help="Binance interval of the candles (default 1h)")
    p.add_argument("--sources", default=None,
                   help="fetch first: rss, cryptopanic, x, file:PATH (default: rss + sources with tokens)")
    p.add_argument("--no-fetch", action="store_true", help="use only the stored data/news_items.parquet")
    p.add_argument("--classifier", default="auto", help="lexicon | local:PATH | openai | auto (default)")
    p.add_argument("--half-life", default=None, help="override series.half_life (e.g. 6h, 90min)")
    p.add_argument("--out", default=None, help="output Parquet (default data/sentiment_<interval>.parquet)")
    p.add_argument("--plot", action="store_true", help="also write reports/sentiment_<interval>.html")
    p.add_argument("--per-symbol", nargs="?", const="all", default=None, metavar="ASSETS",
                   help="also write data/sentiment_<asset>_<interval>.parquet from the items tagged with each "
                        "asset: every tagged asset, or a list such as BTC,ETH")
    p.add_argument("--retag", action="store_true",
                   help="re-tag the stored items with the current asset dictionary (after editing aliases)")
    from S1.options import add_offline_option

    add_offline_option(p)
    args = p.parse_args(argv)
    if args.days is not None:
        import time

        if args.days <= 0:
            from S1.errors import UserError

            raise UserError(f"--days must be positive, got {args.days}", "e.g. --days 365")
        args.since = time.strftime("%Y-%m-%d", time.gmtime(time.time() - args.days * 86400))
    quiet_http_logs()
    from S1.errors import UserError
    from S3.config import S3Config, load_config
    from S3.pipeline import build_sentiment
    from S3.sources import parse_source_specs

    config = load_config(args.config)
    if args.half_life:
        try:
            config = S3Config.model_validate({**config.model_dump(),
                                              "series": {**config.series.model_dump(), "half_life": args.half_life}})
        except Exception as exc:
            raise UserError(f"--half-life {args.half_life!r} is not a duration", "use e.g. 6h or 90min") from exc
    if args.no_fetch and args.sources:
        raise UserError("--no-fetch and --sources contradict each other", "drop one of them")
    import pandas as pd

    from S3.offline import offline_news

    try:
        days = max(1, int((pd.Timestamp.now(tz="UTC") - pd.Timestamp(args.since, tz="UTC")).days) + 1)
    except (ValueError, TypeError):
        days = 365       # build_sentiment reports the bad --since itself
    with offline_news(args.offline, days=min(days, 3650)) as env:
        sources = "rss" if env is not None and not args.sources and not args.no_fetch else args.sources
        specs = parse_source_specs(sources) if sources else None
        series, run = build_sentiment(since=args.since, until=args.until, interval=args.interval, sources=specs,
                                      fetch=not args.no_fetch, classifier=args.classifier, config=config,
                                      out_path=args.out, per_symbol=args.per_symbol or False, retag=args.retag)
    if run.ingest is not None:
        print("news sources:")
        print("\n".join(run.ingest.lines()))
    if run.llm_summary:
        print(run.llm_summary)
    print(f"{run.items_used} item(s) classified with {run.classifier}: "
          + ", ".join(f"{k} {v}" for k, v in run.label_counts.items()))
    busy = int((series["n_items"] > 0).sum())
    print(f"{len(series)} {args.interval} candle(s) {series.index[0] if len(series) else '-'} .. "
          f"{series.index[-1] if len(series) else '-'}, {busy} with new items; score "
          f"min {series['sentiment_score'].min():.3f} mean {series['sentiment_score'].mean():.3f} "
          f"max {series['sentiment_score'].max():.3f} -> {run.path}"
          + (f" (SIMULATED: {run.simulated_items} item(s) from the offline mode's simulated feed)"
             if run.simulated_items else ""))
    for asset, path in run.asset_paths.items():
        print(f"  {asset}: {run.asset_items[asset]} item(s) -> {path}")
    if run.stale_asset_files:
        print(f"note: {len(run.stale_asset_files)} older per-asset file(s) not updated "
              f"({', '.join(p.name for p in run.stale_asset_files[:5])}); add --per-symbol to refresh them")
    if args.plot:
        from S1.settings import get_settings
        from S3.plots import sentiment_report_path, write_sentiment_html

        html = write_sentiment_html(series, sentiment_report_path(args.interval),
                                    title=f"News sentiment {args.interval} ({run.classifier})",
                                    simulated=bool(run.simulated_items or get_settings().simulated_market))
        print(f"plot -> {html}")
    return 0


if __name__ == "__main__":
    main_entry(main)
