"""Independent re-implementation of every backtest metric (plain Python loops and
pandas, no code shared with S5.metrics) used to check the library's numbers."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd


def reference_metrics(equity: pd.Series, trades: pd.DataFrame, *, init_cash: float, bar_hours: float,
                      first_open: float, last_close: float) -> dict[str, float]:
    values = [float(v) for v in equity.to_numpy()]
    n = len(values)
    per_year = 365 * 24 / bar_hours
    years = n / per_year
    rets = []
    prev = init_cash
    for v in values:
        rets.append(v / prev - 1)
        prev = v
    mean = sum(rets) / n
    var = sum((r - mean) ** 2 for r in rets) / (n - 1)
    std = math.sqrt(var)
    down = math.sqrt(sum(min(r, 0.0) ** 2 for r in rets) / n)
    out = {
        "total_return": values[-1] / init_cash - 1,
        "cagr": (values[-1] / init_cash) ** (1 / years) - 1,
        "sharpe": mean / std * math.sqrt(per_year) if std > 0 else float("nan"),
        "sortino": mean / down * math.sqrt(per_year) if down > 0 else float("nan"),
        "final_equity": values[-1],
    }
    # drawdowns: walk the curve with the initial cash as the first point
    series = [init_cash] + values
    peak, peak_i = series[0], 0
    worst, worst_peak_i, worst_trough_i = 0.0, 0, 0
    longest, cur_start = 0, None
    for i, v in enumerate(series):
        if v >= peak:
            if cur_start is not None:
                longest = max(longest, i - cur_start)
                cur_start = None
            peak, peak_i = v, i
        else:
            if cur_start is None:
                cur_start = peak_i
            dd = 1 - v / peak
            if dd > worst:
                worst, worst_peak_i, worst_trough_i = dd, peak_i, i
    if cur_start is not None:
        longest = max(longest, len(series) - 1 - cur_start)
    duration = 0
    if worst > 0:
        peak_value = series[worst_peak_i]
        rec = next((i for i in range(worst_trough_i + 1, len(series)) if series[i] >= peak_value), len(series) - 1)
        duration = rec - worst_peak_i
    out["max_drawdown"] = worst
    out["max_drawdown_duration_bars"] = duration
    out["longest_drawdown_bars"] = longest
    out["max_drawdown_duration_days"] = duration * bar_hours / 24
    out["longest_drawdown_days"] = longest * bar_hours / 24
    out["calmar"] = out["cagr"] / worst if worst > 0 else float("nan")
    pnl = [float(p) for p in trades["pnl"]]
    k = len(pnl)
    wins = [p for p in pnl if p > 0]
    losses = [p for p in pnl if p < 0]
    out["n_trades"] = k
    out["win_rate"] = len(wins) / k if k else float("nan")
    out["profit_factor"] = (sum(wins) / -sum(losses)) if losses else (float("inf") if wins else float("nan"))
    out["expectancy"] = sum(pnl) / k if k else float("nan")
    out["expectancy_return"] = float(trades["return"].mean()) if k else float("nan")
    out["fees_paid"] = float(trades["fees"].sum())
    # exposure: a bar counts when a trade is open at its close (entered at or before it, exits after it)
    held = np.zeros(n, dtype=bool)
    pos = {t: i for i, t in enumerate(equity.index)}
    for _, tr in trades.iterrows():
        a, b = pos[tr["entry_time"]], pos[tr["exit_time"]]
        for i in range(a, b):
            held[i] = True
    out["exposure"] = held.sum() / n
    bh = last_close / first_open
    out["buy_and_hold_return"] = bh - 1
    out["buy_and_hold_cagr"] = bh ** (1 / years) - 1
    return out
