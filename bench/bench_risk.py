"""Benchmark S6: the kill-switch mask, the stress resampler and the persisted kill-switch.

    .venv/bin/python bench/bench_risk.py            # ~10 s
    .venv/bin/python bench/bench_risk.py --repeat 7

Figures (median of ``--repeat`` runs, each printed with what it is compared with in the same run):

- ``kill_switch_mask`` on a year of 1m bars (525,600) with 2,000 trades: the vectorised path taken with
  latched protections (the default config) against the state-machine loop that timed resumes need
  (``daily_loss_resume: next_day``, ``loss_streak_pause_hours: 6``);
- ``simulate_paths``: 5,000 paths x 500 trades, bootstrap and shuffle;
- ``KillSwitch.update_equity`` (file lock + read + atomic fsync'd write) per call, on a temp dir.

Data: a seeded random walk (small drift so the default 20 % drawdown trips late) and seeded trade pnls.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _median_s(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--calls", type=int, default=200, help="KillSwitch.update_equity calls timed")
    args = p.parse_args(argv)

    from S6.config import KillSwitchConfig
    from S6.killswitch import KillSwitch, kill_switch_mask
    from S6.stress_analysis import simulate_paths

    rng = np.random.default_rng(7)
    n = 525_600
    times = pd.date_range("2024-01-01", periods=n, freq="1min", tz="UTC")
    equity = 10_000 * np.exp(np.cumsum(rng.normal(2e-6, 3e-4, n)))
    exits = pd.DatetimeIndex(np.sort(rng.choice(times.asi8, 2_000, replace=False))).tz_localize("UTC")
    pnl = rng.normal(1.0, 30.0, 2_000)
    latched, timed = KillSwitchConfig(), KillSwitchConfig(daily_loss_resume="next_day", loss_streak_pause_hours=6)
    assert latched.latched and not timed.latched

    def mask(cfg):
        return lambda: kill_switch_mask(equity, times, config=cfg, trade_exit_times=exits, trade_pnl=pnl)

    kill_switch_mask(equity, times, config=latched, trade_exit_times=exits, trade_pnl=pnl)  # warm-up
    t_vec = _median_s(mask(latched), args.repeat)
    t_loop = _median_s(mask(timed), max(1, args.repeat // 2))
    print(f"kill_switch_mask, {n:,} 1m bars, 2,000 trades: vectorised (latched) {t_vec * 1e3:.1f} ms; "
          f"state-machine loop (timed resumes) {t_loop * 1e3:.0f} ms ({t_loop / t_vec:.0f}x)")

    r = rng.normal(0.002, 0.02, 500)
    for method in ("bootstrap", "shuffle"):
        t = _median_s(lambda m=method: simulate_paths(r, n_paths=5_000, method=m, seed=1), args.repeat)
        print(f"simulate_paths {method}: 5,000 paths x 500 trades {t:.3f} s")

    with tempfile.TemporaryDirectory() as tmp:
        ks = KillSwitch(KillSwitchConfig(max_drawdown=0.5), path=Path(tmp) / "ks.json")
        ks.update_equity(10_000.0)
        values = 10_000.0 + rng.normal(0, 10, args.calls)
        t0 = time.perf_counter()
        for v in values:
            ks.update_equity(float(v))
        per_call = (time.perf_counter() - t0) / args.calls
    print(f"KillSwitch.update_equity (lock + read + atomic fsync'd write): {per_call * 1e3:.2f} ms per call "
          f"({args.calls} calls)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
