"""Benchmark the live kline streamer (S1/streamer.py): sustained ingest into SQLite.

    .venv/bin/python bench/bench_streamer.py                    # 60 s at 6,000 msg/s + a 10 s saturation test
    .venv/bin/python bench/bench_streamer.py --duration 600     # the 10-minute flat-memory run
    .venv/bin/python bench/bench_streamer.py --saturate 0       # sustained phase only
    .venv/bin/python bench/bench_streamer.py --saturate 0 --client ccxt   # the same through ccxt.pro

Targets (issue 3): >= 5,000 kline messages/s into SQLite, p99 message-to-row latency
<= 50 ms, flat memory over 10 minutes.

**Sustained.** The local exchange (``python -m S1.local.stream``: REST + streams)
runs in its own process, so client and server do not share a GIL. It replays
``--symbols`` simulated 1m markets at real speed with enough in-progress updates per
candle to offer ``--rate`` kline messages/s on one combined-stream connection. The
client is the real CLI, ``python S1/streamer.py --symbols ... --duration D``, in a
fresh process. Figures:

- ingest rate: messages/s over the run and per status window (min/median);
- message -> row latency: from the moment a message is read off the socket to the
  commit of its row (the streamer's own histogram, every message), and exchange
  event time ``E`` -> committed row (includes the server, the network and queueing);
- memory: the client's RSS sampled every second; growth after warm-up, as MB/min;
- CPU: client CPU seconds per 1,000 messages;
- correctness: every symbol's closed candles form an unbroken run in the table.

**Saturation** (``--saturate S`` seconds x ``--rounds``, consumers interleaved
against one server in ``--blast`` mode, which re-sends pre-rendered events as fast
as a client reads): the messages/s each consumer sustains, against baselines in the
same run -- a bare ``websockets`` loop that only counts messages (the transport
ceiling) and python-binance's ``BinanceSocketManager.multiplex_socket`` (receive +
JSON, no storage).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
PY = sys.executable
START = "2017-02-01"  # replay clock start: near the simulator's anchor, so markets build fast

BARE = r"""
import asyncio, sys, time
from websockets.asyncio.client import connect
async def main(url, seconds):
    n = 0
    async with connect(url, compression=None, max_size=1 << 22, max_queue=256) as ws:
        await ws.recv()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            await ws.recv()
            n += 1
    print(n / (time.perf_counter() - t0))
asyncio.run(main(sys.argv[1], float(sys.argv[2])))
"""

PYTHON_BINANCE = r"""
import asyncio, sys, time
from binance import AsyncClient, BinanceSocketManager
async def main(base, streams, seconds):
    client = AsyncClient()
    bsm = BinanceSocketManager(client, max_queue_size=1_000_000)
    bsm.STREAM_URL = base + "/"
    n, errors = 0, 0
    async with bsm.multiplex_socket(streams.split("/")) as s:
        await s.recv()
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            msg = await s.recv()
            if msg.get("e") == "error":
                errors += 1
            n += 1
    await client.close_connection()
    print(n / (time.perf_counter() - t0), errors)
asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except OSError:
        return None


