"""The backtest panel of the S7 dashboard (no Streamlit): S5's runs as it wrote them
(``<stem>_backtest.json``, ``_equity`` and ``_trades`` Parquet files, the HTML report),
every path from :func:`S1.datasets.dataset_path` / :func:`~S1.datasets.report_path`.

>>> import tempfile
>>> backtest_runs(data_dir=Path(tempfile.mkdtemp()))
[]
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from S1.datasets import Dataset, KINDS, dataset_path, parse_dataset_name, read_parquet, report_path
from S1.datasets import data_dir as _data_dir
from S7.dashboard_files import SIMULATED_LABEL, read_columns


@dataclass(frozen=True)
class BacktestRef:
    """One S5 run: its ``_backtest.json`` and the market it names."""

    json_path: Path
    symbol: str
    interval: str
    days: int
    exchange: str | None
    created_at: pd.Timestamp
    simulated: bool
    #: the rules token in the file name (``rules_ta_only``); "" for a file named before that convention
    rules: str | None = None

    @property
    def dataset(self) -> Dataset:
        return Dataset(self.symbol, self.interval, self.days, exchange=self.exchange)

    @property
    def label(self) -> str:
        ex = f"{self.exchange}:" if self.exchange else ""
        rules = f" [{self.rules}]" if self.rules else ""
        return (f"{ex}{self.symbol} {self.interval} {self.days}d{rules} backtest · {self.created_at:%Y-%m-%d %H:%M} UTC"
                + (f" · {SIMULATED_LABEL}" if self.simulated else ""))


@dataclass
class Backtest:
    """What the dashboard shows of one run (files that are missing are None)."""

    ref: BacktestRef
    summary: dict[str, Any]
    metrics: dict[str, Any]
    equity: pd.Series | None
    trades: pd.DataFrame | None
    buy_and_hold: pd.Series | None
    html: Path | None
    missing: list[str] = field(default_factory=list)

    @property
    def init_cash(self) -> float | None:
        v = (self.summary.get("params") or {}).get("init_cash")
        return float(v) if v is not None else None


def backtest_runs(*, data_dir: Path | None = None) -> list[BacktestRef]:
    """The ``*_backtest.json`` files of the data directory, newest run first
    (by the JSON's ``created_at``, else the file time); unreadable files are skipped."""
    base = _data_dir(data_dir)
    refs: list[BacktestRef] = []
    if not base.is_dir():
        return refs
    suffix = "".join(KINDS["backtest"])
    for p in base.glob(f"*{suffix}"):
        # the JSON shares its stem with the Parquet datasets: parsed by S1, checked by the round trip
        parsed = parse_dataset_name(p.name)
        if (parsed is None or parsed.kind != "backtest"
                or dataset_path(parsed.dataset, "backtest", data_dir=base, rules=parsed.rules) != p):
            continue
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
            created = pd.Timestamp(doc.get("created_at") or pd.Timestamp(p.stat().st_mtime, unit="s", tz="UTC"))
        except (OSError, ValueError):
            continue
        created = created.tz_localize("UTC") if created.tzinfo is None else created.tz_convert("UTC")
        refs.append(BacktestRef(p, parsed.symbol, parsed.interval, parsed.days, parsed.exchange, created,
                                bool(doc.get("simulated", False)), parsed.rules))
    return sorted(refs, key=lambda r: (r.created_at, r.json_path.name), reverse=True)


def load_backtest(ref: BacktestRef) -> Backtest:
    """The run's JSON, equity curve, trades, buy-and-hold curve (from the signals or
    candle file: initial cash x close / first open, S5's definition) and HTML path."""
    summary = json.loads(ref.json_path.read_text(encoding="utf-8"))

    def path(kind: str) -> Path:
        return dataset_path(ref.dataset, kind, data_dir=ref.json_path.parent, rules=ref.rules)

    missing: list[str] = []
    equity = trades = bh = None
    p = path("equity")
    if p.is_file():
        equity = read_parquet(p)["equity"].astype(float)
    else:
        missing.append(p.name)
    p = path("trades")
    if p.is_file():
        trades = read_parquet(p)
    else:
        missing.append(p.name)
    init = (summary.get("params") or {}).get("init_cash")
    for kind in ("signals", "candles"):
        p = path(kind)
        if p.is_file() and init is not None:
            px = read_columns(p, ["open_time", "open", "close"]).set_index("open_time")
            if equity is not None:
                px = px[(px.index >= equity.index[0]) & (px.index <= equity.index[-1])]
            if len(px):
                bh = (float(init) * px["close"] / float(px["open"].iloc[0])).rename("buy_and_hold")
            break
    html = report_path(ref.dataset, "backtest", "html", rules=ref.rules)
    return Backtest(ref, summary, dict(summary.get("metrics") or {}), equity, trades, bh,
                    html if html.is_file() else None, missing)


def drawdown(equity: pd.Series, init_cash: float | None = None) -> pd.Series:
    """Drawdown from the running peak as a positive fraction (the peak includes the
    initial cash, as in S5's ``max_drawdown``; S5.metrics.drawdown_stats gives only the
    figures, this is the curve that is drawn).

    >>> drawdown(pd.Series([100.0, 120.0, 90.0, 130.0]), 110.0).round(3).tolist()
    [0.091, 0.0, 0.25, 0.0]
    """
    peak = equity.cummax()
    if init_cash is not None:
        peak = np.maximum(peak, float(init_cash))
    return (1.0 - equity / peak).rename("drawdown")


def metric_rows(metrics: dict[str, Any]) -> pd.DataFrame:
    """The metrics as a two-column table, formatted as S5 prints them.

    >>> metric_rows({"total_return": 0.1234, "note": None}).values.tolist()
    [['total return', '12.34%'], ['note', 'n/a']]
    """
    from S5.metrics import METRIC_FORMATS, format_metric

    def show(k: str, v: Any) -> str:
        if k in METRIC_FORMATS or isinstance(v, (int, float)) and not isinstance(v, bool):
            return format_metric(k, v)
        return "n/a" if v is None else str(v)

    keys = [k for k in METRIC_FORMATS if k in metrics] + sorted(k for k in metrics if k not in METRIC_FORMATS)
    return pd.DataFrame({"metric": [k.replace("_", " ") for k in keys], "value": [show(k, metrics[k]) for k in keys]})


__all__ = ["Backtest", "BacktestRef", "backtest_runs", "drawdown", "load_backtest", "metric_rows"]
