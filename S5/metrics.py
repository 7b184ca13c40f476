"""Performance metrics of a backtest, pure numpy, from an equity curve and its trades.

Every function works on one equity curve (shape ``(n,)``) or on many at once
(shape ``(n, m)``: one column per parameter combination), so a single backtest
and a 1,000-column grid share one implementation.

Conventions (the tests recompute each one independently):

- ``equity[i]`` is the account value at the **close** of bar i; ``init_cash`` is
  the value before bar 0. Bar returns: ``r[0] = equity[0] / init_cash - 1``,
  ``r[i] = equity[i] / equity[i-1] - 1``.
- Annualisation: crypto trades every day, so a year is **365 days**;
  ``periods_per_year = 365 days / bar length`` (8,760 for 1h) and the span is
  ``years = n / periods_per_year`` (bars x interval, as vectorbt counts it).
- ``total_return = equity[-1] / init_cash - 1``;
  ``cagr = (equity[-1] / init_cash) ** (1 / years) - 1``.
- ``sharpe = mean(r) / std(r, ddof=1) * sqrt(periods_per_year)`` (risk-free 0);
  ``sortino = mean(r) / sqrt(mean(min(r, 0)^2)) * sqrt(periods_per_year)``
  (downside deviation over every bar, target 0 -- vectorbt's definition).
- Drawdown on ``[init_cash, equity...]``: ``dd = value / running peak - 1``;
  ``max_drawdown = -min(dd)`` (a positive fraction, 0.25 = 25 %).
  ``max_drawdown_duration_bars``: from the peak before the deepest trough to the
  first bar back at that peak (or to the last bar when never recovered);
  ``longest_drawdown_bars``: the longest stretch spent below a previous peak.
- ``calmar = cagr / max_drawdown``.
- Trades (closed, after fees): ``win_rate`` = share with pnl > 0;
  ``profit_factor`` = gross profit / gross loss; ``expectancy`` = mean pnl per trade
  (quote currency); ``expectancy_return`` = mean trade return.
- ``exposure``: share of bars with a position open at the bar's close.
- ``buy_and_hold``: buy at the first bar's open, sell at the last bar's close, no fees.

Undefined values (no trades, no losses, a flat curve) are NaN or inf here and
``null`` in the JSON file (:func:`to_jsonable`).

>>> import numpy as np
>>> m = equity_metrics(np.array([101.0, 99.0, 110.0]), init_cash=100.0, periods_per_year=3)
>>> round(float(m["total_return"]), 4), round(float(m["max_drawdown"]), 6), int(m["max_drawdown_duration_bars"])
(0.1, 0.019802, 2)
>>> t = trade_metrics(np.array([10.0, -5.0, 2.5]), np.array([0.1, -0.05, 0.025]), np.array([1.0, 1.0, 0.5]))
>>> float(t["win_rate"]), float(t["profit_factor"]), float(t["expectancy"]), float(t["fees_paid"])
(0.6666666666666666, 2.5, 2.5, 2.5)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

YEAR_DAYS = 365
_YEAR_SECONDS = YEAR_DAYS * 86_400

#: Metrics written to the backtest JSON, in display order, with their format.
METRIC_FORMATS: dict[str, str] = {
    "total_return": "pct", "cagr": "pct", "sharpe": "num", "sortino": "num", "calmar": "num",
    "max_drawdown": "pct", "max_drawdown_duration_days": "days", "longest_drawdown_days": "days",
    "win_rate": "pct", "profit_factor": "num", "expectancy": "money", "expectancy_return": "pct",
    "n_trades": "int", "exposure": "pct", "fees_paid": "money", "final_equity": "money",
    "buy_and_hold_return": "pct", "buy_and_hold_cagr": "pct",
    # with exchange filters (S5.exchange): entries refused by LOT_SIZE minQty / MIN_NOTIONAL, rounded down to the
    # step, and exits the backtest sold below the minimum notional (S7 would have held the position)
    "entries_skipped": "int", "entries_skipped_min_qty": "int", "entries_skipped_min_notional": "int",
    "entries_rounded": "int", "exits_below_min_notional": "int",
}


def periods_per_year(bar: str | pd.Timedelta | float) -> float:
    """Bars in a 365-day year: ``'1h'`` -> 8760.0, ``'1d'`` -> 365.0 (accepts a pandas
    frequency string, a Timedelta, or a bar length in seconds).

    >>> periods_per_year("1h"), periods_per_year("15min"), periods_per_year(86_400)
    (8760.0, 35040.0, 365.0)
    """
    if isinstance(bar, (int, float)) and not isinstance(bar, bool):
        seconds = float(bar)
    else:
        seconds = pd.Timedelta(pd.tseries.frequencies.to_offset(bar) if isinstance(bar, str) else bar
                               ).total_seconds()
    if not seconds > 0:
        raise ValueError(f"bar length must be positive, got {bar!r}")
    return _YEAR_SECONDS / seconds


def _as_2d(a: np.ndarray) -> tuple[np.ndarray, bool]:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        return a[:, None], True
    if a.ndim != 2:
        raise ValueError("equity must be 1-d (one curve) or 2-d (bars x curves)")
    return a, False


def _out(x: np.ndarray, squeeze: bool):
    return x[0] if squeeze else x


def bar_returns(equity: np.ndarray, init_cash: float | np.ndarray) -> np.ndarray:
    """Simple returns per bar, the first one against ``init_cash``."""
    eq, squeeze = _as_2d(equity)
    prev = np.empty_like(eq)
    prev[0] = init_cash
    prev[1:] = eq[:-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        r = eq / prev - 1.0
    return r[:, 0] if squeeze else r


def drawdown_stats(equity: np.ndarray, init_cash: float | np.ndarray) -> dict[str, np.ndarray]:
    """``max_drawdown`` (positive fraction), ``max_drawdown_duration_bars``,
    ``max_drawdown_recovered`` and ``longest_drawdown_bars`` per curve (one pass per
    column in a numba kernel: a 1,000-column grid in milliseconds, no n x m temporaries)."""
    from S5.kernels import drawdown_nb

    eq, squeeze = _as_2d(equity)
    init = np.ascontiguousarray(np.broadcast_to(np.asarray(init_cash, dtype=np.float64), (eq.shape[1],)))
    max_dd, duration, recovered, longest = drawdown_nb(eq, init)
    out = {"max_drawdown": max_dd, "max_drawdown_duration_bars": duration,
           "max_drawdown_recovered": recovered, "longest_drawdown_bars": longest}
    return {k: _out(val, squeeze) for k, val in out.items()}


def equity_metrics(equity: np.ndarray, *, init_cash: float | np.ndarray,
                   periods_per_year: float) -> dict[str, np.ndarray]:
    """Return, CAGR, Sharpe, Sortino, drawdowns and Calmar of one or many curves."""
    eq, squeeze = _as_2d(equity)
    n = eq.shape[0]
    if n == 0:
        raise ValueError("the equity curve is empty")
    init = np.broadcast_to(np.asarray(init_cash, dtype=np.float64), (eq.shape[1],))
    r = bar_returns(eq, init)
    years = n / periods_per_year
    growth = eq[-1] / init
    total_return = growth - 1.0
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        cagr = np.where(growth > 0, np.power(np.maximum(growth, 0), 1.0 / years) - 1.0, -1.0)
        mean = r.mean(axis=0)
        std = r.std(axis=0, ddof=1) if n > 1 else np.full(eq.shape[1], np.nan)
        sharpe = np.where(std > 0, mean / std * math.sqrt(periods_per_year), np.nan)
        downside = np.sqrt(np.mean(np.minimum(r, 0.0) ** 2, axis=0))
        sortino = np.where(downside > 0, mean / downside * math.sqrt(periods_per_year),
                           np.where(mean > 0, np.inf, np.nan))
    dd = drawdown_stats(eq, init)
    dd = {k: np.atleast_1d(v) for k, v in dd.items()}
    with np.errstate(divide="ignore", invalid="ignore"):
        calmar = np.where(dd["max_drawdown"] > 0, cagr / dd["max_drawdown"], np.nan)
    bar_days = YEAR_DAYS / periods_per_year
    out = {"total_return": total_return, "cagr": cagr, "sharpe": sharpe, "sortino": sortino,
           "calmar": calmar, "final_equity": eq[-1].copy(), "years": np.full(eq.shape[1], years),
           **dd,
           "max_drawdown_duration_days": dd["max_drawdown_duration_bars"] * bar_days,
           "longest_drawdown_days": dd["longest_drawdown_bars"] * bar_days}
    return {k: _out(np.asarray(v), squeeze) for k, v in out.items()}


def trade_metrics(pnl: np.ndarray, returns: np.ndarray, fees: np.ndarray, *, col: np.ndarray | None = None,
                  n_cols: int | None = None) -> dict[str, np.ndarray]:
    """Win rate, profit factor, expectancy, trade count and fees of closed trades.

    With ``col`` (the column of each trade) and ``n_cols``, one value per column."""
    pnl = np.asarray(pnl, dtype=np.float64)
    ret = np.asarray(returns, dtype=np.float64)
    fee = np.asarray(fees, dtype=np.float64)
    squeeze = col is None
    if squeeze:
        col = np.zeros(len(pnl), dtype=np.int64)
        n_cols = 1
    col = np.asarray(col, dtype=np.int64)
    if n_cols is None:
        n_cols = int(col.max()) + 1 if len(col) else 0

    def total(w):
        return np.bincount(col, weights=w, minlength=n_cols)[:n_cols]

    n = np.bincount(col, minlength=n_cols)[:n_cols].astype(np.int64)
    wins = total((pnl > 0).astype(np.float64))
    gross_profit = total(np.where(pnl > 0, pnl, 0.0))
    gross_loss = -total(np.where(pnl < 0, pnl, 0.0))
    with np.errstate(divide="ignore", invalid="ignore"):
        win_rate = np.where(n > 0, wins / n, np.nan)
        profit_factor = np.where(gross_loss > 0, gross_profit / gross_loss,
                                 np.where(gross_profit > 0, np.inf, np.nan))
        expectancy = np.where(n > 0, total(pnl) / n, np.nan)
        expectancy_return = np.where(n > 0, total(ret) / n, np.nan)
    out = {"n_trades": n, "win_rate": win_rate, "profit_factor": profit_factor, "expectancy": expectancy,
           "expectancy_return": expectancy_return, "fees_paid": total(fee), "gross_profit": gross_profit,
           "gross_loss": gross_loss}
    return {k: _out(v, squeeze) for k, v in out.items()}


def buy_and_hold(first_open: float, last_close: float, *, n_bars: int, periods_per_year: float
                 ) -> dict[str, float]:
    """Buy at the first bar's open, sell at the last bar's close, no fees."""
    growth = last_close / first_open
    years = n_bars / periods_per_year
    return {"buy_and_hold_return": growth - 1.0, "buy_and_hold_cagr": growth ** (1.0 / years) - 1.0}


def compute_metrics(equity: np.ndarray, *, init_cash: float | np.ndarray, periods_per_year: float,
                    trade_pnl: np.ndarray, trade_return: np.ndarray, trade_fees: np.ndarray,
                    in_position: np.ndarray, first_open: float, last_close: float,
                    trade_col: np.ndarray | None = None) -> dict[str, Any]:
    """Every metric of the backtest JSON for one curve (1-d input) or many (2-d)."""
    eq = np.asarray(equity, dtype=np.float64)
    squeeze = eq.ndim == 1
    n_cols = 1 if squeeze else eq.shape[1]
    out: dict[str, Any] = dict(equity_metrics(eq, init_cash=init_cash, periods_per_year=periods_per_year))
    out.update(trade_metrics(trade_pnl, trade_return, trade_fees, col=None if squeeze else trade_col,
                             n_cols=None if squeeze else n_cols))
    pos = np.asarray(in_position, dtype=bool)
    out["exposure"] = pos.mean(axis=0)
    bh = buy_and_hold(first_open, last_close, n_bars=eq.shape[0], periods_per_year=periods_per_year)
    for k, v in bh.items():
        out[k] = v if squeeze else np.full(n_cols, v)
    return out


def to_jsonable(value: Any) -> Any:
    """Strict-JSON form: numpy scalars to Python, NaN/inf to None (recursively)."""
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    if isinstance(value, pd.Timestamp):
        return value.isoformat()
    return value


def format_metric(name: str, value: Any) -> str:
    """Human form of one metric for the terminal table and the HTML report."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    kind = METRIC_FORMATS.get(name, "num")
    v = float(value)
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    if kind == "pct":
        return f"{v:.2%}"
    if kind == "int":
        return f"{int(v):,}"
    if kind == "money":
        return f"{v:,.2f}"
    if kind == "days":
        return f"{v:,.1f} d"
    return f"{v:.3f}"


__all__ = [
    "METRIC_FORMATS",
    "YEAR_DAYS",
    "bar_returns",
    "buy_and_hold",
    "compute_metrics",
    "drawdown_stats",
    "equity_metrics",
    "format_metric",
    "periods_per_year",
    "to_jsonable",
    "trade_metrics",
]
