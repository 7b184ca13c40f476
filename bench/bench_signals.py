"""Benchmark of rule evaluation on one year of 1h bars (8,760 rows), against a
hand-written numpy floor in the same run.

    .venv/bin/python bench/bench_signals.py            # ~20 s
    .venv/bin/python bench/bench_signals.py --repeat 500

Data: the deterministic simulated BTCUSDT market (S1/local/simulated.py) for 2023, S2's
indicators, a synthetic sentiment series joined as-of and a causal stand-in for
ml_proba, so every example rule file runs. Figures (median of ``--repeat`` calls):

- ``evaluate``: the pandas API (DataFrame in, DataFrame out) -- target well under 10 ms;
- ``arrays``: :func:`S4.evaluate.evaluate_arrays` on prepared arrays (S5's loop);
- ``trial``: ``rules.with_params(**drawn)`` + ``evaluate_arrays`` (one optimiser trial);
- ``floor``: the TA-only rules hand-coded in numpy (no parsing, no generality), and
  our ``arrays`` time as a multiple of it;
- 200 Optuna trials (random sampler) doing only the S4 part of an objective.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _median_ms(fn, repeat: int) -> float:
    fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def _floor_ta_only(a: dict, p: dict, cooldown: int):
    """rules_ta_only.yaml written by hand in numpy (same result, no generality)."""
    from S4.evaluate import position_kernel

    def sh(x, k):
        out = np.empty_like(x)
        out[:k] = np.nan
        out[k:] = x[:-k]
        return out

    c, rsi, sma, ema = a["close"], a["rsi14"], a["sma50"], a["ema21"]
    m, s, h = a["MACD_12_26_9"], a["MACDs_12_26_9"], a["MACDh_12_26_9"]
    r1 = sh(rsi, 1)
    e1 = (c > sma * p["trend_band"]) & (rsi > p["rsi_buy"]) & (r1 <= p["rsi_buy"])
    e2 = (m > s) & (sh(m, 1) <= sh(s, 1)) & (m < 0) & (c > ema)
    x1 = rsi > p["rsi_sell"]
    x2 = (c < ema) & (sh(c, 1) >= sh(ema, 1)) & (h < 0)
    x3 = (c < sh(c, p["momentum_bars"])) & (c < sma)
    return position_kernel(e1 | e2, x1 | x2 | x3, cooldown)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=200)
    ap.add_argument("--trials", type=int, default=200)
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))

    t0 = time.perf_counter()
    from S4.evaluate import evaluate, evaluate_arrays, prepare_arrays  # numba kernel (cached on disk)
    t_import = time.perf_counter() - t0

    from S1.offline import simulate_candles
    from S2.informative import add_informative
    from S2.ta import add_indicators
    from S4.rules import load_rules
    from S4.signals import join_sentiment
    from tests.S4.helpers import causal_proba, make_sentiment

    candles = simulate_candles("BTCUSDT", "1h", "2023-01-01", "2024-01-01")
    frame = join_sentiment(add_indicators(candles), make_sentiment(candles.index))
    frame = add_informative(frame, ["4h"])  # S4/rules_mtf.yaml reads close_4h, ema21_4h, rsi14_4h
    frame = frame.assign(ml_proba=causal_proba(frame["close"]))
    print(f"data: {len(frame):,} rows of 1h bars (simulated BTCUSDT 2023); import of S4.evaluate "
          f"{t_import * 1e3:.0f} ms")

    files = sorted((ROOT / "S4").glob("rules*.yaml"))
    first = load_rules(files[0])
    t0 = time.perf_counter()
    evaluate(frame, first)
    print(f"first evaluate() in this process (numba kernel load/compile): {(time.perf_counter() - t0) * 1e3:.0f} ms")
    print(f"{'rules file':24s} {'evaluate':>10s} {'arrays':>10s} {'trial':>10s}   (median ms per call)")
    rng = np.random.default_rng(0)
    for path in files:
        rules = load_rules(path)
        arrays = prepare_arrays(frame, rules)
        space = rules.param_space()

        def draw():
            return {k: (s["choices"][0] if "choices" in s else
                        (int(rng.integers(s["low"], s["high"] + 1)) if s["type"] == "int"
                         else float(rng.uniform(s["low"], s["high"])))) for k, s in space.items()}

        e = _median_ms(lambda: evaluate(frame, rules), args.repeat)
        a = _median_ms(lambda: evaluate_arrays(arrays, rules), args.repeat)
        t = _median_ms(lambda: evaluate_arrays(arrays, rules.with_params(**draw())), args.repeat)
        print(f"{path.name:24s} {e:10.2f} {a:10.2f} {t:10.2f}")

    ta_rules = load_rules(ROOT / "S4" / "rules_ta_only.yaml")
    arrays = prepare_arrays(frame, ta_rules)
    p = ta_rules.params
    ours = evaluate_arrays(arrays, ta_rules)
    floor_entry, floor_exit = _floor_ta_only(arrays, p, p["cooldown_bars"])
    assert np.array_equal(ours.entry, floor_entry) and np.array_equal(ours.exit, floor_exit)
    f = _median_ms(lambda: _floor_ta_only(arrays, p, p["cooldown_bars"]), args.repeat)
    a = _median_ms(lambda: evaluate_arrays(arrays, ta_rules), args.repeat)
    print(f"floor (rules_ta_only hand-coded in numpy): {f:.2f} ms; evaluate_arrays = {a / f:.2f}x the floor "
          "(identical signals)")

    try:
        import optuna
    except ImportError:  # pragma: no cover
        return 0
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    rules = load_rules(ROOT / "S4" / "rules.yaml")
    arrays = prepare_arrays(frame, rules)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0))

    def objective(trial):
        res = evaluate_arrays(arrays, rules.suggest(trial))
        return float(res.entry.sum())

    t0 = time.perf_counter()
    study.optimize(objective, n_trials=args.trials)
    dt = time.perf_counter() - t0
    print(f"{args.trials} Optuna trials (random sampler, S4 part only: suggest + evaluate) on rules.yaml: "
          f"{dt:.2f} s ({dt / args.trials * 1e3:.1f} ms per trial incl. Optuna's own overhead)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