class Server:
    """``python -m S1.local.stream`` in its own process."""

    def __init__(self, n_symbols: int, rate: float, *, blast: bool = False):
        self.port = free_port()
        self.proc = subprocess.Popen(
            [PY, "-m", "S1.local.stream", "--port", str(self.port), "--n-symbols", str(n_symbols),
             "--interval", "1m", "--start", START, "--rate", str(rate), "--days", "1"] + (["--blast"] if blast else []),
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.api = f"http://127.0.0.1:{self.port}/api"
        self.ws = f"ws://127.0.0.1:{self.port}"
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                urllib.request.urlopen(f"{self.api}/v3/ping", timeout=1).read()
                return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server died: {self.proc.stderr.read()}")
                time.sleep(0.2)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def symbols(n: int) -> list[str]:
    return [f"S{i:03d}USDT" for i in range(1, n + 1)]


def run_streamer(server: Server, syms: list[str], duration: float, workdir: Path, status_every: float,
                 commit_ms: float = 10.0, client: str = "auto"):
    db, stats = workdir / "bench.db", workdir / "stats.json"
    for p in (db, Path(f"{db}-wal"), Path(f"{db}-shm"), stats):
        p.unlink(missing_ok=True)
    env = {**os.environ, "BINANCE_API_URL": server.api, "BINANCE_WS_URL": server.ws, "DATA_DIR": str(workdir),
           "TOOLKIT_ENV_FILE": str(workdir / "none.env"), "LOG_LEVEL": "INFO"}
    cmd = [PY, "S1/streamer.py", "--symbols", ",".join(syms), "--interval", "1m", "--db", str(db),
           "--duration", str(duration), "--status-every", str(status_every), "--backfill-minutes", "10",
           "--stats-json", str(stats), "--commit-ms", str(commit_ms), "--client", client]
    log = open(workdir / "streamer.log", "w")
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=log, text=True)
    samples = []  # (seconds since start, rss MB, cpu s)
    t0 = time.monotonic()
    while proc.poll() is None:
        r, c = rss_mb(proc.pid), cpu_seconds(proc.pid)
        if r is not None:
            samples.append((time.monotonic() - t0, r, c))
        time.sleep(1.0)
    out = proc.stdout.read()
    log.close()
    if proc.returncode != 0:
        raise RuntimeError(f"streamer failed ({proc.returncode}): {(workdir / 'streamer.log').read_text()[-2000:]}")
    return json.loads(stats.read_text()), samples, (workdir / "streamer.log").read_text(), out, db


def check_db(db: Path, syms: list[str]) -> tuple[int, int]:
    """(closed candles, symbols whose closed candles have a hole)."""
    import numpy as np

    from S1.stream_store import read_klines

    total, holes = 0, 0
    for s in syms:
        got = read_klines(db, s, "1m")
        total += len(got)
        t = got.index.as_unit("ms").asi8
        holes += int(len(t) > 1 and (np.diff(t) != 60_000).any())
    return total, holes


def slope_mb_per_min(samples, warmup: float) -> tuple[float, float, float, float]:
    pts = [(t, r) for t, r, _ in samples if t >= warmup]
    if len(pts) < 3:
        return float("nan"), float("nan"), float("nan"), float("nan")
    ts, rs = [p[0] for p in pts], [p[1] for p in pts]
    mt, mr = statistics.fmean(ts), statistics.fmean(rs)
    slope = sum((t - mt) * (r - mr) for t, r in pts) / sum((t - mt) ** 2 for t in ts)
    return slope * 60, rs[0], rs[-1], max(rs)


class NoiseProbe:
    """How late a 5 ms sleep wakes up on this machine right now (other load steals the
    CPUs from every process, including the streamer): context for the latency tail."""

    def __init__(self):
        import threading

        self.late_ms: list[float] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            t = time.perf_counter()
            time.sleep(0.005)
            self.late_ms.append((time.perf_counter() - t) * 1000 - 5)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()

    def p99(self) -> float:
        xs = sorted(self.late_ms)
        return xs[int(0.99 * (len(xs) - 1))] if xs else float("nan")

    def max(self) -> float:
        return max(self.late_ms, default=float("nan"))


def load_average() -> float:
    try:
        return float(Path("/proc/loadavg").read_text().split()[0])
    except OSError:
        return float("nan")


