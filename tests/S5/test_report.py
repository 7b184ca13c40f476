"""The HTML report's pieces: monthly returns (recomputed by hand), tables, title."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from S5.engine import run_backtest
from S5.report import backtest_html, metrics_table_html, monthly_returns, monthly_table_html


def test_monthly_returns_by_hand():
    idx = pd.date_range("2023-12-30", "2024-03-02", freq="D", tz="UTC")
    eq = pd.Series(np.linspace(1000, 1300, len(idx)), index=idx)
    table = monthly_returns(eq, init_cash=900.0)
    last = lambda day: float(eq[eq.index <= pd.Timestamp(day, tz="UTC")].iloc[-1])
    ends = {(2023, 12): last("2023-12-31"), (2024, 1): last("2024-01-31"), (2024, 2): last("2024-02-29"),
            (2024, 3): float(eq.iloc[-1])}
    assert table.loc[2023, "Dec"] == pytest.approx(ends[(2023, 12)] / 900 - 1)
    assert table.loc[2024, "Jan"] == pytest.approx(ends[(2024, 1)] / ends[(2023, 12)] - 1)
    assert table.loc[2024, "Mar"] == pytest.approx(ends[(2024, 3)] / ends[(2024, 2)] - 1)
    assert np.isnan(table.loc[2024, "Apr"]) and np.isnan(table.loc[2023, "Jan"])
    assert table.loc[2024, "Year"] == pytest.approx(ends[(2024, 3)] / ends[(2023, 12)] - 1)
    html = monthly_table_html(table)
    assert html.count("<tr>") == 3 and "+" in html


def test_report_page(sim_signals):
    res = run_backtest(sim_signals, interval="1h", sl_stop=0.01)
    page = backtest_html(res, title="ETHUSDC 1h 90d backtest", simulated=True)
    assert "SIMULATED" in page and "Monthly returns" in page and "buy and hold" in page
    assert page.count("exit: ") >= 1  # trades on the price chart, by exit reason
    real = backtest_html(res, title="ETHUSDC 1h 90d backtest", simulated=False)
    assert "SIMULATED" not in real
    assert "max drawdown" in metrics_table_html(res.metrics)
