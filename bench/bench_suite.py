"""How long the test suite takes: ``make test-fast`` (tests not marked slow) vs ``make test`` (all).

    .venv/bin/python bench/bench_suite.py [--workers auto] [--fast-only]

Runs the same pytest commands as the Makefile targets (``-n WORKERS --dist loadfile``, with and
without ``-m "not slow"``) one after the other in this checkout, and prints, for each, the number
of tests that passed / failed / were skipped, the wall time and the fast run's share of the full
run. Timings depend on the machine and its load (printed with them); a failing test is reported,
not hidden. Not part of ``make bench`` (it is the suite itself: about ten minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_suite(workers: str, marker: str | None) -> tuple[float, dict[str, int], int]:
    cmd = [sys.executable, "-m", "pytest", "-q", "-n", workers, "--dist", "loadfile", "-p", "no:cacheprovider"]
    if marker:
        cmd += ["-m", marker]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    tail = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|errors?|deselected)", tail)}
    return seconds, counts, r.returncode


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workers", default="auto", help="pytest-xdist workers, as make test WORKERS=… (default auto)")
    ap.add_argument("--fast-only", action="store_true", help="time make test-fast only")
    args = ap.parse_args()
    load = os.getloadavg()[0]
    print(f"{os.cpu_count()} cores, load {load:.1f} at start; pytest -n {args.workers} --dist loadfile")
    runs = [("make test-fast", "not slow")] + ([] if args.fast_only else [("make test", None)])
    results = {}
    for name, marker in runs:
        seconds, counts, rc = run_suite(args.workers, marker)
        results[name] = seconds
        shown = ", ".join(f"{n} {k}" for k, n in counts.items())
        print(f"{name:15s} {seconds:7.1f} s  ({shown}; exit {rc})", flush=True)
    if len(results) == 2:
        print(f"test-fast / test: {results['make test-fast'] / results['make test']:.2f}x")
    print(f"load {os.getloadavg()[0]:.1f} at end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
