"""Optuna trials per second with 1 and 2 workers, on SQLite and on a real PostgreSQL server.

    .venv/bin/python bench/bench_optimize_workers.py [--trials 200] [--days 365]

Each figure is one whole ``python S5/optimize.py ... --workers N`` command on a fresh study (process
start-up, data load and the final report included), on a simulated BTCUSDT 1h market with S2
indicators and ``S4/rules_ta_only.yaml``; the PostgreSQL server is Debian's, started in a temp dir
(skipped when absent). Ratios are against 1 worker on SQLite in the same run. On a 2-core machine
two workers can at best halve the search time; the trial lock and the storage round trips are
what keeps them from it.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--days", type=int, default=365)
    args = ap.parse_args()
    from S1.datasets import Dataset, dataset_path, write_parquet
    from S1.offline import simulate_candles
    from S2.ta import add_indicators
    from tests.real_servers import start_postgres

    tmp = Path(tempfile.mkdtemp(prefix="bench-opt-"))
    env = dict(os.environ, DATA_DIR=str(tmp / "data"), REPORTS_DIR=str(tmp / "reports"),
               TOOLKIT_ENV_FILE=str(tmp / "none.env"), PYTHONPATH=str(REPO))
    (tmp / "none.env").write_text("")
    os.environ.update({k: env[k] for k in ("DATA_DIR", "REPORTS_DIR", "TOOLKIT_ENV_FILE")})
    end = "2024-01-01"
    start = str((__import__("pandas").Timestamp(end) - __import__("pandas").Timedelta(days=args.days)).date())
    ta = add_indicators(simulate_candles("BTCUSDT", "1h", start, end))
    write_parquet(ta, dataset_path(Dataset("BTCUSDT", "1h", args.days), "ta"), metadata={"simulated": True})

    pg, why = start_postgres(tmp / "pg")
    storages = {"sqlite": f"sqlite:///{tmp / 'bench.db'}"}
    if pg is not None:
        storages["postgresql"] = pg.url
    else:
        print(f"PostgreSQL skipped: {why}")
    results = {}
    try:
        for backend, url in storages.items():
            for workers in (1, 2):
                cmd = [sys.executable, "-m", "S5.optimize", "--symbol", "BTCUSDT", "--interval", "1h", "--days",
                       str(args.days), "--rules", "S4/rules_ta_only.yaml", "--trials", str(args.trials),
                       "--min-trades", "5", "--storage", url, "--study", f"bench-{backend}-{workers}",
                       "--workers", str(workers), "--no-report"]
                t0 = time.perf_counter()
                r = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
                dt = time.perf_counter() - t0
                if r.returncode != 0:
                    print(r.stderr[-2000:])
                    return 1
                results[(backend, workers)] = dt
                print(f"{backend:10s} {workers} worker(s): {args.trials} trials in {dt:6.1f} s = "
                      f"{args.trials / dt:5.1f} trials/s", flush=True)
    finally:
        if pg is not None:
            pg.stop()
    base = results[("sqlite", 1)]
    print("\nratios (time vs 1 worker on SQLite; < 1 is faster):")
    for (backend, workers), dt in results.items():
        print(f"  {backend:10s} x{workers}: {dt / base:.2f}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
