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


def reference_backtest(open_, close, entry, exit_, *, size, init_cash: float, slippage: float, maker: float,
                       taker: float, fee_model: str = "taker", lot: tuple | None = None, market_exits=None,
                       ) -> dict:
    """The execution model of S5.engine (no stops) as a plain loop, with the exchange rules:

    - a decision on bar i-1 fills at bar i's open: a buy at ``open x (1 + slippage)``
      when flat (an exit decided on the same bar wins), a sell of the whole position at
      ``open x (1 - slippage)``; an entry that would fill on the last bar is skipped, the
      position left is sold at the last close (minus slippage);
    - fees: ``taker`` every fill pays taker, ``maker`` every fill maker, ``mixed`` entries and
      signal exits maker, ``market_exits`` and the end-of-test close taker;
    - the entry quantity is ``size x cash / ((1 + fee) x fill)``; with ``lot = (step, min_qty,
      max_qty, min_notional)`` it is rounded down to the step (capped at max_qty) and the
      entry is skipped when below min_qty (or zero) or when ``qty x fill < min_notional``.
    """
    n = len(close)
    fracs = [float(size)] * n if np.ndim(size) == 0 else [float(v) for v in size]
    mexit = [False] * n if market_exits is None else [bool(v) for v in market_exits]
    entry_fee = taker if fee_model == "taker" else maker
    cash, pos = float(init_cash), 0.0
    equity, trades = [], []
    stats = {"entries_skipped_min_qty": 0, "entries_skipped_min_notional": 0, "entries_rounded": 0,
             "exits_below_min_notional": 0}
    cur = None

    def sell(i, px, fee):
        nonlocal cash, pos, cur
        value = pos * px
        f = value * fee
        cash += value - f
        if lot is not None and value < lot[3]:
            stats["exits_below_min_notional"] += 1
        pnl = pos * (px - cur["entry_price"]) - cur["entry_fee"] - f
        trades.append({**cur, "exit_bar": i, "exit_price": px, "exit_fee": f, "pnl": pnl,
                       "return": pnl / (pos * cur["entry_price"])})
        pos, cur = 0.0, None

    for i in range(n):
        if i >= 1:
            e, x = bool(entry[i - 1]), bool(exit_[i - 1])
            if pos > 0 and x:
                fee = taker if fee_model == "taker" or (fee_model == "mixed" and mexit[i - 1]) else maker
                sell(i, open_[i] * (1 - slippage), fee)
            elif pos == 0 and e and not x and i < n - 1 and fracs[i - 1] > 0:
                fill = open_[i] * (1 + slippage)
                q_raw = fracs[i - 1] * cash / ((1 + entry_fee) * fill)
                q = q_raw
                if lot is not None:
                    step, min_q, max_q, min_not = lot
                    q = min(math.floor(q_raw / step) * step, max_q)
                    if q <= 0 or q < min_q:
                        stats["entries_skipped_min_qty"] += 1
                        q = 0.0
                    elif q * fill < min_not:
                        stats["entries_skipped_min_notional"] += 1
                        q = 0.0
                    elif q < q_raw * (1 - 1e-9):
                        stats["entries_rounded"] += 1
                if q > 0:
                    f = q * fill * entry_fee
                    cash -= q * fill + f
                    pos = q
                    cur = {"entry_bar": i, "size": q, "entry_price": fill, "entry_fee": f}
        if i == n - 1 and pos > 0:
            sell(i, close[i] * (1 - slippage), maker if fee_model == "maker" else taker)
        equity.append(cash + pos * close[i])
    stats["entries_skipped"] = stats["entries_skipped_min_qty"] + stats["entries_skipped_min_notional"]
    return {"equity": np.array(equity), "trades": pd.DataFrame(trades), "stats": stats}
