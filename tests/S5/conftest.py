"""S5 fixtures: a session warm-up of vectorbt (its import and the cached numba
kernels are paid once per session), small simulated frames with S2 indicators and
S4 signals, and a hand-built frame builder."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest


@pytest.fixture(scope="session", autouse=True)
def vbt_warm():
    """Import vectorbt and run one single-column and one multi-column simulation
    (with and without stops) so later tests measure logic, not compilation."""
    from S5.engine import Bars, simulate

    t = pd.date_range("2024-01-01", periods=8, freq="h", tz="UTC")
    p = np.linspace(100.0, 107.0, 8)
    frame = pd.DataFrame({"open": p, "high": p + 1, "low": p - 1, "close": p + 0.5}, index=t)
    bars = Bars.from_frame(frame, "1h")
    e = np.zeros(8, dtype=bool)
    e[1] = True
    x = np.zeros(8, dtype=bool)
    x[4] = True
    simulate(bars, e, x)
    simulate(bars, e, x, sl_stop=0.05, tp_stop=0.05)
    simulate(bars, np.column_stack([e, e]), np.column_stack([x, x]), with_index=False)
    simulate(bars, np.column_stack([e, e]), np.column_stack([x, x]), sl_stop=0.05, with_index=False)
    return True


def bars_frame(open_, high, low, close, *, entry=(), exit=(), start="2024-01-01", freq="h") -> pd.DataFrame:
    """A hand-built signals frame: prices plus entry/exit decided at the given bar numbers."""
    n = len(open_)
    t = pd.date_range(start, periods=n, freq=freq, tz="UTC", name="open_time")
    f = pd.DataFrame({"open": open_, "high": high, "low": low, "close": close}, index=t, dtype=np.float64)
    f["entry"] = np.isin(np.arange(n), list(entry))
    f["exit"] = np.isin(np.arange(n), list(exit))
    return f


@pytest.fixture(scope="session")
def sim_signals() -> pd.DataFrame:
    """90 days of simulated ETHUSDC 1h with S2 indicators and S4 rules_ta_only signals."""
    from S1.local.simulated import simulate_candles
    from S2.ta import add_indicators
    from S4.rules import load_rules
    from S4.signals import signals_frame

    candles = simulate_candles("ETHUSDC", "1h", "2023-01-01", "2023-04-01")
    return signals_frame(add_indicators(candles), load_rules("S4/rules_ta_only.yaml"))


@pytest.fixture(scope="session")
def sim_ta() -> pd.DataFrame:
    from S1.local.simulated import simulate_candles
    from S2.ta import add_indicators

    return add_indicators(simulate_candles("ETHUSDC", "1h", "2023-01-01", "2023-04-01"))
