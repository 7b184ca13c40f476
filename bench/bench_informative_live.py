"""Benchmark the live engine's decision per closed candle with informative columns (issue 16).

    python bench/bench_informative_live.py [--candles 300]

The same S7 engine (dry-run simulator, S2 indicators on its window, S4 rules, S6 sizing) fed one closed
1h candle at a time, with S4/rules_ta_only.yaml (base columns only, window 300) and with
S4/rules_mtf.yaml (rsi14_4h, ema21_4h, close_4h computed live by S7.feeds.InformativeFeed; default window
1,204 candles = 300 closed 4h candles). Prints ms per candle (median, p99) and the ratio, and writes
bench/results/informative_live.json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def run(rules_path: str, n: int) -> list[float]:
    from S1.offline import simulate_candles, simulated_symbol_info
    from S2.ta import IndicatorConfig
    from S4.rules import load_rules
    from S6.config import RiskConfig
    from S6.filters import SymbolFilters
    from S6.killswitch import KillSwitch
    from S7.engine import Engine, EngineConfig
    from S7.ledger import Ledger
    from S7.order_log import OrderLog
    from S7.session import _min_tradable, default_window
    from S7.simulator import SimulatedExchange
    from S7.store import ExecutorStore

    rules = load_rules(ROOT / rules_path)
    window = default_window(IndicatorConfig(), rules, "1h")
    candles = simulate_candles("BTCUSDT", "1h", "2023-01-01", "2023-04-15")
    assert len(candles) >= window + n, (len(candles), window, n)
    filters = SymbolFilters.from_symbol_info(simulated_symbol_info("BTCUSDT", float(candles["close"].iloc[-1])))
    risk = RiskConfig().replace(kill_switch={"max_drawdown": None, "daily_loss_limit": None,
                                             "max_consecutive_losses": None})
    times: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        venue = SimulatedExchange(filters)
        store = ExecutorStore(Path(tmp) / "s.db")
        ledger = Ledger(store, OrderLog(Path(tmp) / "o.jsonl", mode="bench"), symbol="BTCUSDT", interval="1h",
                        base_asset=filters.base_asset, quote_asset=filters.quote_asset,
                        min_tradable=_min_tradable(filters), clock_ms=lambda: venue.now_ms)
        eng = Engine(EngineConfig(symbol="BTCUSDT", interval="1h", mode="dry-run", strategy="bench", window=window,
                                  max_candle_age_s=0),
                     rules=rules, venue=venue, ledger=ledger, filters=filters,
                     kill_switch=KillSwitch(risk, path=Path(tmp) / "ks.json"), risk=risk, indicators=IndicatorConfig())

        async def go():
            await eng.start()
            start = len(candles) - n
            eng.seed(candles.iloc[start - window:start])
            for i in range(start, len(candles)):
                row = candles.iloc[i:i + 1]
                await eng.on_price(float(row["open"].iloc[0]), int(row.index[0].value // 1_000_000))
                t0 = time.perf_counter()
                await eng.on_candle(row, int(row["close_time"].iloc[0].value // 1_000_000) + 1)
                times.append((time.perf_counter() - t0) * 1000)

        try:
            asyncio.run(go())
        finally:
            store.close()
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--candles", type=int, default=300)
    args = ap.parse_args()
    import numpy as np

    out = {}
    for name, path in (("base", "S4/rules_ta_only.yaml"), ("informative", "S4/rules_mtf.yaml")):
        t = np.asarray(run(path, args.candles))
        out[name] = {"rules": path, "candles": len(t), "median_ms": float(np.median(t)),
                     "p99_ms": float(np.percentile(t, 99))}
        print(f"{name:12s} {path:24s} {len(t)} candles: median {out[name]['median_ms']:.2f} ms, "
              f"p99 {out[name]['p99_ms']:.2f} ms per closed candle")
    ratio = out["informative"]["median_ms"] / out["base"]["median_ms"]
    out["ratio_median"] = ratio
    print(f"informative / base (median): {ratio:.2f}x")
    res = ROOT / "bench" / "results"
    res.mkdir(parents=True, exist_ok=True)
    (res / "informative_live.json").write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
