"""Stream live klines into SQLite (``data/<symbol>_<interval>_realtime.db``): Binance, or any
exchange CCXT knows (``data/okx_<symbol>_<interval>_realtime.db``).

    python S1/streamer.py                                   # BTCUSDT 1m until Ctrl-C
    python S1/streamer.py --symbols BTCUSDT,ETHUSDC,SOLUSDT --interval 1m --duration 3600
    python S1/streamer.py --symbol BTCUSDT --offline --offline-candle-seconds 1 --duration 30   # simulated market
    python S1/streamer.py --symbol ETHUSDC --stream trades --aggregate 1m
    python S1/streamer.py --exchange okx --symbols BTC/USDT,ETH/USDT --interval 1m
    python S1/streamer.py --exchange binance --market swap --symbol BTC/USDT     # USD-M perpetual, via CCXT
    python S1/streamer.py --symbols BTCUSDT,ETHUSDT --streams depth,bookTicker,ticker --depth 20 --book-every 1s
    python S1/streamer.py --exchange okx --symbols BTC/USDT --streams orderbook,ticker

Closed candles are never lost: after every (re)connect the candles that closed
meanwhile are fetched over REST. Ctrl-C / SIGTERM flush and exit 0. See
S1/README_streamer.md.
"""

from __future__ import annotations

import json
from pathlib import Path

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.options import add_offline_option
from S1.datasets import atomic_write_text
from S1.errors import UserError
from S1.stream_client import run_streamer
from S1.stream_config import STREAMS, TRADE_STREAMS, StreamConfig

MARKETS = ("spot", "swap", "future")  # as S1.ccxt_source.MARKETS (not imported: ccxt is slow to import)


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python S1/streamer.py", description=__doc__.split("\n\n")[0])
    who = p.add_mutually_exclusive_group()
    who.add_argument("--symbol", default=None, help="one symbol (default BTCUSDT)")
    who.add_argument("--symbols", default=None, help="comma-separated symbols, one connection for all")
    p.add_argument("--interval", default=None, help="kline interval (default 1m): 1s 1m 3m 5m 15m 30m 1h ... 1M")
    p.add_argument("--db", type=Path, default=None,
                   help="SQLite file (default data/<first symbol>_<interval>_realtime.db)")
    p.add_argument("--duration", type=float, default=None, help="stop after SECONDS (default: until Ctrl-C)")
    add_offline_option(p)
    p.add_argument("--offline-candle-seconds", type=float, default=60.0, metavar="N",
                   help="--offline: a 1m candle of the simulated market closes every N wall seconds (60: real time)")
    p.add_argument("--stream", choices=STREAMS, default="kline",
                   help="kline: the exchange's kline stream; trades: build candles from trades")
    p.add_argument("--aggregate", choices=("1m",), default=None,
                   help="candle size built from trades (with --stream trades; only 1m)")
    p.add_argument("--trade-stream", choices=TRADE_STREAMS, default="aggTrade",
                   help="which trade stream feeds --stream trades (default aggTrade)")
    p.add_argument("--backfill-minutes", type=float, default=60.0,
                   help="on a new database, fill this many minutes of history over REST first (default 60)")
    p.add_argument("--status-every", type=float, default=60.0, help="seconds between status lines (default 60)")
    p.add_argument("--max-failures", type=int, default=10,
                   help="give up after this many consecutive failed connections (default 10)")
    p.add_argument("--backoff-max", type=float, default=60.0, help="longest wait between reconnects, s (default 60)")
    p.add_argument("--closed-only", action="store_true", help="write closed candles only (no in-progress row)")
    p.add_argument("--commit-ms", type=float, default=10.0,
                   help="longest wait before a batch of rows is committed, ms (default 10)")
    p.add_argument("--stats-json", type=Path, default=None, help="also write the run's figures to this JSON file")
    b = p.add_argument_group("order books and tickers (instead of candles)")
    b.add_argument("--streams", default=None,
                   help="comma-separated: depth (alias orderbook), bookTicker, ticker; records books/tickers "
                        "into data/<symbol>_book_realtime.db (tables book, book_ticker, ticker)")
    b.add_argument("--depth", type=int, default=20, help="levels per side recorded from each book (default 20)")
    b.add_argument("--book-every", default="1s",
                   help="record each book every 1s / 250ms / ..., or 'update' for every update (default 1s)")
    b.add_argument("--book-format", choices=("sqlite", "parquet", "feather"), default="sqlite",
                   help="sqlite (default) or Parquet/Feather files rolled by hour in a folder (--db names it)")
    b.add_argument("--depth-speed", choices=("100ms", "1000ms"), default="100ms",
                   help="Binance diff-depth stream speed (default 100ms)")
    g = p.add_argument_group("other exchanges (CCXT websockets)")
    g.add_argument("--exchange", default="binance",
                   help="CCXT exchange id, e.g. okx, bybit (default binance: the project's own Binance client)")
    g.add_argument("--market", choices=MARKETS, default="spot", help="spot, swap (perpetual) or future (dated)")
    g.add_argument("--client", choices=("auto", "ccxt"), default="auto",
                   help="auto: own client for Binance spot, CCXT otherwise; ccxt: CCXT for Binance too")
    add_common_args(p)
    return p


