"""S5.metrics against hand-computed cases and against the independent reference."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from S5 import metrics as M

from .reference import reference_metrics


def test_periods_per_year_uses_365_days():
    assert M.periods_per_year("1h") == 8760.0
    assert M.periods_per_year("1D") == 365.0
    assert M.periods_per_year("15min") == 35040.0
    with pytest.raises(ValueError):
        M.periods_per_year(0)


def test_hand_computed_curve():
    # init 100 -> 110 -> 99 -> 99 -> 121: returns 0.1, -0.1, 0, 0.2222
    eq = np.array([110.0, 99.0, 99.0, 121.0])
    m = M.equity_metrics(eq, init_cash=100.0, periods_per_year=4)
    r = np.array([0.1, -0.1, 0.0, 121 / 99 - 1])
    assert m["total_return"] == pytest.approx(0.21)
    assert m["cagr"] == pytest.approx(0.21)  # exactly one year of 4 bars
    assert m["sharpe"] == pytest.approx(r.mean() / r.std(ddof=1) * 2)
    assert m["sortino"] == pytest.approx(r.mean() / math.sqrt(0.01 / 4) * 2)
    assert m["max_drawdown"] == pytest.approx(0.1)
    # peak 110 at bar 0 (row 1 of [100, 110, ...]) -> back above at bar 3 (row 4): 3 bars
    assert int(m["max_drawdown_duration_bars"]) == 3
    assert int(m["longest_drawdown_bars"]) == 3
    assert bool(m["max_drawdown_recovered"])
    assert m["calmar"] == pytest.approx(0.21 / 0.1)


def test_unrecovered_drawdown_runs_to_the_end():
    m = M.equity_metrics(np.array([120.0, 90.0, 100.0]), init_cash=100.0, periods_per_year=365)
    assert m["max_drawdown"] == pytest.approx(0.25)
    assert int(m["max_drawdown_duration_bars"]) == 2  # peak at bar 0, still under at bar 2
    assert not bool(m["max_drawdown_recovered"])
    assert m["max_drawdown_duration_days"] == pytest.approx(2.0)


def test_longest_drawdown_differs_from_the_deepest():
    # a long shallow dip (5 bars) then a short deep one (2 bars)
    eq = np.array([100, 99, 99, 99, 99, 101, 80, 102], dtype=float)
    m = M.equity_metrics(eq, init_cash=100.0, periods_per_year=8760)
    assert m["max_drawdown"] == pytest.approx(1 - 80 / 101)
    assert int(m["max_drawdown_duration_bars"]) == 2
    assert int(m["longest_drawdown_bars"]) == 5


def test_flat_curve_has_undefined_ratios():
    m = M.equity_metrics(np.full(10, 100.0), init_cash=100.0, periods_per_year=8760)
    assert m["total_return"] == 0 and m["max_drawdown"] == 0
    assert math.isnan(m["sharpe"]) and math.isnan(m["sortino"]) and math.isnan(m["calmar"])
    assert M.to_jsonable({"s": m["sharpe"]}) == {"s": None}


def test_trade_metrics_edge_cases():
    none = M.trade_metrics(np.array([]), np.array([]), np.array([]))
    assert none["n_trades"] == 0 and math.isnan(none["win_rate"]) and math.isnan(none["profit_factor"])
    only_wins = M.trade_metrics(np.array([1.0, 2.0]), np.array([0.01, 0.02]), np.array([0.1, 0.1]))
    assert only_wins["win_rate"] == 1 and math.isinf(only_wins["profit_factor"])
    assert only_wins["expectancy"] == pytest.approx(1.5) and only_wins["fees_paid"] == pytest.approx(0.2)


def test_many_columns_equal_one_at_a_time():
    rng = np.random.default_rng(3)
    eq = 1000 * np.cumprod(1 + rng.normal(0, 0.01, (500, 4)), axis=0)
    many = M.equity_metrics(eq, init_cash=1000.0, periods_per_year=8760)
    for j in range(4):
        one = M.equity_metrics(eq[:, j], init_cash=1000.0, periods_per_year=8760)
        for k, v in one.items():
            assert np.asarray(many[k])[j] == pytest.approx(v, nan_ok=True), k
    pnl = rng.normal(0, 10, 30)
    col = rng.integers(0, 4, 30)
    by_col = M.trade_metrics(pnl, pnl / 100, np.abs(pnl) / 50, col=col, n_cols=4)
    for j in range(4):
        one = M.trade_metrics(pnl[col == j], pnl[col == j] / 100, np.abs(pnl[col == j]) / 50)
        for k, v in one.items():
            assert by_col[k][j] == pytest.approx(v, nan_ok=True), k


def test_random_curves_against_the_reference():
    rng = np.random.default_rng(11)
    for trial in range(5):
        n = 300
        idx = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC")
        eq = pd.Series(5000 * np.cumprod(1 + rng.normal(0.0002, 0.01, n)), index=idx)
        k = 12
        entry = np.sort(rng.choice(n - 1, k, replace=False))
        exit_ = np.minimum(entry + rng.integers(1, 10, k), n - 1)
        pnl = rng.normal(0, 20, k)
        trades = pd.DataFrame({"entry_time": idx[entry], "exit_time": idx[exit_], "pnl": pnl,
                               "return": pnl / 1000, "fees": np.abs(rng.normal(1, 0.1, k))})
        held = np.zeros(n, dtype=bool)
        for a, b in zip(entry, exit_):
            held[a:b] = True
        got = M.compute_metrics(eq.to_numpy(), init_cash=5000.0, periods_per_year=8760,
                                trade_pnl=pnl, trade_return=pnl / 1000, trade_fees=trades["fees"].to_numpy(),
                                in_position=held, first_open=100.0, last_close=120.0)
        ref = reference_metrics(eq, trades, init_cash=5000.0, bar_hours=1, first_open=100.0, last_close=120.0)
        for key, value in ref.items():
            assert got[key] == pytest.approx(value, rel=1e-9, abs=1e-12, nan_ok=True), (trial, key)


def test_format_metric():
    assert M.format_metric("total_return", 0.1234) == "12.34%"
    assert M.format_metric("n_trades", 12) == "12"
    assert M.format_metric("profit_factor", float("inf")) == "inf"
    assert M.format_metric("sharpe", None) == "n/a"
