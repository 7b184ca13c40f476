"""Download klines into ``data/<symbol>_<interval>_<days>d.parquet`` (Binance by default,
any CCXT exchange with ``--exchange``), optionally exporting CSV/Feather/SQLite.

    python S1/historical.py --symbol ETHUSDC --interval 1h --days 365
    python S1/historical.py --symbol BTCUSDT --interval 1h --days 90 --offline      # local simulated market
    python S1/historical.py --symbol BTCUSDT --interval 1m --days 30 --end 2024-06-01 --source archive
    python S1/historical.py --symbol BTCUSDT --interval 1h --days 365 --plan
    python S1/historical.py --exchange okx --symbol BTC/USDT --interval 1h --days 30
    python S1/historical.py --exchange okx --market swap --price mark --symbol BTC/USDT --days 30
    python S1/historical.py --symbol BTCUSDT --days 30 --format csv --gzip
    python S1/historical.py --source dukascopy --symbol EURUSD --interval 1h --days 365

The window is ``[end - days, end)`` (``--end`` defaults to now); only closed
candles are written; re-runs fetch only what the file is missing.
"""

from __future__ import annotations

from pathlib import Path

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.options import add_offline_option
from S1.errors import UserError
from S1.history import SOURCES, update_dataset

MARKETS = ("spot", "swap", "future")
PRICES = ("last", "mark", "index")
FORMATS = ("parquet", "csv", "feather", "sqlite")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python S1/historical.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--symbol", required=True, help="symbol, e.g. BTCUSDT, ETHUSDC or (CCXT style) BTC/USDT")
    p.add_argument("--interval", default="1h", help="1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M")
    p.add_argument("--days", type=int, default=365, help="window length in days (default 365)")
    p.add_argument("--end", default=None, help="window end, ISO UTC date/datetime (default: now)")
    from S1.storage import as_path

    p.add_argument("--out", type=as_path, default=None,
                   help="output file (default data/<symbol>_<interval>_<days>d.parquet); s3://bucket/key.parquet "
                        "writes the object (one PUT) with the S3_* settings")
    p.add_argument("--source", choices=(*SOURCES, "dukascopy"), default="auto",
                   help="auto: public archive for whole past months/days, REST for the rest (Binance spot); "
                        "dukascopy: FX candles from Dukascopy's hourly tick files (S1/dukascopy.py)")
    p.add_argument("--side", choices=("bid", "ask", "mid"), default="bid",
                   help="--source dukascopy: candles from bid (default), ask or mid prices")
    p.add_argument("--archive-dir", type=Path, default=None,
                   help="read local archive files (zip/csv, Binance or CryptoDataDownload layout) instead of downloading")
    p.add_argument("--plan", action="store_true", help="show what the file covers and what is missing; download nothing")
    add_offline_option(p)
    g = p.add_argument_group("other exchanges (CCXT)")
    g.add_argument("--exchange", default="binance",
                   help="CCXT exchange id, e.g. okx, bybit, kraken (default binance: python-binance)")
    g.add_argument("--market", choices=MARKETS, default="spot", help="spot, swap (perpetual) or future (dated)")
    g.add_argument("--price", choices=PRICES, default="last", help="last trades, or the mark / index price (derivatives)")
    g.add_argument("--client", choices=("auto", "ccxt"), default="auto",
                   help="auto: python-binance for Binance spot, CCXT otherwise; ccxt: CCXT for Binance too")
    e = p.add_argument_group("exports (Parquet stays the file later sprints read)")
    e.add_argument("--format", choices=FORMATS, default="parquet",
                   help="also export the candles as csv, feather or sqlite beside the Parquet file")
    e.add_argument("--gzip", action="store_true", help="gzip the CSV export (.csv.gz)")
    e.add_argument("--export-out", type=Path, default=None,
                   help="export file (default data/<name>.csv|.feather|.sqlite; a shared .sqlite is upserted)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    if args.gzip and args.format != "csv":
        raise UserError(f"--gzip applies to --format csv only, not {args.format}", "drop --gzip or use --format csv")
    if args.export_out is not None and args.format == "parquet" and not args.plan:
        raise UserError("--export-out needs --format csv, feather or sqlite", "add e.g. --format csv")
    from S1.offline import offline_mode, offline_requested

    offline = offline_requested(args.offline)
    if offline and (args.source == "dukascopy" or args.exchange.strip().lower() != "binance"
                    or args.market != "spot" or args.archive_dir is not None):
        raise UserError("--offline serves a simulated Binance spot market only",
                        "drop --exchange / --market / --archive-dir / --source dukascopy, or drop --offline")
    if args.source == "dukascopy":
        return _dukascopy(args)
    with offline_mode(offline, days=args.days + 30):
        summary = update_dataset(symbol=args.symbol, interval=args.interval, days=args.days, end=args.end,
                                 out=args.out, source=args.source, archive_dir=args.archive_dir, plan=args.plan,
                                 progress=not args.no_progress, exchange=args.exchange, market=args.market,
                                 price=args.price, client=args.client)
    if summary.planned:
        for line in summary.stats.notes:
            print(line)
        return 0
    for note in summary.stats.notes:
        print(f"note: {note}")
    if summary.listing_note:
        print(f"note: {summary.listing_note}")
    print(summary.line() + (" [SIMULATED market data]" if offline else ""))
    if args.format != "parquet":
        from S1.formats import export_dataset

        target = export_dataset(summary.path, args.format, gzip=args.gzip, out=args.export_out)
        print(f"exported {summary.rows:,} candles to {target}")
    return 0


def _dukascopy(args) -> int:
    from S1.datasets import Dataset
    from S1.dukascopy import update_fx_dataset

    if args.plan or args.archive_dir is not None or args.exchange != "binance" or args.market != "spot":
        raise UserError("--source dukascopy takes --symbol --interval --days [--end --side --out --format]",
                        "drop --plan / --archive-dir / --exchange / --market")
    fx = update_fx_dataset(Dataset.from_args(args, exchange=False), end=args.end, side=args.side, out=args.out)
    print(fx.line())
    if args.format != "parquet":
        from S1.formats import export_dataset

        target = export_dataset(fx.path, args.format, gzip=args.gzip, out=args.export_out)
        print(f"exported {fx.rows:,} candles to {target}")
    return 0


if __name__ == "__main__":
    main_entry(main)