def book_streams(text: str) -> tuple[str, ...]:
    """``--streams`` -> book stream kinds (``orderbook`` is ``depth``).

    >>> book_streams("orderbook, ticker")
    ('depth', 'ticker')
    """
    names = {"depth": "depth", "orderbook": "depth", "book": "depth", "bookticker": "bookTicker",
             "bbo": "bookTicker", "ticker": "ticker"}
    out = []
    for raw in (x.strip() for x in text.split(",")):
        if not raw:
            continue
        if raw.lower() not in names:
            raise UserError(f"unknown stream {raw!r} in --streams",
                            "use depth (or orderbook), bookTicker, ticker, e.g. --streams depth,bookTicker,ticker")
        out.append(names[raw.lower()])
    if not out:
        raise UserError("--streams is empty", "e.g. --streams depth,bookTicker,ticker")
    return tuple(dict.fromkeys(out))


def _main_books(args, symbols: list[str]):
    if args.stream != "kline" or args.aggregate or args.interval or args.closed_only:
        raise UserError("--streams records order books/tickers; --stream/--aggregate/--interval/--closed-only "
                        "are for candles", "drop one of them (run twice for both)")
    options = dict(streams=book_streams(args.streams), depth=args.depth, book_every=args.book_every,
                   book_format=args.book_format, db_path=args.db, duration=args.duration,
                   status_every=args.status_every, max_failures=args.max_failures, backoff_max=args.backoff_max,
                   depth_speed_ms=100 if args.depth_speed == "100ms" else 1000)
    if args.exchange.strip().lower() != "binance" or args.market != "spot" or args.client == "ccxt":
        from S1.ccxt_source import Venue
        from S1.ccxt_book_stream import run_ccxt_book_streamer

        return run_ccxt_book_streamer(symbols, venue=Venue(args.exchange, args.market), **options)
    from S1.book_stream import BookConfig, run_book_streamer

    return run_book_streamer(BookConfig(symbols=tuple(symbols), **options))


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from S1.offline import offline_mode, offline_requested

    if not offline_requested(args.offline):
        return _main(args)
    if args.exchange.strip().lower() != "binance" or args.market != "spot" or args.client == "ccxt" \
            or args.streams is not None:
        raise UserError("--offline serves simulated Binance spot klines only",
                        "drop --exchange / --market / --client ccxt / --streams, or drop --offline")
    if not args.offline_candle_seconds > 0:
        raise UserError("--offline-candle-seconds must be positive", "e.g. --offline-candle-seconds 1")
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()] if args.symbols else [args.symbol or "BTCUSDT"]
    with offline_mode(True, stream_symbols=[s.replace("/", "").upper() for s in symbols],
                      candle_seconds=args.offline_candle_seconds):
        return _main(args, label=" [SIMULATED market data]")


def _main(args, label: str = "") -> int:
    if args.aggregate and args.stream != "trades":
        raise UserError("--aggregate only applies to --stream trades", "add --stream trades or drop --aggregate")
    symbols = [s for s in args.symbols.split(",") if s.strip()] if args.symbols else [args.symbol or "BTCUSDT"]
    if args.aggregate and args.interval and args.interval != args.aggregate:
        raise UserError(f"--interval {args.interval} conflicts with --aggregate {args.aggregate}",
                        "drop --interval: candles built from trades are 1m")
    if args.streams is not None:
        summary = _main_books(args, symbols)
        print(summary.line(), flush=True)
        if args.stats_json:
            atomic_write_text(args.stats_json, json.dumps(summary.as_dict(), indent=2, default=str))
        return 0
    interval = args.aggregate or args.interval or "1m"
    options = dict(interval=interval, db_path=args.db, stream=args.stream, trade_stream=args.trade_stream,
                   duration=args.duration, backfill_minutes=args.backfill_minutes, status_every=args.status_every,
                   max_failures=args.max_failures, backoff_max=args.backoff_max,
                   write_in_progress=not args.closed_only, commit_interval=args.commit_ms / 1000.0)
    if args.exchange.strip().lower() != "binance" or args.market != "spot" or args.client == "ccxt":
        from S1.ccxt_source import Venue
        from S1.ccxt_stream import run_ccxt_streamer

        summary = run_ccxt_streamer(symbols, venue=Venue(args.exchange, args.market), **options)
    else:
        # a run that fails before any row (unknown symbol, no API) leaves no empty file (S1.stream_client)
        summary = run_streamer(StreamConfig(symbols=tuple(symbols), **options))
    print(summary.line() + label, flush=True)
    if args.stats_json:
        atomic_write_text(args.stats_json, json.dumps(summary.as_dict(), indent=2, default=str))
    return 0


if __name__ == "__main__":
    main_entry(main)
