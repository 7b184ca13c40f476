"""Parameter grids in one vectorbt call: every combination is a column.

:func:`grid_signals` evaluates a rule file for each combination of param values
(S4's numpy evaluator, once per combination) and stacks the decisions into
``(n_bars, n_combinations)`` arrays; :func:`grid_backtest` runs them through
:func:`S5.engine.simulate` -- **one** ``Portfolio.from_signals`` call broadcasting
all columns -- and returns one row of metrics per combination.

Same execution model and metrics as a single backtest (a column of the grid equals
:func:`S5.engine.run_backtest` with those params: tested). Per-column hooks that
depend on each column's own path (Kelly sizing, the kill-switch) are not applied
in a grid; fixed sizes and per-bar stops are (``size``, ``sl_stop``, ``tp_stop``).

>>> from S1.offline import simulate_candles
>>> from S2.ta import add_indicators
>>> from S4.rules import parse_rules
>>> ta = add_indicators(simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-20"))
>>> rules = parse_rules("params: {lo: {value: 30, low: 20, high: 45}, hi: {value: 70, low: 55, high: 80}}\\n"
...                     "entry: {col: rsi14, op: crosses_above, param: lo}\\nexit: {col: rsi14, op: '>', param: hi}")
>>> table = grid_backtest(ta, rules, {"lo": [25, 30, 35], "hi": [60, 70]}, interval="1h")
>>> len(table), list(table.columns[:3])
(6, ['lo', 'hi', 'total_return'])
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from S1.errors import UserError
from S5.engine import Bars, Costs, simulate, simulation_metrics


def combinations(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of a ``{param: [values]}`` grid, in row-major order."""
    if not grid:
        raise UserError("the grid is empty", "give at least one param with a list of values")
    names = list(grid)
    values = [list(grid[k]) for k in names]
    for k, v in zip(names, values):
        if not v:
            raise UserError(f"grid param {k!r} has no values", "give a non-empty list")
    return [dict(zip(names, combo)) for combo in itertools.product(*values)]


def grid_signals(frame: pd.DataFrame, rules, combos: list[dict[str, Any]]) -> tuple[np.ndarray, np.ndarray]:
    """``(entries, exits)``: bool arrays of shape ``(n, len(combos))`` (S4 semantics)."""
    from S4.evaluate import evaluate_arrays, prepare_arrays

    arrays = prepare_arrays(frame, rules)
    n = len(frame)
    entries = np.zeros((n, len(combos)), dtype=bool)
    exits = np.zeros((n, len(combos)), dtype=bool)
    for j, params in enumerate(combos):
        sig = evaluate_arrays(arrays, rules.with_params(**params), n)
        entries[:, j] = sig.entry
        exits[:, j] = sig.exit
    return entries, exits


def grid_backtest(frame: pd.DataFrame, rules, grid: Mapping[str, Sequence[Any]] | list[dict[str, Any]], *,
                  interval: str, costs: Costs = Costs(), init_cash: float = 10_000.0, size=1.0, sl_stop=None,
                  tp_stop=None, signals: tuple[np.ndarray, np.ndarray] | None = None) -> pd.DataFrame:
    """One row per combination: its params, then every metric of :mod:`S5.metrics`."""
    combos = grid if isinstance(grid, list) else combinations(grid)
    entries, exits = signals if signals is not None else grid_signals(frame, rules, combos)
    bars = Bars.from_frame(frame, interval)
    sim = simulate(bars, entries, exits, costs=costs, init_cash=init_cash, size=size, sl_stop=sl_stop,
                   tp_stop=tp_stop, with_index=False)
    return metrics_table(sim, bars, combos)


def metrics_table(sim, bars: Bars, combos: list[dict[str, Any]]) -> pd.DataFrame:
    met = simulation_metrics(sim, bars)
    params = pd.DataFrame(combos)
    cols = {k: np.asarray(v) for k, v in met.items() if np.ndim(v) == 1 and len(v) == sim.n_cols}
    return pd.concat([params, pd.DataFrame(cols)], axis=1)


__all__ = ["combinations", "grid_backtest", "grid_signals", "metrics_table"]
