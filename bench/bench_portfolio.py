"""Benchmark the portfolio backtest: N symbols x one year of 1h (default 20 x 8,760 bars), warm.

    python bench/bench_portfolio.py [--symbols 20] [--days 365] [--max-open 3] [--repeat 3]

Setup (not timed): simulated candles (S1.local.simulated) with S2 indicators per symbol,
S4/rules_ta_only.yaml, S6/risk.yaml without its kill-switch (so trading goes on all year). One warm-up run of each path first.

Targets of the issue, measured in one run and printed with their ratios:

- **portfolio** -- :func:`S5.portfolio_backtest.prepare_symbol` for every symbol (the rule
  masks, ATR and ranking score; what ``--scheduler`` / ``--workers`` fan out) plus
  :func:`S5.portfolio_backtest.run_portfolio` (the cash-coupled loop), <= 1 s;
- against **N separate single-symbol backtests** in the same process: S5's decided
  path (:func:`S5.hooks.decided_path`, the same ``S4.decide`` loop with its own cash) and
  S5's default backtest (:func:`S5.engine.run_decided`: that loop plus vectorbt), <= 3x.

Figures go to stdout and ``bench/results/portfolio.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def best(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times), statistics.median(times)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--symbols", type=int, default=20)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--max-open", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()

    import pandas as pd

    from S1.local.simulated import simulate_candles
    from S2.ta import add_indicators
    from S4.rules import load_rules
    from S5.costs import Costs
    from S5.engine import run_decided
    from S5.hooks import decided_path
    from S5.portfolio_backtest import prepare_symbol, run_portfolio
    from S6.config import RiskConfig

    rules = load_rules(ROOT / "S4/rules_ta_only.yaml")
    # S6/risk.yaml without its kill-switch: the default one stops the whole book after 5 losses in a
    # row (manual resume), which would leave the loop nothing to do for most of the year
    risk = RiskConfig.load(ROOT / "S6/risk.yaml").replace(kill_switch={
        "max_drawdown": None, "daily_loss_limit": None, "max_consecutive_losses": None})
    costs = Costs(fees=0.001, slippage=0.0005)
    end = pd.Timestamp("2024-01-01", tz="UTC")
    start = end - pd.Timedelta(days=args.days)
    names = [f"SYM{k:02d}USDT" for k in range(args.symbols)]
    t0 = time.perf_counter()
    frames = {s: add_indicators(simulate_candles(s, "1h", start, end)) for s in names}
    setup = time.perf_counter() - t0
    bars = sum(len(f) for f in frames.values())

    def portfolio():
        inputs = [prepare_symbol(f, rules, symbol=s, risk=risk) for s, f in frames.items()]
        return run_portfolio(inputs, risk=risk, interval="1h", max_open=args.max_open, costs=costs)

    inputs = [prepare_symbol(f, rules, symbol=s, risk=risk) for s, f in frames.items()]

    def loop_only():
        return run_portfolio(inputs, risk=risk, interval="1h", max_open=args.max_open, costs=costs)

    def separate_paths():
        return [decided_path(f, rules, risk=risk, interval="1h", costs=costs) for f in frames.values()]

    def separate_backtests():
        return [run_decided(f, rules=rules, interval="1h", risk=risk, costs=costs) for f in frames.values()]

    res = portfolio()                     # warm-up (imports, numba kernels of vectorbt)
    separate_backtests()
    p_best, p_med = best(portfolio, args.repeat)
    l_best, _ = best(loop_only, args.repeat)
    d_best, _ = best(separate_paths, args.repeat)
    b_best, _ = best(separate_backtests, args.repeat)
    out = {
        "symbols": args.symbols, "bars_total": bars, "max_open": args.max_open, "setup_s": round(setup, 2),
        "trades": len(res.trades), "portfolio_s": round(p_best, 4), "portfolio_median_s": round(p_med, 4),
        "portfolio_loop_only_s": round(l_best, 4), "separate_decided_paths_s": round(d_best, 4),
        "separate_run_decided_s": round(b_best, 4),
        "ratio_vs_decided_paths": round(p_best / d_best, 3), "ratio_vs_run_decided": round(p_best / b_best, 3),
        "target_portfolio_s": 1.0, "target_ratio": 3.0,
    }
    print(f"{args.symbols} symbols x {args.days} days of 1h ({bars:,} bars), max-open {args.max_open}, "
          f"{len(res.trades)} trades")
    print(f"portfolio (prepare + loop)         {p_best:8.3f} s   (target <= 1 s)   loop only {l_best:.3f} s")
    print(f"{args.symbols} x S5.hooks.decided_path        {d_best:8.3f} s   ratio {out['ratio_vs_decided_paths']:.2f}x "
          f"(target <= 3x)")
    print(f"{args.symbols} x S5.engine.run_decided        {b_best:8.3f} s   ratio {out['ratio_vs_run_decided']:.2f}x")
    path = ROOT / "bench/results/portfolio.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2))
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
