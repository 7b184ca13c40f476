"""Benchmark the S9 Redis bus: closed candle committed on the streamer host -> row committed in an
executor host's local table, against reading the streamer's table directly (no bus), in one run.

    .venv/bin/python bench/bench_bus.py                        # 400 candles, one every 0.02 s (~20 s)
    .venv/bin/python bench/bench_bus.py --candles 1000 --spacing 0.01

Actors, as in real use: a streamer stand-in (this process) commits closed candles with
:class:`S1.stream_store.KlineStore`; ``python S9/bus_bridge.py publish`` and ``subscribe`` run as
their own processes against a real ``redis-server`` (AOF, ``appendfsync always``: every write on disk
before it is acknowledged); the baseline is a ``PRAGMA data_version`` follower of the streamer's
table in a thread (what S7 ``--source db`` does on the same host), polling as often as the publisher.

Latency = the subscriber's ``applied_at`` (or the follower's clock) - the candle's ``updated_at`` in
the streamer's table (both ms, same machine clock).
"""

from __future__ import annotations

import argparse
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from S1.stream_store import KlineStore  # noqa: E402
from tests.S9.servers import RedisServer, spawn, stop_proc, wait_for  # noqa: E402

MIN = 60_000


def _row(i):
    o = 100.0 + i * 0.01
    return ("BTCUSDT", "1m", i * MIN, i * MIN + MIN - 1, o, o + 1, o - 1, o + 0.5, 1.0, 100.0, 0.5, 50.0, 10, 1)


def _pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q * (len(xs) - 1))))]


def _follower(db: Path, n: int, poll: float, seen: dict, stop: threading.Event):
    con = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)
    version, after = None, -1
    while not stop.is_set() and len(seen) < n:
        v = con.execute("PRAGMA data_version").fetchone()[0]
        if v != version:
            version = v
            for (t,) in con.execute("SELECT open_time FROM kline WHERE symbol='BTCUSDT' AND interval='1m' "
                                    "AND open_time > ? AND is_closed=1 ORDER BY open_time", (after,)):
                seen[t] = int(time.time() * 1000)
                after = t
        time.sleep(poll)
    con.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candles", type=int, default=400)
    ap.add_argument("--spacing", type=float, default=0.02, help="seconds between closed candles")
    ap.add_argument("--poll", type=float, default=0.02, help="publisher and baseline poll, s")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_bus_"))
    redis = RedisServer(tmp).start()
    env = {**os.environ, "BUS_URL": redis.url}
    src, dst = tmp / "stream.db", tmp / "host_b.db"
    store = KlineStore(src)
    store.write([_row(0)])
    pub = spawn(["S9/bus_bridge.py", "publish", "--db", str(src), "--backlog", "0", "--poll", str(args.poll)], env,
                tmp / "pub.log")
    sub = spawn(["S9/bus_bridge.py", "subscribe", "--db", str(dst), "--group", "bench", "--consumer", "b"], env,
                tmp / "sub.log")
    seen: dict[int, int] = {}
    stop = threading.Event()
    try:
        wait_for(lambda: dst.exists() and sqlite3.connect(dst).execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE name='bus_applied'").fetchone()[0], "the subscriber", 120)
        time.sleep(1.0)            # both processes past their imports
        follower = threading.Thread(target=_follower, args=(src, args.candles, args.poll, seen, stop), daemon=True)
        follower.start()
        t0 = time.perf_counter()
        for i in range(1, args.candles + 1):
            store.write([_row(i)])
            time.sleep(args.spacing)
        wall = time.perf_counter() - t0
        wait_for(lambda: sqlite3.connect(dst).execute("SELECT COUNT(*) FROM bus_applied").fetchone()[0]
                 >= args.candles, "every candle across the bus", 300)
        follower.join(60)
    finally:
        stop.set()
        stop_proc(pub)
        stop_proc(sub)
        store.close()
        redis.stop()
    committed = dict(sqlite3.connect(src).execute("SELECT open_time, updated_at FROM kline WHERE open_time > 0"))
    applied = dict(sqlite3.connect(dst).execute("SELECT open_time, applied_at FROM bus_applied WHERE open_time > 0"))
    bus = [applied[t] - committed[t] for t in committed]
    direct = [seen[t] - committed[t] for t in committed if t in seen]
    p = lambda xs: f"p50 {statistics.median(xs):.0f} ms, p99 {_pct(xs, 0.99):.0f} ms, max {max(xs):.0f} ms"
    print(f"{len(committed)} closed candles in {wall:.1f} s ({len(committed) / wall:.0f}/s), "
          f"poll {args.poll * 1000:.0f} ms, redis appendfsync always")
    print(f"  across the bus (publish -> Redis -> subscribe -> local table): {p(bus)}")
    print(f"  baseline, the streamer's table read directly on its host:      {p(direct)}")
    print(f"  the bus hop adds p50 {statistics.median(bus) - statistics.median(direct):.0f} ms, "
          f"p99 {_pct(bus, 0.99) - _pct(direct, 0.99):.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
