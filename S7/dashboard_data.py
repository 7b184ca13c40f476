"""What the S7 dashboard shows, as plain functions (no Streamlit): the app, notebooks
and the tests call the same loaders. This module is the one import for all of them
(``from S7 import dashboard_data as D``); the code lives in focused modules:

- :mod:`S7.dashboard_files` -- what the data directory holds: :func:`coverage_table`
  (one row per dataset file, every Parquet dataset, the sentiment and news files,
  each market of the streamer's SQLite files: rows, first/last time, gaps, the
  ``simulated`` flag), :func:`sentiment_files`, :func:`has_any_data`,
  :func:`commands` (what creates a missing output), :func:`first_market`.
- :mod:`S7.dashboard_market` -- :func:`indicator_sources` / :func:`load_indicators`
  (S2), :func:`read_sentiment` / :func:`sentiment_summary` (S3).
- :mod:`S7.dashboard_backtest` -- :func:`backtest_runs` / :func:`load_backtest` /
  :func:`metric_rows` / :func:`drawdown` (S5's outputs).
- :mod:`S7.dashboard_paper` -- :func:`order_events` / :func:`orders_table`,
  :func:`executor_states` / :func:`positions_table`, :func:`kill_switch_states`.
- :mod:`S7.dashboard_figures` -- :func:`equity_figure`, :func:`sentiment_figure`.

and here :func:`overview`, the figures of the page's top row. Every path comes from
:mod:`S1.datasets`; nothing writes to the data directory (the kill-switch's lock file
excepted, which its reader takes).

>>> import tempfile
>>> empty = Path(tempfile.mkdtemp())
>>> coverage_table(data_dir=empty).empty, backtest_runs(data_dir=empty), kill_switch_states(data_dir=empty)
(True, [], [])
>>> commands("ethusdc", "4h", 90)["backtest"]
'python S5/backtest.py --symbol ETHUSDC --interval 4h --days 90'
>>> overview(data_dir=empty)["datasets"], overview(data_dir=empty)["tripped"]
(0, [])
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from S1.datasets import read_parquet
from S1.errors import UserError
from S7.dashboard_backtest import Backtest, BacktestRef, backtest_runs, drawdown, load_backtest, metric_rows
from S7.dashboard_figures import equity_figure, sentiment_figure
from S7.dashboard_files import (
    COVERAGE_COLUMNS,
    DEFAULT_MARKET,
    SIMULATED_LABEL,
    commands,
    coverage_table,
    first_market,
    has_any_data,
    read_columns,
    sentiment_files,
    simulated_text,
)
from S7.dashboard_market import (
    IndicatorSource,
    indicator_sources,
    load_indicators,
    read_sentiment,
    sentiment_summary,
)
from S7.dashboard_paper import (
    MODE_LABELS,
    ExecutorState,
    executor_states,
    fills_label,
    kill_switch_states,
    order_events,
    orders_table,
    positions_table,
)


def overview(*, data_dir: Path | None = None, coverage: pd.DataFrame | None = None) -> dict[str, Any]:
    """The figures of the dashboard's top row: datasets (and how many are simulated),
    the newest backtest's total return, the latest sentiment score (and which file and
    time it is), open positions, and which kill-switches are tripped."""
    cov = coverage_table(data_dir=data_dir) if coverage is None else coverage
    out: dict[str, Any] = {"datasets": len(cov), "simulated": int(cov["simulated"].eq(True).sum()) if len(cov) else 0,
                           "backtest": None, "total_return": None, "backtest_simulated": None, "sentiment": None,
                           "sentiment_at": None, "sentiment_file": None, "open_positions": 0, "kill_switches": 0,
                           "tripped": []}
    refs = backtest_runs(data_dir=data_dir)
    if refs:
        try:
            doc = json.loads(refs[0].json_path.read_text(encoding="utf-8"))
            out.update(backtest=f"{refs[0].symbol} {refs[0].interval} {refs[0].days}d",
                       total_return=(doc.get("metrics") or {}).get("total_return"),
                       backtest_simulated=refs[0].simulated)
        except (OSError, ValueError):
            pass
    files = sentiment_files(data_dir=data_dir)
    if files:
        path = files[0][1]
        try:
            frame = read_parquet(path, columns=["sentiment_score"])
            if len(frame):
                out.update(sentiment=float(frame["sentiment_score"].iloc[-1]), sentiment_file=path.name)
                out["sentiment_at"] = pd.Timestamp(read_columns(path, ["open_time"])["open_time"].iloc[-1])
        except (OSError, ValueError, KeyError, UserError):  # the coverage table shows the file as unreadable
            pass
    out["open_positions"] = int(sum(p.is_open for st in executor_states(data_dir=data_dir) for p in st.positions))
    switches = kill_switch_states(data_dir=data_dir)
    out["kill_switches"] = len(switches)
    out["tripped"] = [k["label"] for k in switches if not k["entries_allowed"]]
    return out


__all__ = ["COVERAGE_COLUMNS", "DEFAULT_MARKET", "MODE_LABELS", "SIMULATED_LABEL", "Backtest", "BacktestRef",
           "ExecutorState", "IndicatorSource", "backtest_runs", "commands", "coverage_table", "drawdown",
           "equity_figure", "executor_states", "fills_label", "first_market", "has_any_data", "indicator_sources",
           "kill_switch_states", "load_backtest", "load_indicators", "metric_rows", "order_events", "orders_table",
           "overview", "positions_table", "read_sentiment", "sentiment_figure", "sentiment_files",
           "sentiment_summary", "simulated_text"]
