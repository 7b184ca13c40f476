"""Download Binance klines into ``data/<symbol>_<interval>_<days>d.parquet``.

    python S1/historical.py --symbol ETHUSDC --interval 1h --days 365
    python S1/historical.py --symbol BTCUSDT --interval 1m --days 30 --end 2024-06-01 --source archive
    python S1/historical.py --symbol BTCUSDT --interval 1h --days 365 --plan

The window is ``[end - days, end)`` (``--end`` defaults to now); only closed
candles are written; re-runs fetch only what the file is missing.
"""

from __future__ import annotations

from pathlib import Path

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.history import SOURCES, update_dataset


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python S1/historical.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--symbol", required=True, help="exchange symbol, e.g. BTCUSDT or ETHUSDC")
    p.add_argument("--interval", default="1h", help="1s 1m 3m 5m 15m 30m 1h 2h 4h 6h 8h 12h 1d 3d 1w 1M")
    p.add_argument("--days", type=int, default=365, help="window length in days (default 365)")
    p.add_argument("--end", default=None, help="window end, ISO UTC date/datetime (default: now)")
    p.add_argument("--out", type=Path, default=None, help="output file (default data/<symbol>_<interval>_<days>d.parquet)")
    p.add_argument("--source", choices=SOURCES, default="auto",
                   help="auto: public archive for whole past months/days, REST for the rest")
    p.add_argument("--archive-dir", type=Path, default=None,
                   help="read local archive files (zip/csv, Binance or CryptoDataDownload layout) instead of downloading")
    p.add_argument("--plan", action="store_true", help="show what the file covers and what is missing; download nothing")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_common_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    summary = update_dataset(symbol=args.symbol, interval=args.interval, days=args.days, end=args.end,
                             out=args.out, source=args.source, archive_dir=args.archive_dir, plan=args.plan,
                             progress=not args.no_progress)
    if summary.planned:
        for line in summary.stats.notes:
            print(line)
        return 0
    for note in summary.stats.notes:
        print(f"note: {note}")
    if summary.listing_note:
        print(f"note: {summary.listing_note}")
    print(summary.line())
    return 0


if __name__ == "__main__":
    main_entry(main)
