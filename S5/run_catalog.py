"""The runs on disk, side by side: every S5 backtest, optimiser, walk-forward and
parity result found in the data and reports folders, one row per result (an
optimisation gives an in-sample and an out-of-sample row), with its market, window,
rules file, costs, sizing and main metrics, and the equity curves that exist.

Files read (names from :mod:`S1.datasets`; ``<stem>`` = ``ethusdc_1h_365d`` and, for
outputs derived from a rule file, possibly ``<stem>__<rules>``):

- ``data/<stem>__<rules>_backtest.json`` (+ ``_equity.parquet``): the rules file comes
  from the JSON (``params.rules_file`` / ``rules``), not from the file name;
- ``reports/<stem>__<rules>_optimize.json``: in-sample and out-of-sample metrics of
  the best params (``rules`` key);
- ``reports/<stem>__<rules>_walkforward.json`` (+ ``_equity.parquet``): the stitched
  out-of-sample result;
- ``data/<stem>__<rules>_parity.json``: backtest vs paper-trading trade lists.

Files written by older versions lack some keys: a missing value is blank (``None``),
never an error; a file that is not JSON is skipped with a note. Files named before
every rule-derived output carried the rules name the one way (``<stem>_backtest.json``,
``<stem>_optimize_<rules>.json``, ``<stem>_walkforward_<rules>.json``) are still read,
with one note each (:attr:`Catalog.notes`) -- unless a run under the new name replaced them.

>>> import tempfile, json; from pathlib import Path
>>> d = Path(tempfile.mkdtemp())
>>> _ = (d / "btcusdt_1h_30d_backtest.json").write_text(json.dumps({"symbol": "BTCUSDT", "interval": "1h",
...      "days": 30, "metrics": {"sharpe": 1.5, "n_trades": 12}}))
>>> cat = load_catalog(data=d, reports=d)
>>> [(r.kind, r.symbol, r.metrics["sharpe"], r.rules) for r in cat.runs]
[('backtest', 'BTCUSDT', 1.5, None)]
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

log = logging.getLogger(__name__)

#: Metrics shown in the comparison (all in S5.metrics.METRIC_FORMATS).
COMPARE_METRICS = ("total_return", "cagr", "sharpe", "sortino", "max_drawdown", "win_rate", "profit_factor",
                   "n_trades", "exposure", "buy_and_hold_return")
#: Metrics where smaller is better (sorting puts the smallest first).
SMALLER_IS_BETTER = frozenset({"max_drawdown"})
KINDS = ("backtest", "optimize", "walk_forward", "parity")
COLUMNS = ("run", "kind", "sample", "symbol", "interval", "days", "window", "rules", "costs", "sizing",
           *COMPARE_METRICS, "simulated", "created", "file")


@dataclass
class Run:
    """One result: a backtest, one sample of an optimisation, a walk-forward, a parity check."""

    kind: str
    sample: str                    # full | in-sample | out-of-sample | out-of-sample (stitched) | paper vs backtest
    path: Path
    symbol: str | None = None
    interval: str | None = None
    days: int | None = None
    rules: str | None = None
    window: str | None = None
    costs: str | None = None
    sizing: str | None = None
    simulated: bool | None = None
    created: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    equity_path: Path | None = None
    equity_column: str = "equity"

    @property
    def name(self) -> str:
        """``BTCUSDT 1h 365d rules backtest`` (market, window, rules file, kind)."""
        parts = [self.symbol or "?", self.interval or "", f"{self.days}d" if self.days else "",
                 Path(self.rules).stem if self.rules else "", self.kind.replace("_", "-")]
        return " ".join(p for p in parts if p)

    @property
    def label(self) -> str:
        """:attr:`name` plus the sample when it is not the full window (curve names)."""
        return self.name if self.sample == "full" else f"{self.name} {self.sample}"

    def row(self) -> dict[str, Any]:
        return {"run": self.name, "kind": self.kind, "sample": self.sample, "symbol": self.symbol,
                "interval": self.interval, "days": self.days, "window": self.window, "rules": self.rules,
                "costs": self.costs, "sizing": self.sizing,
                **{m: _num(self.metrics.get(m)) for m in COMPARE_METRICS},
                "simulated": self.simulated, "created": self.created, "file": self.path.name}

    def equity(self) -> pd.Series | None:
        """The equity curve (UTC index) when the run wrote one, else None."""
        if self.equity_path is None or not self.equity_path.exists():
            return None
        try:
            df = pd.read_parquet(self.equity_path)
        except Exception as exc:  # noqa: BLE001 - a half-written or foreign file: no curve, not a crash
            log.warning("cannot read %s: %s", self.equity_path, exc)
            return None
        if self.equity_column not in df.columns or df.empty:
            return None
        s = df[self.equity_column].astype(np.float64)
        if not isinstance(s.index, pd.DatetimeIndex) and "open_time" in df.columns:
            s.index = pd.DatetimeIndex(df["open_time"])
        return s.rename(self.label)


@dataclass
class Catalog:
    runs: list[Run]
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    #: one line per file read under its older name (``note: reading ... re-run to get ...``)
    notes: list[str] = field(default_factory=list)

    def filter(self, *, symbol: str | None = None, interval: str | None = None,
               rules: str | Path | None = None, kind: str | None = None) -> Catalog:
        """Runs of ``symbol`` / ``interval`` / ``kind`` made with the rules file ``rules`` -- a path
        (``S4/rules_ta_only.yaml``) or its name (``rules_ta_only``), compared by
        :func:`S1.datasets.rules_token`: ``rules`` never selects ``rules_ta_only``."""
        from S1.datasets import rules_token

        want = None if rules is None else rules_token(rules)

        def keep(r: Run) -> bool:
            return ((symbol is None or (r.symbol or "").upper() == symbol.replace("/", "").upper())
                    and (interval is None or r.interval == interval)
                    and (kind is None or r.kind == kind)
                    and (want is None or _token(r.rules) == want))
        return Catalog([r for r in self.runs if keep(r)], self.skipped, self.notes)

    def sorted(self, metric: str | None) -> Catalog:
        """Best first by ``metric`` (largest, or smallest for max_drawdown); blanks last."""
        if not metric:
            return self
        if metric not in COMPARE_METRICS:
            from S1.errors import UserError

            raise UserError(f"--sort {metric}: not a compared metric", f"use one of {', '.join(COMPARE_METRICS)}")
        sign = 1.0 if metric in SMALLER_IS_BETTER else -1.0

        def key(r: Run):
            v = _num(r.metrics.get(metric))
            return (v is None or not np.isfinite(v), sign * v if v is not None and np.isfinite(v) else 0.0)
        return Catalog(sorted(self.runs, key=key), self.skipped, self.notes)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame([r.row() for r in self.runs], columns=list(COLUMNS))

    def curves(self, *, normalise: bool = True) -> dict[str, pd.Series]:
        """``label -> equity`` of every run with a curve; ``normalise``: each divided by its
        first value (all start at 1.0, so different cash or windows compare)."""
        out: dict[str, pd.Series] = {}
        for r in self.runs:
            s = r.equity()
            if s is None or s.empty:
                continue
            if normalise:
                first = float(s.iloc[0])
                if not (np.isfinite(first) and first != 0):
                    continue
                s = s / first
            name, k = r.label, 2
            while name in out:
                name, k = f"{r.label} ({k})", k + 1
            out[name] = s
        return out


# ---------------------------------------------------------------------------- reading
def _num(v) -> float | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f


def _get(d: Any, *keys, default=None):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return default
        d = d[k]
    return d


def _token(rules: str | None) -> str | None:
    """The rules name of a run's rules file (None when unknown or not a file name)."""
    from S1.datasets import rules_token
    from S1.errors import UserError

    if not rules:
        return None
    try:
        return rules_token(rules)
    except UserError:
        return None


