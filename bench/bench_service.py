"""Benchmark S8: the whole service, offline, N markets at one 1m candle per second.

    .venv/bin/python bench/bench_service.py                       # 20 markets, 60 s measured
    .venv/bin/python bench/bench_service.py --markets 20 --duration 300   # the issue's 5 minutes

``python S8/service.py --offline --offline-candle-seconds 1`` runs as a user starts it: one streamer
process for every market (one WebSocket connection), one executor process per market, the local market
and one local test exchange per market. Once every executor has sent its first heartbeat the window
starts; at its start and end the RSS and CPU time of the service and every worker are read from /proc.

Printed:

- **closed candle -> order sent**: from the commit of the closed candle into the streamer's SQLite
  (its ``updated_at``, wall clock) to the order's intent line in ``data/orders.jsonl`` (written just
  before the signed request goes out), for every order in the window -- p50 / p99 / max. Target p99 <= 100 ms.
- the executors' own share (candle seen -> order sent, from their status files), and the service's
  ``toolkit_decision_latency_seconds`` histogram count;
- RSS at start and end (total and per process kind), CPU per market (% of one core);
- the SIGTERM -> exit time and code.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "bench-token-" + "b" * 24
RULES = "entry: {col: rsi14, op: crosses_above, value: 50}\nexit: {col: rsi14, op: crosses_below, value: 50}\n"
TICK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_figures(pid: int) -> tuple[float, float] | None:
    """(RSS MB, CPU seconds) of a process, None when gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                   if line.startswith("VmRSS:"))
    except (OSError, StopIteration, IndexError):
        return None
    return rss / 1024.0, (int(stat[11]) + int(stat[12])) / TICK


def snapshot(service_pid: int, workers: list[dict]) -> dict:
    out = {"service": proc_figures(service_pid)}
    for w in workers:
        if w["pid"]:
            out[w["name"]] = proc_figures(w["pid"])
    return {k: v for k, v in out.items() if v is not None}


