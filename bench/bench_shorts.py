"""Benchmark shorts + funding + trailing stop, and ``--detail 1m``, on one year of 1h (warm).

    python bench/bench_shorts.py [--days 365] [--repeat 3] [--no-detail]

Setup (not timed): simulated BTCUSDT candles (S1.local.simulated) with S2 indicators, a made-up
8-hourly funding history, S6/risk.yaml without its kill-switch; one warm-up run of each path.

Measured in one run, printed with their ratios (issue 16):

- **baseline** -- the plain long-only backtest: :func:`S5.engine.run_decided` on spot with
  S4/rules_ta_only.yaml (S4.decide bar by bar, then vectorbt);
- **usdm** -- S4/rules_long_short.yaml (long + short, reversals, a 2 x ATR trailing stop) on
  ``market="usdm"``, leverage 3, with funding and liquidation: target <= 1.5x the baseline;
- **detail** -- the baseline risk with tight stop / take-profit levels, with and without a year of
  1m candles (:class:`S5.detail.Detail`) resolving bars that touch both: its cost is reported.

Figures go to stdout and ``bench/results/shorts.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def best(fn, repeat: int) -> float:
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return min(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-detail", action="store_true", help="skip the 1m part (simulating a year of 1m takes a while)")
    args = ap.parse_args()

    import numpy as np
    import pandas as pd

    from S1.local.simulated import simulate_candles
    from S2.ta import add_indicators
    from S4.rules import load_rules
    from S5.costs import Costs
    from S5.detail import Detail
    from S5.engine import run_decided
    from S5.futures import FuturesSpec
    from S6.config import RiskConfig

    start = pd.Timestamp("2023-01-01", tz="UTC")
    end = start + pd.Timedelta(days=args.days)
    frame = add_indicators(simulate_candles("BTCUSDT", "1h", start.strftime("%Y-%m-%d"), end.strftime("%Y-%m-%d")))
    ft = pd.date_range(start, end, freq="8h", tz="UTC", name="funding_time")
    rng = np.random.default_rng(1)
    funding = pd.DataFrame({"funding_rate": rng.normal(0.0001, 0.0003, len(ft)), "mark_price": np.nan}, index=ft)
    risk = RiskConfig.load(ROOT / "S6" / "risk.yaml").replace(
        kill_switch={"max_drawdown": None, "daily_loss_limit": None, "max_consecutive_losses": None})
    costs = Costs(fees=0.001, slippage=0.0005)
    long_only = load_rules(ROOT / "S4" / "rules_ta_only.yaml")
    long_short = load_rules(ROOT / "S4" / "rules_long_short.yaml")
    spec = FuturesSpec.for_symbol("BTCUSDT", leverage=3, funding=funding)

    base = lambda: run_decided(frame, rules=long_only, interval="1h", risk=risk, costs=costs)  # noqa: E731
    usdm = lambda: run_decided(frame, rules=long_short, interval="1h", risk=risk, costs=costs,  # noqa: E731
                               market="usdm", futures=spec)
    r_base, r_usdm = base(), usdm()          # warm-up (numba, vectorbt)
    t_base, t_usdm = best(base, args.repeat), best(usdm, args.repeat)
    out = {"bars": len(frame), "baseline_s": t_base, "usdm_s": t_usdm, "usdm_ratio": t_usdm / t_base,
           "baseline_trades": len(r_base.trades), "usdm_trades": len(r_usdm.trades),
           "usdm_shorts": r_usdm.metrics["short_trades"], "usdm_funding_paid": r_usdm.metrics["funding_paid"],
           "usdm_trailing_exits": int((r_usdm.trade_details["exit_reason"] == "trailing_stop").sum())}
    print(f"{len(frame):,} 1h bars; baseline (spot, long only, vectorbt): {t_base * 1000:.0f} ms, "
          f"{out['baseline_trades']} trades")
    print(f"usdm long+short+funding+trailing: {t_usdm * 1000:.0f} ms ({out['usdm_ratio']:.2f}x the baseline; target "
          f"<= 1.5x), {out['usdm_trades']} trades, {out['usdm_shorts']} short, {out['usdm_trailing_exits']} trailing "
          f"exits, funding paid {out['usdm_funding_paid']:.2f}")
    if not args.no_detail:
        t0 = time.perf_counter()
        minutes = simulate_candles("BTCUSDT", "1m", start.strftime("%Y-%m-%d"), end.strftime("%Y-%m-%d"))
        sim_s = time.perf_counter() - t0
        tight = risk.replace(stops={"stop_loss_pct": 0.004, "take_profit_pct": 0.004, "take_profit_rr": None})
        plain = lambda: run_decided(frame, rules=long_only, interval="1h", risk=tight, costs=costs)  # noqa: E731
        holder = {}

        def detailed():
            holder["d"] = Detail(minutes, "1h")
            return run_decided(frame, rules=long_only, interval="1h", risk=tight, costs=costs, detail=holder["d"])

        import tempfile

        from S1.datasets import read_parquet, write_parquet

        with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
            f1m = Path(tmp) / "btcusdt_1m.parquet"
            write_parquet(minutes, f1m, metadata={"kind": "bench"})
            t_read = best(lambda: read_parquet(f1m), args.repeat)      # what Detail.load adds: the 1m file
        plain(), detailed()
        t_plain, t_detail = best(plain, args.repeat), best(detailed, args.repeat)
        out["detail_read_1m_s"] = t_read
        out.update(detail_rows=len(minutes), detail_plain_s=t_plain, detail_s=t_detail,
                   detail_ratio=t_detail / t_plain, detail_resolved_bars=holder["d"].resolved,
                   detail_simulate_1m_s=sim_s)
        print(f"--detail 1m ({len(minutes):,} 1m candles; simulated in {sim_s:.1f} s, not timed): "
              f"{t_detail * 1000:.0f} ms vs {t_plain * 1000:.0f} ms without ({out['detail_ratio']:.2f}x), "
              f"{holder['d'].resolved} bars resolved on the 1m candles; reading the year of 1m candles: "
              f"{t_read * 1000:.0f} ms ({(t_detail + t_read) / t_plain:.2f}x with the read)")
    res = ROOT / "bench" / "results"
    res.mkdir(exist_ok=True)
    (res / "shorts.json").write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
