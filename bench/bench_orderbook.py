"""Benchmark order-book maintenance (S1/orderbook.py, S1/book_stream.py): updates/s per market
and memory over time.

    .venv/bin/python bench/bench_orderbook.py                       # 60 s end to end, 20 markets
    .venv/bin/python bench/bench_orderbook.py --duration 600        # the issue's 10-minute memory run
    .venv/bin/python bench/bench_orderbook.py --duration 0          # the in-process figures only

**In process** (one core, no network): ``--events`` pre-rendered ``depthUpdate`` messages of
one simulated market (S1/local/depth.py: 1-4 level changes per event, ~200 levels a side)
go through what the streamer does per message -- JSON parse, :func:`parse_depth_event`,
:meth:`LocalBook.on_event` (U/u checks, Decimal levels, crossed check) -- and, in a second
pass, also the top-20 extraction done when every update is recorded. The baseline in the same
run is the JSON parse alone; the ratio says what book maintenance costs on top.

**End to end**: the local exchange (REST + streams) runs in its own process with ``--markets``
simulated markets at ``--speed`` x real time (10 depth events/s per market at 1x); the real
streamer (:class:`S1.book_stream.BookStreamer`: depth + bookTicker, top 20 recorded every
second into SQLite) runs in this process for ``--duration`` s. Figures: depth updates/s
processed per market, books recorded, gaps, and this process's RSS sampled every 5 s
(growth after a warm-up, MB/min).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ in process
def in_process(n_events: int) -> dict:
    from S1.local.depth import DepthMarket
    from S1.orderbook import APPLIED, LocalBook, parse_depth_event

    try:
        from orjson import loads
    except ImportError:  # pragma: no cover
        loads = json.loads
    m = DepthMarket("BENCHUSDT", start_ms=0, history_events=0, keep_events=n_events + 10)
    snapshot = m.snapshot(5000)
    msgs = [m.depth_json([m.event(i)]) for i in range(n_events)]

    def parse_only():
        t = time.perf_counter()
        for raw in msgs:
            loads(raw)
        return time.perf_counter() - t

    def maintain(top: bool):
        book = LocalBook("BENCHUSDT")
        book.on_snapshot(snapshot)
        t = time.perf_counter()
        for raw in msgs:
            if book.on_event(parse_depth_event(loads(raw))) == APPLIED and top:
                book.book.top(20)
        took = time.perf_counter() - t
        assert book.applied == n_events and book.gaps == 0
        return took

    best = {k: min(f() for _ in range(3)) for k, f in (("parse", parse_only), ("book", lambda: maintain(False)),
                                                        ("book+top20", lambda: maintain(True)))}
    return {k: n_events / v for k, v in best.items()}


# ------------------------------------------------------------------ end to end
def serve(port: int, markets: int, speed: float) -> None:
    """``--serve``: the local exchange in this (child) process until killed."""
    from S1.local.exchange import LocalBinance
    from S1.local.stream import LocalStream, ReplayClock

    clock = ReplayClock(None, speed)
    ex = LocalBinance(simulate=True, simulate_days=1, now_ms=clock.now_ms, port=port)
    LocalStream(ex, clock, depth_history=0, depth_keep_events=2_000, ping_interval=20.0)
    for i in range(1, markets + 1):
        ex.rows_for(f"S{i:03d}USDT", "1m")
    ex.start()
    print("ready", flush=True)
    ex.serve_until_interrupted()


def end_to_end(args) -> dict:
    port = free_port()
    server = subprocess.Popen([sys.executable, __file__, "--serve", str(port), "--markets", str(args.markets),
                               "--speed", str(args.speed)], stdout=subprocess.PIPE, cwd=ROOT)
    try:
        assert server.stdout.readline().strip() == b"ready"
        os.environ["BINANCE_API_URL"] = f"http://127.0.0.1:{port}/api"
        os.environ["BINANCE_WS_URL"] = f"ws://127.0.0.1:{port}"
        from S1.book_stream import BookConfig, BookStreamer
        from S1.settings import get_settings

        get_settings.cache_clear()
        tmp = Path(tempfile.mkdtemp(prefix="bench_orderbook_"))
        symbols = tuple(f"S{i:03d}USDT" for i in range(1, args.markets + 1))
        cfg = BookConfig(symbols=symbols, streams=("depth", "bookTicker"), depth=20, book_every=1.0,
                         db_path=tmp / "book.db", duration=args.duration, status_every=60)
        streamer = BookStreamer(cfg)
        samples: list[tuple[float, float, int]] = []

        async def sampler():
            t0 = time.monotonic()
            while True:
                await asyncio.sleep(5)
                gc.collect()
                samples.append((time.monotonic() - t0, rss_mb(), streamer.stats.depth_events))

        async def main():
            task = asyncio.create_task(sampler())
            try:
                return await streamer.run()
            finally:
                task.cancel()

        cpu0 = time.process_time()
        summary = asyncio.run(main())
        cpu = time.process_time() - cpu0
    finally:
        server.terminate()
        server.wait(10)
    warm = [s for s in samples if s[0] >= min(20.0, args.duration / 3)]
    slope = 0.0
    if len(warm) >= 2:
        xs, ys = [s[0] / 60 for s in warm], [s[1] for s in warm]
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / max(1e-9, sum((x - mx) ** 2 for x in xs))
    return {"summary": summary, "samples": samples, "slope_mb_per_min": slope, "cpu_s": cpu,
            "rss_first": warm[0][1] if warm else None, "rss_last": warm[-1][1] if warm else None}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="end-to-end seconds (0: skip it)")
    p.add_argument("--markets", type=int, default=20)
    p.add_argument("--speed", type=float, default=5.0, help="replay speed (10 depth events/s per market at 1x)")
    p.add_argument("--events", type=int, default=20_000, help="in-process events")
    p.add_argument("--serve", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.serve is not None:
        serve(args.serve, args.markets, args.speed)
        return 0
    r = in_process(args.events)
    print(f"in process, one market, {args.events:,} depth events (best of 3):")
    print(f"  JSON parse only (baseline)       {r['parse']:>12,.0f} updates/s")
    print(f"  + book maintenance (U/u, levels) {r['book']:>12,.0f} updates/s  ({r['parse'] / r['book']:.1f}x the parse cost)")
    print(f"  + top-20 after every update      {r['book+top20']:>12,.0f} updates/s  "
          f"({r['parse'] / r['book+top20']:.1f}x the parse cost)")
    if args.duration > 0:
        e = end_to_end(args)
        s = e["summary"]
        per_market = s.depth_events / s.seconds / args.markets
        print(f"end to end, {args.markets} markets at {args.speed:g}x ({10 * args.speed:g} depth events/s per market "
              f"offered), {s.seconds:.0f} s:")
        print(f"  depth updates processed: {per_market:,.1f} /s per market ({s.depth_events / s.seconds:,.0f} /s in all), "
              f"{s.applied:,} applied, {s.gaps} gaps, {s.books_recorded:,} books recorded, "
              f"{s.book_tickers:,} best bid/ask rows")
        print(f"  client CPU: {e['cpu_s'] / max(1, s.messages) * 1e6:.0f} us per message "
              f"({e['cpu_s'] / s.seconds * 100:.0f}% of one core)")
        if e["rss_first"] is not None:
            print(f"  client RSS after warm-up: {e['rss_first']:.1f} MB -> {e['rss_last']:.1f} MB, "
                  f"trend {e['slope_mb_per_min']:+.2f} MB/min")
        print("  RSS samples (s, MB): " + ", ".join(f"{t:.0f}:{m:.1f}" for t, m, _ in e["samples"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