def pct(a, q):
    return float(np.percentile(a, q)) if len(a) else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--markets", type=int, default=20)
    ap.add_argument("--duration", type=float, default=60.0, help="measured seconds (default 60; the issue: 300)")
    ap.add_argument("--candle-seconds", type=float, default=1.0)
    ap.add_argument("--startup-timeout", type=float, default=600.0)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_s8_"))
    (tmp / "empty.env").write_text("")
    rules = tmp / "rules.yaml"
    rules.write_text(RULES)
    symbols = [f"S{i:03d}USDT" for i in range(1, args.markets + 1)]
    cfg = tmp / "service.yaml"
    cfg.write_text("markets:\n" + "".join(f"  - {{symbol: {s}, rules: {rules}}}\n" for s in symbols)
                   + "supervision: {startup_grace: 600, heartbeat_timeout: 60}\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "CONTROL_API", "ALERT_WEBHOOK"))}
    env.update(TOOLKIT_ENV_FILE=str(tmp / "empty.env"), DATA_DIR=str(tmp / "data"), CONTROL_API_TOKEN=TOKEN,
               CONTROL_API_PORT=str(port), LOG_LEVEL="WARNING")
    log = open(tmp / "service.log", "w")
    t_launch = time.monotonic()
    proc = subprocess.Popen([sys.executable, "S8/service.py", "--config", str(cfg), "--offline",
                             "--offline-candle-seconds", str(args.candle_seconds)], cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url, auth = f"http://127.0.0.1:{port}", {"Authorization": f"Bearer {TOKEN}"}

    def status():
        return httpx.get(url + "/status", headers=auth, timeout=30).json()

    try:
        deadline = time.monotonic() + args.startup_timeout
        while True:
            if proc.poll() is not None:
                raise SystemExit(f"the service exited ({proc.returncode}); see {tmp / 'service.log'}")
            try:
                st = status()
                if all(m["executor_heartbeat"] for m in st["markets"]):
                    break
            except (httpx.HTTPError, ValueError):
                pass
            if time.monotonic() > deadline:
                raise SystemExit("executors not all up in time")
            time.sleep(1)
        startup_s = time.monotonic() - t_launch
        print(f"{args.markets} markets up after {startup_s:.0f} s (all executors heartbeating); measuring "
              f"{args.duration:g} s", flush=True)
        time.sleep(5)  # let the executors' warm-up work settle before the window
        st = status()
        t0_wall, t0 = time.time(), time.monotonic()
        s0 = snapshot(proc.pid, st["workers"])
        time.sleep(args.duration)
        st1 = status()
        s1 = snapshot(proc.pid, st1["workers"])
        t1_wall, elapsed = time.time(), time.monotonic() - t0
        metrics = httpx.get(url + "/metrics", timeout=30).text
        restarts = sum(w["restarts"] for w in st1["workers"])
        # closed candle committed -> order intent
        db = tmp / "data" / f"{symbols[0].lower()}_1m_realtime.db"
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
        committed = {(s, t): u for s, t, u in con.execute(
            "SELECT symbol, open_time, updated_at FROM kline WHERE is_closed = 1 AND interval = '1m'")}
        con.close()
        e2e = []
        for line in (tmp / "data" / "orders.jsonl").read_text().splitlines():
            ev = json.loads(line)
            if ev.get("event") != "intent" or not ev.get("candle"):
                continue
            sent = datetime.fromisoformat(ev["time"]).timestamp()
            if not (t0_wall <= sent <= t1_wall):
                continue
            open_ms = int(datetime.fromisoformat(ev["candle"] + "+00:00").timestamp() * 1000)
            u = committed.get((ev["symbol"], open_ms))
            if u is not None:
                e2e.append(sent * 1000 - u)
        own = []
        for p in (tmp / "data" / "state" / "service").glob("*.status.json"):
            s = json.loads(p.read_text())
            own += [x * 1000 for t, x in s.get("decision_latency_s", [])]
        hist_count = next((float(x.split()[-1]) for x in metrics.splitlines()
                           if x.startswith("toolkit_decision_latency_seconds_count")), 0.0)
    finally:
        t_stop = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = "killed"
        stop_s = time.monotonic() - t_stop
        log.close()

    def total(snap, kind=None):
        return sum(v[0] for k, v in snap.items() if kind is None or k.startswith(kind))
    common = set(s0) & set(s1)
    cpu = sum(s1[k][1] - s0[k][1] for k in common)
    e2e, own = np.array(e2e), np.array(own)
    res = {
        "markets": args.markets, "duration_s": round(elapsed, 1), "candle_seconds": args.candle_seconds,
        "startup_s": round(startup_s, 1), "orders": int(len(e2e)),
        "candle_to_order_ms": {"p50": round(pct(e2e, 50), 1), "p99": round(pct(e2e, 99), 1),
                               "max": round(float(e2e.max()) if len(e2e) else float("nan"), 1)},
        "executor_own_ms": {"p50": round(pct(own, 50), 1), "p99": round(pct(own, 99), 1), "n": int(len(own))},
        "histogram_count": hist_count,
        "rss_mb": {"start": round(total(s0)), "end": round(total(s1)),
                   "executors_start": round(total(s0, "executor")), "executors_end": round(total(s1, "executor")),
                   "streamer_start": round(total(s0, "streamer")), "streamer_end": round(total(s1, "streamer")),
                   "service_start": round(s0["service"][0]), "service_end": round(s1["service"][0])},
        "cpu_per_market_pct": round(100 * cpu / elapsed / args.markets, 2),
        "cpu_total_cores": round(cpu / elapsed, 2),
        "restarts": restarts, "sigterm_exit_code": code, "sigterm_exit_s": round(stop_s, 1),
        "load_avg_1m": os.getloadavg()[0],
    }
    print(json.dumps(res, indent=2))
    print(f"closed candle -> order sent: p50 {res['candle_to_order_ms']['p50']} ms, p99 "
          f"{res['candle_to_order_ms']['p99']} ms over {res['orders']} orders (target p99 <= 100 ms); "
          f"RSS {res['rss_mb']['start']} -> {res['rss_mb']['end']} MB; CPU {res['cpu_per_market_pct']} % of a core "
          f"per market; SIGTERM -> exit {code} in {stop_s:.1f} s")
    outdir = ROOT / "bench" / "results"
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "service.json").write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