def sustained(args, workdir: Path) -> dict:
    syms = symbols(args.symbols)
    server = Server(args.symbols, args.rate)
    load_before = load_average()
    try:
        with NoiseProbe() as noise:
            stats, samples, log, out, db = run_streamer(server, syms, args.duration, workdir, args.status_every,
                                                        args.commit_ms, args.client)
    finally:
        server.stop()
    rates = [float(m.replace(",", "")) for m in re.findall(r"status .*?: ([\d,.]+) msg/s", log)]
    window_p99 = [float(m) for m in re.findall(r"status .*write p99 ([\d.]+) ms", log)]
    steady = rates[1:] if len(rates) > 2 else rates
    warmup = min(20.0, args.duration / 5)
    slope, rss_first, rss_last, rss_max = slope_mb_per_min(samples, warmup)
    cpu = samples[-1][2] if samples and samples[-1][2] is not None else float("nan")
    closed, holes = check_db(db, syms)
    return {
        "symbols": args.symbols, "offered_msgs_per_s": args.rate, "seconds": stats["seconds"],
        "messages": stats["messages"], "msgs_per_s": stats["messages"] / stats["seconds"],
        "window_msgs_per_s_min": min(steady) if steady else None,
        "window_msgs_per_s_median": statistics.median(steady) if steady else None,
        "write_ms_p50": stats["write_ms_p50"], "write_ms_p99": stats["write_ms_p99"],
        "write_ms_max": stats["write_ms_max"], "event_to_row_ms_p50": stats["lag_ms_p50"],
        "event_to_row_ms_p99": stats["lag_ms_p99"], "commits": stats["commits"],
        "rows_committed": stats["rows_committed"], "reconnects": stats["reconnects"],
        "rss_mb_after_warmup": rss_first, "rss_mb_end": rss_last, "rss_mb_max": rss_max,
        "rss_growth_mb_per_min": slope, "client_cpu_s": cpu,
        "client_cpu_ms_per_1000_msgs": cpu / stats["messages"] * 1e6 if stats["messages"] else None,
        "closed_candles": closed, "symbols_with_holes": holes,
        "commit_ms_p99": stats["commit_ms_p99"], "commit_ms_max": stats["commit_ms_max"],
        "window_write_ms_p99": window_p99,
        "windows_over_50ms": sum(1 for x in window_p99 if x > 50), "windows": len(window_p99),
        "machine_load_average_before": load_before, "machine_load_average_after": load_average(),
        "machine_sleep_overshoot_ms_p99": noise.p99(), "machine_sleep_overshoot_ms_max": noise.max(),
    }


