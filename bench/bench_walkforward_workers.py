"""Walk-forward folds sequential vs spread over local processes (issue 20).

    .venv/bin/python bench/bench_walkforward_workers.py [--folds 4] [--trials 40] [--days 365] [--workers 2]

Each figure is one whole ``python S5/optimize.py ... --walk-forward N`` command (process start-up,
data load, the worker processes' own start-up and the files included) on a simulated BTCUSDT 1h
market with S2 indicators and ``S4/rules_ta_only.yaml``, fresh fold studies per run on SQLite
(one file: its writers take turns) and, when Debian's PostgreSQL is installed, on a PostgreSQL
server started in a temp dir (concurrent writers). The runs' ``_folds.parquet`` and
``_equity.parquet`` must be equal (checked); each ratio is against the sequential run on the same
storage in the same process. On a 2-core machine 2 workers can at best halve the time; each fresh
worker process also pays the numba compilation of the backtest kernels (a few seconds of CPU that
the sequential run pays once), and the parent still backtests every fold.
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
    ap.add_argument("--folds", type=int, default=4)
    ap.add_argument("--trials", type=int, default=40, help="trials per fold")
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args()
    import pandas as pd

    from S1.datasets import Dataset, dataset_path, write_parquet
    from S1.offline import simulate_candles
    from S2.ta import add_indicators

    tmp = Path(tempfile.mkdtemp(prefix="bench-wf-"))
    (tmp / "none.env").write_text("")
    env = dict(os.environ, DATA_DIR=str(tmp / "data"), TOOLKIT_ENV_FILE=str(tmp / "none.env"), PYTHONPATH=str(REPO))
    os.environ.update({k: env[k] for k in ("DATA_DIR", "TOOLKIT_ENV_FILE")})
    end = pd.Timestamp("2024-01-01")
    ta = add_indicators(simulate_candles("BTCUSDT", "1h", str((end - pd.Timedelta(days=args.days)).date()),
                                         str(end.date())))
    write_parquet(ta, dataset_path(Dataset("BTCUSDT", "1h", args.days), "ta"), metadata={"simulated": True})
    from tests.real_servers import start_postgres

    pg, why = start_postgres(tmp / "pg")
    storages = {"sqlite": lambda w: f"sqlite:///{tmp / f'wf-{w}.db'}"}
    if pg is not None:
        storages["postgresql"] = lambda w: pg.url
    else:
        print(f"PostgreSQL skipped: {why}")
    try:
        return _runs(args, tmp, env, storages)
    finally:
        if pg is not None:
            pg.stop()


def _runs(args, tmp: Path, env: dict, storages: dict) -> int:
    import pandas as pd

    from S1.datasets import read_parquet

    results, files = {}, {}
    for backend, url in storages.items():
        for workers in (1, args.workers):
            reports = tmp / f"reports-{backend}-{workers}"
            cmd = [sys.executable, "-m", "S5.optimize", "--symbol", "BTCUSDT", "--interval", "1h", "--days",
                   str(args.days), "--rules", "S4/rules_ta_only.yaml", "--walk-forward", str(args.folds),
                   "--trials", str(args.trials), "--min-trades", "5", "--no-html", "--storage", url(workers),
                   "--study", f"bench-{backend}-{workers}", "--workers", str(workers)]
            t0 = time.perf_counter()
            r = subprocess.run(cmd, cwd=REPO, env={**env, "REPORTS_DIR": str(reports)}, capture_output=True,
                               text=True, check=False)
            dt = time.perf_counter() - t0
            if r.returncode != 0:
                print(r.stderr[-2000:])
                return 1
            results[(backend, workers)] = dt
            files[(backend, workers)] = {p.name: read_parquet(p) for p in sorted(reports.glob("*.parquet"))}
            print(f"{backend:10s} {workers} worker(s): {args.folds} folds x {args.trials} trials in {dt:6.1f} s",
                  flush=True)
    first = files[next(iter(files))]
    assert len(first) == 2, first.keys()
    for key, got in files.items():      # every run: the same folds table and stitched equity
        assert got.keys() == first.keys(), (key, got.keys())
        for name, frame in first.items():
            pd.testing.assert_frame_equal(frame, got[name], check_exact=True)
    print(f"files equal across all runs: {', '.join(first)}")
    print("ratios (--workers N vs sequential on the same storage; < 1 is faster):")
    for backend in storages:
        print(f"  {backend:10s} x{args.workers}: {results[(backend, args.workers)] / results[(backend, 1)]:.2f}")
    if "postgresql" in storages:
        print(f"  postgresql x1 vs sqlite x1: {results[('postgresql', 1)] / results[('sqlite', 1)]:.2f}")
    print(f"load average at the end: {os.getloadavg()[0]:.1f} (2 cores)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
