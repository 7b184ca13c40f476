"""Carry closed candles across hosts on the Redis bus (``BUS_URL``); see S9/README.md.

    # on the streamer host, beside python S1/streamer.py --symbol BTCUSDT --interval 1m
    python S9/bus_bridge.py publish --db data/btcusdt_1m_realtime.db
    # on each executor host (one --group per host), then S7 reads the local copy as usual:
    python S9/bus_bridge.py subscribe --db data/btcusdt_1m_realtime.db --group host-b
    python S7/executor.py --symbol BTCUSDT --interval 1m --source db --dry-run
    # stream length, groups, pending and lag
    python S9/bus_bridge.py info

Ctrl-C / SIGTERM stop cleanly (exit 0); a Redis restart is ridden out (reconnect with backoff).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from S1.cli import ArgumentParser, add_common_args, main_entry


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python S9/bus_bridge.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True, metavar="{publish,subscribe,info}")

    def common(sp):
        sp.add_argument("--stream", default="toolkit:klines", help="Redis stream key (default toolkit:klines)")
        sp.add_argument("--markets", default=None,
                        help="only these SYMBOL:INTERVAL markets, comma-separated (default: all in the table)")
        add_common_args(sp)

    pub = sub.add_parser("publish", help="follow a streamer database and publish its closed candles")
    pub.add_argument("--db", type=Path, required=True, help="the streamer's SQLite file (python S1/streamer.py)")
    pub.add_argument("--backlog", type=int, default=1000,
                     help="first run (no cursor in Redis): start this many closed candles back per market")
    pub.add_argument("--maxlen", type=int, default=100_000, help="keep about this many stream entries")
    pub.add_argument("--poll", type=float, default=0.05, help="seconds between checks of the database (0.05)")
    common(pub)

    s = sub.add_parser("subscribe", help="copy the published candles into a local streamer-format database")
    s.add_argument("--db", type=Path, required=True, help="local SQLite file that S7 --source db reads")
    s.add_argument("--group", required=True, help="consumer group: one per executor host, e.g. host-b")
    s.add_argument("--consumer", default=None, help="name inside the group (default: the host name; keep it stable)")
    common(s)

    info = sub.add_parser("info", help="the stream's length, groups, pending entries and lag")
    info.add_argument("--stream", default="toolkit:klines", help="Redis stream key (default toolkit:klines)")
    add_common_args(info)
    return p


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from S9.bus import BusConfig, KlinePublisher, KlineSubscriber, connect

    if args.cmd == "info":
        r = connect()
        length = r.xlen(args.stream) if r.exists(args.stream) else 0
        print(f"stream {args.stream}: {length} entries")
        for g in (r.xinfo_groups(args.stream) if length else []):
            print(f"  group {g['name']}: pending {g['pending']}, lag {g.get('lag')}, "
                  f"last delivered {g['last-delivered-id']}")
        return 0
    markets = args.markets.split(",") if args.markets else None
    stop = _stop_on_signals()
    if args.cmd == "publish":
        worker = KlinePublisher(args.db, config=BusConfig(stream=args.stream, maxlen=args.maxlen), markets=markets,
                                backlog=args.backlog, poll=args.poll)
        print(f"publishing closed candles of {args.db} on {args.stream} (Ctrl-C stops)", flush=True)
        try:
            worker.run(stop)
        finally:
            worker.close()
        print(f"published {worker.published} candles")
    else:
        worker = KlineSubscriber(args.db, group=args.group, consumer=args.consumer,
                                 config=BusConfig(stream=args.stream), markets=markets)
        print(f"subscribing to {args.stream} as {args.group}/{worker.consumer} into {args.db} (Ctrl-C stops)",
              flush=True)
        try:
            worker.run(stop)
        finally:
            worker.close()
        print(f"applied {worker.applied} candles")
    return 0


if __name__ == "__main__":
    main_entry(main)
