"""Carry closed candles, order events and service state across hosts on the Redis bus (``BUS_URL``);
see S9/README.md.

    # on the streamer host, beside python S1/streamer.py --symbol BTCUSDT --interval 1m
    python S9/bus_bridge.py publish --db data/btcusdt_1m_realtime.db
    # on each executor host (one --group per host), then S7 reads the local copy as usual:
    python S9/bus_bridge.py subscribe --db data/btcusdt_1m_realtime.db --group host-b
    python S7/executor.py --symbol BTCUSDT --interval 1m --source db --dry-run
    # each executor host: its order log (fills, rejections) on the stream toolkit:orders
    python S9/bus_bridge.py publish-orders --orders data/orders.jsonl --source host-b
    # each service host: its /status and kill-switch states, shared every 5 s; read them anywhere
    python S9/bus_bridge.py share-status --name host-b
    python S9/bus_bridge.py state kill_switch:BTCUSDT
    # stream length, groups, pending and lag
    python S9/bus_bridge.py info

Ctrl-C / SIGTERM stop cleanly (exit 0); a Redis restart is ridden out (reconnect with backoff).
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path

from S1.cli import ArgumentParser, add_common_args, main_entry
from S1.errors import UserError

log = logging.getLogger("S9.bus_bridge")


def build_parser() -> ArgumentParser:
    p = ArgumentParser(prog="python S9/bus_bridge.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True,
                           metavar="{publish,subscribe,publish-orders,share-status,state,info}")

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

    po = sub.add_parser("publish-orders", help="follow an S7 order log onto the stream toolkit:orders")
    po.add_argument("--orders", type=Path, required=True, help="the order log, e.g. data/orders.jsonl")
    po.add_argument("--source", default=None, help="this host's name on each entry (default: the host name)")
    po.add_argument("--stream", default="toolkit:orders", help="Redis stream key (default toolkit:orders)")
    add_common_args(po)

    ss = sub.add_parser("share-status", help="share the S8 service's /status and kill-switch states")
    ss.add_argument("--name", default=None, help="this service's name on the bus (default: the host name)")
    ss.add_argument("--url", default=None, help="default http://<CONTROL_API_HOST>:<CONTROL_API_PORT>/status")
    ss.add_argument("--every", type=float, default=5.0, help="seconds between rounds (default 5)")
    ss.add_argument("--once", action="store_true", help="one round, then exit")
    add_common_args(ss)

    st = sub.add_parser("state", help="print a shared state, e.g. kill_switch:BTCUSDT or status:host-b")
    st.add_argument("name")
    add_common_args(st)

    info = sub.add_parser("info", help="the stream's length, groups, pending entries and lag")
    info.add_argument("--stream", default="toolkit:klines", help="Redis stream key (default toolkit:klines)")
    add_common_args(info)
    return p


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _share_status(args) -> int:
    import socket

    from S1.settings import get_settings
    from S9.bus import connect, share_status

    s = get_settings()
    token = s.control_api_token.get_secret_value() if s.control_api_token else None
    if not token:
        raise UserError("CONTROL_API_TOKEN is not set", "put the service's token in .env (see S8/README.md)")
    host = "127.0.0.1" if s.control_api_host in ("0.0.0.0", "::") else s.control_api_host
    url = args.url or f"http://{host}:{s.control_api_port}/status"
    name = args.name or socket.gethostname()
    r = connect()
    stop = _stop_on_signals()
    while True:
        try:
            status = share_status(url, token, name=name, r=r)
            if args.once:
                print(f"shared status:{name} ({len(status.get('markets', []))} market(s))")
                return 0
        except Exception as exc:  # noqa: BLE001 - a service restart or a Redis restart: next round
            if args.once:
                raise
            log.warning("share-status: %s", s.redact(str(exc)))
        if stop.wait(args.every):
            return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    from S9.bus import BusConfig, KlinePublisher, KlineSubscriber, connect

    if args.cmd == "state":
        import json

        from S9.bus import get_state

        value = get_state(args.name)
        if value is None:
            raise UserError(f"nothing shared as {args.name!r} yet", "start: python S9/bus_bridge.py share-status")
        print(json.dumps(value, indent=2, sort_keys=True))
        return 0
    if args.cmd == "share-status":
        return _share_status(args)
    if args.cmd == "publish-orders":
        from S9.bus import OrderLogPublisher

        stop = _stop_on_signals()
        pub = OrderLogPublisher(args.orders, source=args.source, stream=args.stream)
        print(f"publishing {args.orders} on {args.stream} as {pub.source} (Ctrl-C stops)", flush=True)
        try:
            pub.run(stop)
        finally:
            pub.close()
        print(f"published {pub.published} order events")
        return 0
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
