"""Write closed candles, fills and equity to InfluxDB (``INFLUX_URL``, ``INFLUX_DATABASE``,
``INFLUX_TOKEN``), so Grafana charts prices beside the service's metrics; see S9/README.md.

    python S9/influx_sink.py --db data/btcusdt_1m_realtime.db --orders data/orders.jsonl \\
        --metrics-url http://127.0.0.1:8008/metrics
    python S9/influx_sink.py --db data/btcusdt_1m_realtime.db --once      # one round, then exit

Ctrl-C / SIGTERM stop cleanly; an unreachable InfluxDB is retried with backoff (nothing skipped).
"""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from S1.cli import ArgumentParser, add_common_args, main_entry


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python S9/influx_sink.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--db", type=Path, default=None, help="the streamer's SQLite file: closed candles")
    p.add_argument("--orders", type=Path, default=None, help="S7's order log (data/orders.jsonl): fills")
    p.add_argument("--metrics-url", default=None, help="the S8 service's /metrics: equity and position")
    p.add_argument("--backlog", type=int, default=1000, help="candles per market written at start (default 1000)")
    p.add_argument("--every", type=float, default=1.0, help="seconds between rounds (default 1)")
    p.add_argument("--once", action="store_true", help="one round, then exit")
    add_common_args(p)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from S9.influx import InfluxSink, InfluxWriter

    writer = InfluxWriter()
    sink = InfluxSink(writer, db=args.db, orders=args.orders, metrics_url=args.metrics_url, backlog=args.backlog)
    writer.ensure_database()
    if args.once:
        print(f"wrote {sink.run_once()} points to {writer.url} ({writer.database})")
        return 0
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    print(f"writing to {writer.url} ({writer.database}) every {args.every:g}s (Ctrl-C stops)", flush=True)
    sink.run(stop, every=args.every)
    writer.close()
    print(f"wrote {writer.points} points")
    return 0


if __name__ == "__main__":
    main_entry(main)