def _rules_name(*values) -> str | None:
    for v in values:
        if isinstance(v, str) and v.strip():
            return v
    return None


def _pct(v) -> str:
    f = _num(v)
    return "" if f is None else f"{f * 100:.4g}%"


def describe_costs(costs: dict | None, params: dict | None = None) -> str | None:
    """``fee 0.1% taker, slip 0.05%`` from a costs dict (or a backtest's params)."""
    c = costs if isinstance(costs, dict) else {}
    p = params if isinstance(params, dict) else {}
    fee = _num(c.get("fees", p.get("fees")))
    slip = _num(c.get("slippage", p.get("slippage")))
    if fee is None and slip is None:
        return None
    parts = []
    maker, taker = _num(c.get("maker_fee", p.get("maker_fee"))), _num(c.get("taker_fee", p.get("taker_fee")))
    if maker is not None and taker is not None and maker != taker:
        parts.append(f"fee maker {_pct(maker)} / taker {_pct(taker)}")
    elif fee is not None:
        parts.append(f"fee {_pct(fee)}")
    if slip is not None:
        parts.append(f"slip {_pct(slip)}")
    lot = c.get("exchange_filters", p.get("exchange_filters"))
    if isinstance(lot, dict):
        parts.append(f"filters {lot.get('symbol') or 'on'}")
    return ", ".join(parts)


