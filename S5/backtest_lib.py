"""The file job behind ``python S5/backtest.py``: read the S4 signals file, run the
engine, write the equity, trades, JSON and HTML outputs (each atomically, only after
everything was computed -- a failed run leaves the previous files intact).

Outputs for ``--symbol ETHUSDC --interval 1h --days 365`` (names from S1.datasets):

- ``data/ethusdc_1h_365d_equity.parquet``: UTC ``open_time`` index, column ``equity``
  (the account value at each bar's close);
- ``data/ethusdc_1h_365d_trades.parquet``: exactly ``entry_time, exit_time, side,
  size, entry_price, exit_price, fees, pnl, return`` (closed trades, after fees;
  times are the open time of the bar whose open -- or, for stops, whose range --
  filled the order; ``return = pnl / (size x entry_price)``);
- ``data/ethusdc_1h_365d_backtest.json``: ``metrics``, ``params``, ``simulated``,
  ``kill_switch`` trips, file names (strict JSON: undefined values are ``null``);
- ``reports/ethusdc_1h_365d_backtest.html``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from S1.datasets import (
    atomic_write_text,
    dataset_path,
    normalize_symbol,
    read_metadata,
    read_parquet,
    report_path,
    write_parquet,
)
from S1.errors import UserError
from S5.engine import TRADE_COLUMNS, BacktestResult, Costs, run_backtest
from S5.metrics import METRIC_FORMATS, format_metric, to_jsonable

DEFAULT_RULES = "S4/rules.yaml"


def signals_command(symbol: str, interval: str, days: int, rules: str = DEFAULT_RULES) -> str:
    """The exact S4 command that writes the ``_signals`` file."""
    return (f"python S4/decision.py --symbol {normalize_symbol(symbol)} --interval {interval} "
            f"--days {int(days)} --rules {rules}")


def backtest_command(symbol: str, interval: str, days: int) -> str:
    return f"python S5/backtest.py --symbol {normalize_symbol(symbol)} --interval {interval} --days {int(days)}"


def load_signals(symbol: str, interval: str, days: int) -> tuple[pd.DataFrame, Path, dict[str, Any]]:
    """The ``_signals`` frame, its path and metadata; a missing file names the S4 command."""
    path = dataset_path(symbol, interval, days, "signals")
    if not path.exists():
        raise UserError(f"{path} does not exist", f"create it first with: {signals_command(symbol, interval, days)}")
    frame = read_parquet(path)
    missing = [c for c in ("open", "high", "low", "close", "entry", "exit") if c not in frame.columns]
    if missing or not isinstance(frame.index, pd.DatetimeIndex):
        raise UserError(f"{path} is not a signals file (missing {missing or 'the open_time index'})",
                        f"re-create it with: {signals_command(symbol, interval, days)}")
    return frame, path, read_metadata(path)


@dataclass
class BacktestRun:
    """What :func:`backtest_files` computed and wrote."""

    result: BacktestResult
    simulated: bool
    summary: dict[str, Any]
    paths: dict[str, Path] = field(default_factory=dict)


def summary_dict(result: BacktestResult, *, symbol: str, interval: str, days: int, simulated: bool,
                 sources: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document (strict JSON once passed through :func:`to_jsonable`)."""
    return to_jsonable({
        "symbol": normalize_symbol(symbol), "interval": interval, "days": int(days), "simulated": bool(simulated),
        "metrics": result.metrics, "params": result.params, "kill_switch": result.kill_switch,
        "sources": sources or {}, "created_at": pd.Timestamp.now(tz="UTC").isoformat(),
        "definitions": "see S5/metrics.py: returns per bar vs the previous close, 365-day years, max_drawdown "
                       "positive, trade return = pnl / (size x entry_price), exposure = share of bars holding "
                       "a position at the close",
    })


def equity_frame(result: BacktestResult) -> pd.DataFrame:
    return pd.DataFrame({"equity": result.equity.to_numpy(np.float64)}, index=result.equity.index.rename("open_time"))


def backtest_files(symbol: str, interval: str, days: int, *, costs: Costs = Costs(), init_cash: float = 10_000.0,
                   risk=None, report: bool = True, write: bool = True, exchange_filters: str = "off",
                   exchange_info=None) -> BacktestRun:
    """Read ``_signals``, backtest, and write equity / trades / JSON / HTML.

    ``exchange_filters`` (``auto``/``on``/``off``, see :func:`S5.exchange.resolve_lot_rules`)
    adds the symbol's LOT_SIZE / MIN_NOTIONAL rules to ``costs`` (``exchange_info``: a
    saved exchangeInfo file)."""
    from S5.exchange import with_filters
    from S5.hooks import load_risk

    frame, spath, meta = load_signals(symbol, interval, days)
    simulated = bool(meta.get("simulated", False))
    costs = with_filters(costs, symbol, mode=exchange_filters, file=exchange_info, simulated=simulated,
                         price=float(frame["close"].iloc[-1]))
    risk_cfg = load_risk(risk)
    sig_meta = meta.get("signals", {}) if isinstance(meta.get("signals"), dict) else {}
    extra = {"symbol": normalize_symbol(symbol), "days": int(days), "signals_file": spath.name,
             "rules_file": sig_meta.get("rules_file"), "rules_params": sig_meta.get("params"),
             "risk_file": str(risk) if isinstance(risk, (str, Path)) else None}
    result = run_backtest(frame, interval=interval, costs=costs, init_cash=init_cash, risk=risk_cfg, params=extra)
    summary = summary_dict(result, symbol=symbol, interval=interval, days=days, simulated=simulated,
                           sources={"signals": spath.name})
    run = BacktestRun(result, simulated, summary)
    if not write:
        return run
    paths = {"equity": dataset_path(symbol, interval, days, "equity"),
             "trades": dataset_path(symbol, interval, days, "trades"),
             "json": dataset_path(symbol, interval, days, "backtest")}
    html_text = None
    if report:
        from S5.report import backtest_html

        title = f"{normalize_symbol(symbol)} {interval} {int(days)}d backtest"
        html_text = backtest_html(result, title=title, simulated=simulated)
        paths["html"] = report_path(symbol, interval, days, "backtest", "html")
    file_meta = {"simulated": simulated, "kind": "backtest", "source_file": spath.name,
                 "params": to_jsonable(result.params)}
    write_parquet(equity_frame(result), paths["equity"], metadata=file_meta)
    write_parquet(result.trades.loc[:, list(TRADE_COLUMNS)], paths["trades"], metadata=file_meta)
    atomic_write_text(paths["json"], json.dumps(summary, indent=2, allow_nan=False))
    if html_text is not None:
        atomic_write_text(paths["html"], html_text)
    run.paths = paths
    return run


def metrics_table(metrics: dict[str, Any], *, title: str = "Backtest"):
    """A rich Table of the metrics (two columns)."""
    from rich.table import Table

    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("metric")
    t.add_column("value", justify="right")
    for k in METRIC_FORMATS:
        if k in metrics:
            t.add_row(k.replace("_", " "), format_metric(k, metrics[k]))
    return t


__all__ = [
    "BacktestRun",
    "backtest_command",
    "backtest_files",
    "equity_frame",
    "load_signals",
    "metrics_table",
    "signals_command",
    "summary_dict",
]