def saturation(args, workdir: Path) -> dict:
    """Rounds of each consumer against one server offering far more than anyone
    takes (so each gets what it can consume); the median rate per consumer."""
    n = args.symbols
    syms = symbols(n)
    streams = "/".join(f"{s.lower()}@kline_1m" for s in syms)
    rates: dict[str, list[float]] = {"bare websockets": [], "python-binance": [], "streamer": []}
    errors: dict[str, str] = {}
    server = Server(n, 6000, blast=True)
    try:
        for _ in range(args.rounds):
            for name in rates:
                if name == "streamer":
                    try:
                        _, _, log, _, _ = run_streamer(server, syms, args.saturate + 3, workdir, 1.0, args.commit_ms)
                    except RuntimeError as exc:
                        errors[name] = str(exc)[-300:]
                        continue
                    windows = [float(m.replace(",", "")) for m in re.findall(r"status .*?: ([\d,.]+) msg/s", log)]
                    if len(windows) > 2:
                        rates[name].append(statistics.median(windows[2:]))  # skip start-up (backfill)
                    continue
                code = BARE if name == "bare websockets" else PYTHON_BINANCE
                argv = ([f"{server.ws}/stream?streams={streams}", str(args.saturate)] if name == "bare websockets"
                        else [server.ws, streams, str(args.saturate)])
                res = subprocess.run([PY, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT)
                if res.returncode == 0:
                    rates[name].append(float(res.stdout.split()[0]))
                else:
                    errors[name] = res.stderr.strip()[-300:]
    finally:
        server.stop()
    out = {name: statistics.median(v) for name, v in rates.items() if v}
    out["rounds"] = {name: v for name, v in rates.items()}
    out["errors"] = errors
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=60.0, help="sustained run, seconds (default 60; 600 = 10 min)")
    p.add_argument("--rate", type=float, default=6000.0, help="offered kline messages/s (default 6000)")
    p.add_argument("--symbols", type=int, default=100, help="simulated markets on the one connection")
    p.add_argument("--status-every", type=float, default=5.0, help="streamer status period, s")
    p.add_argument("--commit-ms", type=float, default=10.0, help="streamer --commit-ms (default 10)")
    p.add_argument("--saturate", type=float, default=8.0, help="saturation test per consumer and round, s (0: skip)")
    p.add_argument("--rounds", type=int, default=3, help="saturation rounds (consumers interleaved)")
    p.add_argument("--client", choices=("auto", "ccxt"), default="auto",
                   help="sustained phase through our Binance client (auto) or through ccxt.pro (ccxt)")
    p.add_argument("--out", type=Path, default=None, help="figures JSON (default bench/results/streamer[_ccxt].json)")
    args = p.parse_args()
    args.out = args.out or ROOT / f"bench/results/streamer{'_ccxt' if args.client == 'ccxt' else ''}.json"
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        print(f"sustained: {args.symbols} symbols, {args.rate:,.0f} msg/s offered, {args.duration:.0f} s ...",
              flush=True)
        s = results["sustained"] = sustained(args, workdir)
        ok = lambda c: "OK " if c else "MISS"  # noqa: E731
        print(f"  ingest            {s['msgs_per_s']:>9,.0f} msg/s overall; per {args.status_every:g} s window: "
              f"min {s['window_msgs_per_s_min']:,.0f}, median {s['window_msgs_per_s_median']:,.0f}"
              f"   [{ok(s['window_msgs_per_s_min'] >= 5000)} target >= 5,000 sustained]")
        print(f"  message -> row    p50 {s['write_ms_p50']:.1f} ms, p99 {s['write_ms_p99']:.1f} ms, "
              f"max {s['write_ms_max']:.1f} ms   [{ok(s['write_ms_p99'] <= 50)} target p99 <= 50 ms]")
        print(f"  per {args.status_every:g} s window  p99 <= 50 ms in {s['windows'] - s['windows_over_50ms']} of "
              f"{s['windows']} windows; worst window p99 {max(s['window_write_ms_p99'], default=float('nan')):.0f} ms")
        print(f"  SQLite commit     p99 {s['commit_ms_p99']:.1f} ms, max {s['commit_ms_max']:.1f} ms (time inside "
              "one transaction)")
        print(f"  event E -> row    p50 {s['event_to_row_ms_p50']:.1f} ms, p99 {s['event_to_row_ms_p99']:.1f} ms "
              "(server + network + queue + commit)")
        print(f"  commits           {s['commits']:,} ({s['rows_committed'] / max(1, s['commits']):.0f} rows each)")
        print(f"  client RSS        {s['rss_mb_after_warmup']:.1f} MB after warm-up -> {s['rss_mb_end']:.1f} MB "
              f"(max {s['rss_mb_max']:.1f}); trend {s['rss_growth_mb_per_min']:+.2f} MB/min")
        print(f"  client CPU        {s['client_cpu_s']:.1f} s = {s['client_cpu_ms_per_1000_msgs']:.1f} ms per "
              "1,000 messages")
        print(f"  table             {s['closed_candles']:,} closed candles, {s['symbols_with_holes']} symbols "
              f"with a hole, {s['reconnects']} reconnects")
        print(f"  machine           load average {s['machine_load_average_before']:.1f} -> "
              f"{s['machine_load_average_after']:.1f} on {os.cpu_count()} CPUs; a 5 ms sleep overshoots by "
              f"p99 {s['machine_sleep_overshoot_ms_p99']:.1f} ms, max {s['machine_sleep_overshoot_ms_max']:.0f} ms")
        if args.saturate > 0:
            print(f"saturation: {args.rounds} rounds x {args.saturate:.0f} s per consumer, the server re-sending "
                  "pre-rendered events as fast as each consumer reads ...", flush=True)
            sat = results["saturation"] = saturation(args, workdir)
            base = sat.get("bare websockets")
            for name in ("bare websockets", "python-binance", "streamer"):
                v = sat.get(name)
                if v is not None:
                    ratio = f"  ({v / base:.2f}x bare websockets)" if base else ""
                    rounds = ", ".join(f"{x:,.0f}" for x in sat["rounds"][name])
                    print(f"  {name:<17} {v:>9,.0f} msg/s median{ratio}   rounds: {rounds}")
                else:
                    print(f"  {name:<17} failed: {sat['errors'].get(name)}")
            print("  (receive only for the baselines; the streamer also parses every event and commits to SQLite)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(f"figures written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