def describe_sizing(params: dict | None) -> str | None:
    """``atr 1% risk, stop 2 ATR`` / ``all in`` from a backtest's params."""
    p = params if isinstance(params, dict) else {}
    risk = p.get("risk")
    if not isinstance(risk, dict):
        if p.get("risk_file") is None and "risk_file" in p:
            return "all in, no stops"
        return None
    s, stops = risk.get("sizing") or {}, risk.get("stops") or {}
    method = s.get("method")
    if method == "fixed":
        text = f"fixed {_pct(s.get('fixed_fraction'))} of equity"
    elif method == "atr":
        text = f"atr: {_pct(s.get('risk_per_trade'))} risk"
    elif method:
        text = str(method)
    else:
        text = ""
    stop = []
    if _num(stops.get("stop_loss_pct")) is not None:
        stop.append(f"SL {_pct(stops['stop_loss_pct'])}")
    elif _num(stops.get("atr_k")) is not None:
        stop.append(f"SL {stops['atr_k']:g} ATR")
    if _num(stops.get("take_profit_pct")) is not None:
        stop.append(f"TP {_pct(stops['take_profit_pct'])}")
    if p.get("stops") is False:
        stop = ["stops off"]
    return ", ".join(x for x in [text, *stop] if x) or None


def _window(a, b) -> str | None:
    try:
        lo, hi = pd.Timestamp(a), pd.Timestamp(b)
    except (TypeError, ValueError):
        return None
    if lo is pd.NaT or hi is pd.NaT:
        return None
    return f"{lo:%Y-%m-%d}..{hi:%Y-%m-%d}"


def _created(doc: dict, path: Path) -> str:
    c = doc.get("created_at")
    if isinstance(c, str) and c:
        return c[:16].replace("T", " ")
    return pd.Timestamp(path.stat().st_mtime, unit="s", tz="UTC").strftime("%Y-%m-%d %H:%M")


def _read(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        log.warning("skipping %s: %s", path, exc)
        return None
    return doc if isinstance(doc, dict) else None


def _market(doc: dict) -> dict[str, Any]:
    days = doc.get("days")
    try:
        days = int(days) if days is not None else None
    except (TypeError, ValueError):
        days = None
    return {"symbol": doc.get("symbol"), "interval": doc.get("interval"), "days": days,
            "simulated": doc.get("simulated") if isinstance(doc.get("simulated"), bool) else None}


def backtest_runs(path: Path, doc: dict) -> list[Run]:
    params = doc.get("params") if isinstance(doc.get("params"), dict) else {}
    equity = path.with_name(path.name.removesuffix("_backtest.json") + "_equity.parquet")
    rules = _rules_name(params.get("rules_file"), doc.get("rules"), doc.get("rules_file"))
    m = _market(doc)
    run = Run("backtest", "full", path, **m, rules=rules, costs=describe_costs(doc.get("costs"), params),
              sizing=describe_sizing(params), created=_created(doc, path),
              metrics=doc.get("metrics") if isinstance(doc.get("metrics"), dict) else {},
              equity_path=equity if equity.exists() else None)
    if run.window is None and run.equity_path is not None:
        try:
            idx = pd.read_parquet(run.equity_path, columns=[]).index
            run.window = _window(idx[0], idx[-1]) if len(idx) else None
        except Exception as exc:  # noqa: BLE001 - the window stays blank
            log.info("no window for %s: %s", path, exc)
    if run.interval is None:
        run.interval = params.get("interval")
    return [run]


def optimize_runs(path: Path, doc: dict) -> list[Run]:
    m = _market(doc)
    split = doc.get("split") if isinstance(doc.get("split"), dict) else {}
    common = dict(**m, rules=_rules_name(doc.get("rules")), costs=describe_costs(doc.get("costs")),
                  created=_created(doc, path))
    out = []
    for key, sample, win in (("in_sample", "in-sample", split.get("train")),
                             ("out_of_sample", "out-of-sample", split.get("test"))):
        metrics = doc.get(key)
        if not isinstance(metrics, dict):
            continue
        w = _window(*win) if isinstance(win, list) and len(win) == 2 else None
        out.append(Run("optimize", sample, path, window=w, metrics=metrics, **common))
    return out


def walkforward_runs(path: Path, doc: dict) -> list[Run]:
    m = _market(doc)
    folds = doc.get("folds") if isinstance(doc.get("folds"), list) else []
    w = None
    if folds and isinstance(_get(folds[0], "test"), list) and isinstance(_get(folds[-1], "test"), list):
        w = _window(folds[0]["test"][0], folds[-1]["test"][1])
    equity = path.with_name(path.stem + "_equity.parquet")
    metrics = doc.get("stitched_out_of_sample")
    return [Run("walk_forward", "out-of-sample (stitched)", path, **m, rules=_rules_name(doc.get("rules")),
                window=w, costs=describe_costs(doc.get("costs")), created=_created(doc, path),
                metrics=metrics if isinstance(metrics, dict) else {},
                equity_path=equity if equity.exists() else None)]


def parity_runs(path: Path, doc: dict) -> list[Run]:
    """``python S5/parity.py``'s check: the backtest's trade count, and in the sample
    column whether paper trading made the same trades."""
    s = doc.get("settings") if isinstance(doc.get("settings"), dict) else {}
    bt = doc.get("backtest") if isinstance(doc.get("backtest"), list) else []
    paper = doc.get("paper") if isinstance(doc.get("paper"), list) else []
    mism = doc.get("mismatches")
    n_mism = len(mism) if isinstance(mism, list) else None
    verdict = ("same trades as paper trading" if doc.get("ok") is True else
               f"{n_mism} difference(s) with paper trading" if n_mism else "paper vs backtest")
    m = _market({**s, "symbol": s.get("symbol") or doc.get("symbol")})
    fee = _num(s.get("fee"))
    return [Run("parity", verdict, path, **m, rules=_rules_name(s.get("rules_file")),
                window=_window(s.get("start"), s.get("end")) if s.get("start") and s.get("end") else None,
                costs=describe_costs({"fees": fee, "slippage": s.get("slippage")}) if fee is not None else None,
                created=_created(doc, path),
                metrics={"n_trades": len(bt), "paper_trades": len(paper), "mismatches": n_mism, "ok": doc.get("ok")})]


#: (kind, file patterns, reader): the names :mod:`S1.datasets` gives (``<stem>__<rules>_<kind>``), then
#: the older optimiser / walk-forward names (``<stem>_<kind>_<rules>``,
#: :func:`S1.datasets.renamed_research_path`)
_READERS = (("backtest", ("*_backtest.json",), backtest_runs),
            ("optimize", ("*__*_optimize.json", "*_optimize_*.json"), optimize_runs),
            ("walk_forward", ("*__*_walkforward.json", "*_walkforward_*.json"), walkforward_runs),
            ("parity", ("*_parity.json",), parity_runs))


def _older_name(path: Path) -> str | None:
    """The note for a file named before the one convention (None for a current name): which file,
    and the name a re-run gives it."""
    from S1.datasets import parse_dataset_name, renamed_research_path

    new = renamed_research_path(path)
    if new is None:
        parsed = parse_dataset_name(path.name)
        if parsed is None or parsed.rules != "":     # "": a rule-derived file named without the rules
            return None
        return (f"note: reading {path.name} (written before outputs carried the rules name; re-run the "
                f"backtest to get {parsed.dataset.stem}__<rules>_backtest.json)")
    return (f"note: reading {path.name} (written before outputs were named <stem>__<rules>_<kind>; "
            f"re-run to get {new.name})")


def load_catalog(*, data: Path | None = None, reports: Path | None = None) -> Catalog:
    """Every run found in ``data`` (default: the data folder) and ``reports``."""
    from S1.datasets import data_dir, reports_dir

    folders = [Path(data) if data is not None else data_dir(), Path(reports) if reports is not None else reports_dir()]
    from S1.datasets import renamed_research_path

    seen: set[Path] = set()
    runs: list[Run] = []
    skipped: list[tuple[Path, str]] = []
    notes: list[str] = []
    for _, patterns, reader in _READERS:
        for folder in dict.fromkeys(folders):
            if not folder.is_dir():
                continue
            for p in sorted({q for pattern in patterns for q in folder.glob(pattern)}):
                if p in seen or not p.is_file():
                    continue
                seen.add(p)
                renamed = renamed_research_path(p)
                if renamed is not None and renamed.is_file():
                    continue            # a newer run under the current name replaced this one
                note = _older_name(p)
                if note:
                    notes.append(note)
                doc = _read(p)
                if doc is None:
                    skipped.append((p, "not a JSON object"))
                    continue
                try:
                    runs.extend(reader(p, doc))
                except Exception as exc:  # noqa: BLE001 - an unexpected shape: skip the file, keep the others
                    log.warning("skipping %s: %s", p, exc)
                    skipped.append((p, str(exc)))
    return Catalog(runs, skipped, notes)


# ---------------------------------------------------------------------------- output
def format_value(col: str, v) -> str:
    """The cell text of the terminal / HTML table (blank for a missing value)."""
    from S5.metrics import format_metric

    if v is None or (isinstance(v, float) and np.isnan(v)):
        return ""
    if col in COMPARE_METRICS:
        return format_metric(col, v)
    if isinstance(v, bool):
        return "yes" if v else "no"
    return str(v)


TERMINAL_COLUMNS = ("run", "sample", "window", "costs", "sizing", "total_return", "cagr", "sharpe", "max_drawdown",
                    "win_rate", "profit_factor", "n_trades", "buy_and_hold_return")
#: Dropped first when the terminal is narrow (they are in the HTML and the CSV).
_NARROW_DROP = ("costs", "sizing", "window", "cagr", "profit_factor", "win_rate", "buy_and_hold_return")
_NARROW_SAMPLE = {"in-sample": "IS", "out-of-sample": "OOS", "out-of-sample (stitched)": "OOS stitched"}
_SHORT = {"total_return": "return", "max_drawdown": "max DD", "win_rate": "win", "profit_factor": "PF",
          "n_trades": "trades", "buy_and_hold_return": "B&H"}


def rich_table(cat: Catalog, *, title: str = "Runs on disk", width: int | None = None):
    """The terminal table; on a terminal narrower than 170 columns the costs, sizing,
    window, CAGR, profit factor, win rate and buy-and-hold columns are left to the
    HTML / CSV and the samples are abbreviated (IS / OOS)."""
    from rich.table import Table

    cols = list(TERMINAL_COLUMNS)
    narrow = width is not None and width < 170
    if narrow:
        cols = [c for c in cols if c not in _NARROW_DROP]
    sim = any(r.simulated for r in cat.runs)
    t = Table(title=title, header_style="bold", caption="SIM = made from the simulated market" if sim else None)
    for c in cols:
        num = c in COMPARE_METRICS
        t.add_column(_SHORT.get(c, c.replace("_", " ")), justify="right" if num else "left",
                     no_wrap=num, overflow="fold", min_width=18 if c == "run" else None)
    for r in cat.runs:
        row = r.row()
        if narrow:
            row["sample"] = _NARROW_SAMPLE.get(row["sample"], row["sample"])
        cells = [format_value(c, row[c]) for c in cols]
        if r.simulated:
            cells[0] += " [red]SIM[/red]"
        t.add_row(*cells)
    return t


def curves_figure(curves: dict[str, pd.Series], *, title: str = ""):
    """One line per run, each starting at 1.0 (growth of 1 unit of cash)."""
    import plotly.graph_objects as go

    from S5.report import apply_style

    fig = go.Figure()
    for name, s in curves.items():
        fig.add_trace(go.Scatter(x=s.index, y=s.to_numpy(), name=name, mode="lines"))
    fig.update_layout(height=520, title=title or None, yaxis_title="equity / first equity", hovermode="x unified")
    return apply_style(fig)


def compare_html(cat: Catalog, *, title: str = "Runs side by side", standalone: bool | None = None,
                 folder: Path | None = None) -> str:
    """The comparison page: the table and the overlaid, normalised equity curves."""
    import html

    from S5.report import figure_div, html_page, table_html

    df = cat.table()
    cols = [c for c in COLUMNS if c not in ("kind", "symbol", "interval", "days", "file")]  # all in the run name
    rows = [[format_value(c, v) for c, v in zip(cols, rec)] for rec in df[cols].itertuples(index=False)]
    curves = cat.curves()
    sim = [r for r in cat.runs if r.simulated]
    parts = []
    if sim:
        parts.append(f"<p class='sim'>{len(sim)} of {len(cat.runs)} run(s) were made from the SIMULATED market "
                     "(offline mode): not real prices.</p>")
    parts.append(f"<p class='note'>{len(cat.runs)} result(s); {len(curves)} equity curve(s). In-sample rows are "
                 "the data the parameters were chosen on: compare out-of-sample rows with each other.</p>")
    text = [j for j, c in enumerate(cols) if c in ("sample", "rules", "costs", "sizing")]
    parts.append("<div style='overflow-x:auto'>" + table_html([c.replace("_", " ") for c in cols], rows,
                                                             css="compare", left=text) + "</div>")
    if curves:
        parts.append("<h2>Equity curves, normalised to the same start</h2>")
        parts.append(figure_div(curves_figure(curves)))
    if cat.skipped:
        parts.append("<h2>Files skipped</h2><ul>" + "".join(
            f"<li>{html.escape(p.name)}: {html.escape(why)}</li>" for p, why in cat.skipped) + "</ul>")
    return html_page(title + (" -- includes SIMULATED runs" if sim else ""), "".join(parts),
                     standalone=standalone, folder=folder)


__all__ = ["COLUMNS", "COMPARE_METRICS", "Catalog", "Run", "compare_html", "curves_figure", "describe_costs",
           "describe_sizing", "format_value", "load_catalog", "rich_table"]
