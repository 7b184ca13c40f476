"""What the S7 dashboard shows, as plain functions (no Streamlit): the app, notebooks
and the tests call the same loaders.

Every path comes from :mod:`S1.datasets` (``data_dir``, ``dataset_path``,
``parse_dataset_name``, ``sentiment_path``, ``orders_log_path``, ``state_path``,
``report_path``); the executor's files are read with S7's own readers
(:func:`S7.order_log.order_log_frame`, :class:`S7.store.ExecutorStore` queries on a
read-only connection) and the kill-switch with :meth:`S6.killswitch.KillSwitch.status`.
Nothing here writes to the data directory (the kill-switch's lock file excepted,
which its reader takes).

- :func:`coverage_table`: one row per dataset file (every Parquet dataset, the
  sentiment and news files, each market of the streamer's SQLite files): rows,
  first/last time, gaps, and the ``simulated`` flag of its metadata.
- :func:`indicator_sources` / :func:`load_indicators`: S2 indicator frames.
- :func:`sentiment_files` / :func:`read_sentiment` / :func:`sentiment_summary`.
- :func:`backtest_runs` / :func:`load_backtest` / :func:`metric_rows`: S5's outputs.
- :func:`order_events` / :func:`orders_table`, :func:`executor_states`,
  :func:`kill_switch_states`: the paper-trading state.

>>> import tempfile
>>> empty = Path(tempfile.mkdtemp())
>>> coverage_table(data_dir=empty).empty, backtest_runs(data_dir=empty), kill_switch_states(data_dir=empty)
(True, [], [])
>>> commands("ethusdc", "4h", 90)["backtest"]
'python S5/backtest.py --symbol ETHUSDC --interval 4h --days 90'
"""

from __future__ import annotations

import json
import re
import sqlite3
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from S1.cli import UserError
from S1.datasets import (KINDS, dataset_path, history_command, indicators_command, news_items_path,
                         normalize_symbol, orders_log_path, parse_dataset_name, read_metadata, read_parquet,
                         report_path, sentiment_asset_paths, sentiment_path, state_path)
from S1.datasets import data_dir as _data_dir
from S1.history import find_gaps
from S1.intervals import INTERVALS

#: Columns of :func:`coverage_table`.
COVERAGE_COLUMNS = ("file", "kind", "market", "interval", "rows", "first", "last", "gaps", "missing",
                    "simulated", "gap_ranges", "size_mb", "modified", "note")
#: Kinds whose rows are candles (one per open time), so gaps can be counted.
TIMED_KINDS = ("candles", "ta", "signals", "ml", "equity", "sentiment", "stream")
SIMULATED_LABEL = "SIMULATED"
DEFAULT_MARKET = ("BTCUSDT", "1h", 365)
_STATE_DB = re.compile(r"^s7_(dryrun|testnet|live|replay)_([a-z0-9]+)_([0-9]+[a-zA-Z]+)\.db$")
MODE_LABELS = {"dryrun": "dry-run", "testnet": "testnet", "live": "live", "replay": "dry-run replay"}


def _base(data_dir: Path | None) -> Path:
    return _data_dir(data_dir)


def simulated_text(flag: bool | None) -> str:
    """How a ``simulated`` metadata flag is shown: ``SIMULATED`` / ``real`` / ``not recorded``."""
    return SIMULATED_LABEL if flag else ("real" if flag is False else "not recorded")


# ------------------------------------------------------------------- commands
def commands(symbol: str = DEFAULT_MARKET[0], interval: str = DEFAULT_MARKET[1],
             days: int = DEFAULT_MARKET[2]) -> dict[str, str]:
    """The commands that create each kind of output for one market (shown when it is missing)."""
    s, d = normalize_symbol(symbol), int(days)
    since = (pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=d)).strftime("%Y-%m-%d")
    market = f"--symbol {s} --interval {interval} --days {d}"
    return {
        "all": "make demo",
        "offline": "make demo ARGS=--offline",
        "history": history_command(s, interval, d),
        "indicators": indicators_command(s, interval, d),
        "sentiment": f"python S3/sentiment.py --since {since} --interval {interval}",
        "signals": f"python S4/decision.py {market} --rules S4/rules.yaml",
        "backtest": f"python S5/backtest.py {market}",
        "paper": f"python S7/executor.py --symbol {s} --interval {interval} --rules S4/rules.yaml --dry-run "
                 "--replay-days 7",
        "streamer": f"python S1/streamer.py --symbol {s} --interval 1m",
    }


def first_market(coverage: pd.DataFrame) -> tuple[str, str, int]:
    """The (symbol, interval, days) of the first candle dataset, else BTCUSDT 1h 365."""
    rows = coverage[coverage["kind"].isin(["candles", "ta"])] if len(coverage) else coverage
    for name in rows.get("file", []):
        parsed = parse_dataset_name(name)
        if parsed is not None:
            return parsed.symbol, parsed.interval, parsed.days
    return DEFAULT_MARKET


# ------------------------------------------------------------------- coverage
def _signature(path: Path) -> tuple[int, int]:
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def _read_columns(path: Path, columns: list[str]) -> pd.DataFrame:
    """These columns as plain columns (an index column among them comes back as one)."""
    df = read_parquet(path, columns=columns)
    return df.reset_index() if df.index.name in columns else df


@lru_cache(maxsize=512)
def _parquet_summary(path: str, mtime_ns: int, size: int, interval: str | None) -> dict[str, Any]:
    """Rows, first/last time, gaps and the simulated flag of one Parquet file (cached per version)."""
    p = Path(path)
    out: dict[str, Any] = {"rows": None, "first": pd.NaT, "last": pd.NaT, "gaps": None, "missing": None,
                           "simulated": None, "gap_ranges": "", "note": ""}
    try:
        pf = pq.ParquetFile(p)
        out["rows"] = int(pf.metadata.num_rows)
        names = set(pf.schema_arrow.names)
        meta = read_metadata(p)
        if "simulated" in meta:
            out["simulated"] = bool(meta["simulated"])
        times = None
        for col in ("open_time", "published_at"):
            if col in names:
                times = pd.DatetimeIndex(_read_columns(p, [col])[col]).sort_values()
                break
        if times is not None and len(times):
            out["first"], out["last"] = times[0], times[-1]
            if interval is not None and col == "open_time":
                gaps = find_gaps(times.unique(), interval)
                out["gaps"], out["missing"] = len(gaps), int(sum(g.missing for g in gaps))
                out["gap_ranges"] = "; ".join(str(g) for g in gaps[:3]) + (" ..." if len(gaps) > 3 else "")
        elif {"entry_time", "exit_time"} <= names:
            tr = _read_columns(p, ["entry_time", "exit_time"])
            if len(tr):
                out["first"], out["last"] = tr["entry_time"].min(), tr["exit_time"].max()
    except Exception as exc:  # one unreadable file must not hide the others
        out["note"] = f"unreadable: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    return out


@lru_cache(maxsize=64)
def _stream_summary(path: str, signature: tuple) -> tuple[dict[str, Any], ...]:
    """One row per market of a streamer SQLite file (closed candles), read-only."""
    rows = []
    try:
        con = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            data = con.execute("SELECT symbol, interval, open_time FROM kline WHERE is_closed = 1 "
                               "ORDER BY symbol, interval, open_time").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        return ({"market": "", "interval": None, "note": f"unreadable: {exc}"},)
    frame = pd.DataFrame(data, columns=["symbol", "interval", "open_time"])
    for (symbol, interval), g in frame.groupby(["symbol", "interval"], sort=True):
        times = pd.DatetimeIndex(pd.to_datetime(g["open_time"].to_numpy(np.int64), unit="ms", utc=True))
        gaps = find_gaps(times, interval) if interval in INTERVALS else []
        rows.append({"market": symbol, "interval": interval, "rows": len(times), "first": times[0],
                     "last": times[-1], "gaps": len(gaps), "missing": int(sum(x.missing for x in gaps)),
                     "gap_ranges": "; ".join(str(x) for x in gaps[:3]) + (" ..." if len(gaps) > 3 else ""),
                     "note": "streamer SQLite (closed candles)"})
    return tuple(rows)


def coverage_table(*, data_dir: Path | None = None) -> pd.DataFrame:
    """Every dataset in the data directory, one row each (see :data:`COVERAGE_COLUMNS`).

    ``simulated`` is the file's metadata flag (None when the file does not record it);
    ``gaps``/``missing`` count missing candles between the first and last open time
    (:func:`S1.history.find_gaps`) for time-indexed kinds; an unreadable file gets a
    ``note`` instead of raising. Sorted by kind order, then file name.
    """
    base = _base(data_dir)
    rows: list[dict[str, Any]] = []
    sentiment_names = {p.name: (interval, "all symbols") for interval, p in sentiment_files(data_dir=base)}
    if base.is_dir():
        for interval in {iv for iv, _ in sentiment_names.values()}:
            for asset, p in sentiment_asset_paths(interval, data_dir=base).items():
                sentiment_names[p.name] = (interval, f"{asset} news")
    if base.is_dir():
        for p in sorted(base.glob("*.parquet")):
            if p.name.startswith("."):
                continue  # temp files of atomic writes
            parsed = parse_dataset_name(p)
            if parsed is not None:
                kind, market, interval = parsed.kind, parsed.label, parsed.interval
            elif p.name in sentiment_names:
                kind, (interval, market) = "sentiment", sentiment_names[p.name]
            elif p.name == news_items_path(data_dir=base).name:
                kind, market, interval = "news", "all symbols", None
            else:
                kind, market, interval = "other", "", None
            info = _parquet_summary(str(p), *_signature(p), interval if kind in TIMED_KINDS else None)
            rows.append({"file": p.name, "kind": kind, "market": market, "interval": interval, **info,
                         "size_mb": round(p.stat().st_size / 1e6, 3),
                         "modified": pd.Timestamp(p.stat().st_mtime, unit="s", tz="UTC")})
        for p in sorted(base.glob("*_realtime.db")):
            wal = p.with_name(p.name + "-wal")
            sig = (_signature(p), _signature(wal) if wal.exists() else None)
            for info in _stream_summary(str(p), sig):
                rows.append({"file": p.name, "kind": "stream", "simulated": None, "size_mb": round(
                    p.stat().st_size / 1e6, 3), "modified": pd.Timestamp(p.stat().st_mtime, unit="s", tz="UTC"),
                    **info})
    out = pd.DataFrame(rows, columns=list(COVERAGE_COLUMNS))
    if len(out):
        order = {k: i for i, k in enumerate([*KINDS, "sentiment", "news", "stream", "other"])}
        out = out.sort_values(["file", "market"], kind="stable")
        out = out.iloc[np.argsort(out["kind"].map(order).to_numpy(), kind="stable")].reset_index(drop=True)
        for c in ("rows", "gaps", "missing"):
            out[c] = out[c].astype("Int64")
    return out


# ----------------------------------------------------------------- indicators
@dataclass(frozen=True)
class IndicatorSource:
    """A dataset the indicator panel can draw: the ``_ta`` file, else the candle file."""

    symbol: str
    interval: str
    days: int
    exchange: str | None
    kind: str          #: "ta" or "candles" (indicators computed in memory)
    path: Path
    simulated: bool | None

    @property
    def label(self) -> str:
        ex = f"{self.exchange}:" if self.exchange else ""
        what = "indicators" if self.kind == "ta" else "candles (indicators computed here)"
        return f"{ex}{self.symbol} {self.interval} {self.days}d · {what}" + (
            f" · {SIMULATED_LABEL}" if self.simulated else "")


def indicator_sources(*, data_dir: Path | None = None) -> list[IndicatorSource]:
    """One entry per market and window that has a ``_ta`` or a candle file, sorted by name."""
    base = _base(data_dir)
    groups: dict[tuple, dict[str, Path]] = {}
    if base.is_dir():
        for p in base.glob("*.parquet"):
            parsed = parse_dataset_name(p)
            if parsed is not None and parsed.kind in ("ta", "candles"):
                key = (parsed.symbol, parsed.interval, parsed.days, parsed.exchange)
                groups.setdefault(key, {})[parsed.kind] = p
    out = []
    for key in sorted(groups, key=lambda k: (k[0], k[1], k[2], k[3] or "")):
        kind = "ta" if "ta" in groups[key] else "candles"
        path = groups[key][kind]
        info = _parquet_summary(str(path), *_signature(path), None)
        out.append(IndicatorSource(*key, kind=kind, path=path, simulated=info["simulated"]))
    return out


def load_indicators(source: IndicatorSource) -> pd.DataFrame:
    """The whole indicator frame of ``source`` (computed with S2's ``add_indicators``
    when only the candle file exists)."""
    from S2.ta import add_indicators
    from S2.ta_io import read_candles, read_ta

    if source.kind == "ta":
        return read_ta(source.path)
    return add_indicators(read_candles(source.path), what=source.path.name)


# ------------------------------------------------------------------ sentiment
def sentiment_files(*, data_dir: Path | None = None) -> list[tuple[str, Path]]:
    """``[(interval, path)]`` of the S3 sentiment files present (paths from
    :func:`S1.datasets.sentiment_path`)."""
    base = _base(data_dir)
    out = []
    for interval in INTERVALS:
        p = sentiment_path(interval, data_dir=base)
        if p.is_file():
            out.append((interval, p))
    return out


def read_sentiment(path: Path) -> tuple[pd.DataFrame, dict]:
    """The sentiment frame (UTC ``open_time`` index, ``sentiment_score``, ``n_items`` ...) and its metadata."""
    df = read_parquet(path)
    if not isinstance(df.index, pd.DatetimeIndex) or "sentiment_score" not in df.columns:
        raise UserError(f"{path} is not a sentiment file (no open_time index or sentiment_score column)",
                        "re-create it with python S3/sentiment.py")
    return df.sort_index(), read_metadata(path)


def sentiment_summary(frame: pd.DataFrame, meta: dict | None = None) -> dict[str, Any]:
    """Latest score, means and item counts over the last 24 h and 7 days (before the
    last open time), plus the metadata's classifier / half-life / simulated flag.

    >>> t = pd.date_range("2024-01-01", periods=48, freq="h", tz="UTC", name="open_time")
    >>> f = pd.DataFrame({"sentiment_score": np.r_[np.zeros(24), np.full(24, 0.5)], "n_items": 1}, index=t)
    >>> s = sentiment_summary(f, {"classifier": "lexicon", "simulated": True})
    >>> s["latest"], s["mean_24h"], s["items_24h"], s["mean_7d"], s["simulated"]
    (0.5, 0.5, 24, 0.25, True)
    """
    meta = meta or {}
    out: dict[str, Any] = {"rows": len(frame), "first": None, "last": None, "latest": None, "mean_24h": None,
                           "mean_7d": None, "items_24h": None, "items_7d": None, "items_total": None,
                           "classifier": meta.get("classifier"), "half_life": meta.get("half_life"),
                           "simulated": meta.get("simulated")}
    if not len(frame):
        return out
    s = frame["sentiment_score"].astype(float)
    last = frame.index[-1]
    out.update(first=frame.index[0], last=last, latest=float(s.iloc[-1]))
    for tag, span in (("24h", pd.Timedelta(hours=24)), ("7d", pd.Timedelta(days=7))):
        sel = frame.index > last - span
        out[f"mean_{tag}"] = float(s[sel].mean())
        if "n_items" in frame.columns:
            out[f"items_{tag}"] = int(frame.loc[sel, "n_items"].sum())
    if "n_items" in frame.columns:
        out["items_total"] = int(frame["n_items"].sum())
    return out


# ------------------------------------------------------------------- backtest
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

    @property
    def label(self) -> str:
        ex = f"{self.exchange}:" if self.exchange else ""
        return (f"{ex}{self.symbol} {self.interval} {self.days}d backtest · {self.created_at:%Y-%m-%d %H:%M} UTC"
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
    base = _base(data_dir)
    refs = []
    if not base.is_dir():
        return refs
    suffix = KINDS["backtest"][0] + KINDS["backtest"][1]
    for p in base.glob(f"*{suffix}"):
        parsed = parse_dataset_name(p.name[: -len(suffix)] + ".parquet")
        if parsed is None or dataset_path(parsed.symbol, parsed.interval, parsed.days, "backtest",
                                          exchange=parsed.exchange, data_dir=base) != p:
            continue
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
            created = pd.Timestamp(doc.get("created_at") or pd.Timestamp(p.stat().st_mtime, unit="s", tz="UTC"))
        except (OSError, ValueError):
            continue
        created = created.tz_localize("UTC") if created.tzinfo is None else created.tz_convert("UTC")
        refs.append(BacktestRef(p, parsed.symbol, parsed.interval, parsed.days, parsed.exchange, created,
                                bool(doc.get("simulated", False))))
    return sorted(refs, key=lambda r: (r.created_at, r.json_path.name), reverse=True)


def load_backtest(ref: BacktestRef) -> Backtest:
    """The run's JSON, equity curve, trades, buy-and-hold curve (from the signals or
    candle file: initial cash x close / first open, S5's definition) and HTML path."""
    base = ref.json_path.parent
    summary = json.loads(ref.json_path.read_text(encoding="utf-8"))
    name = dict(exchange=ref.exchange, data_dir=base)
    missing: list[str] = []
    equity = trades = bh = None
    p = dataset_path(ref.symbol, ref.interval, ref.days, "equity", **name)
    if p.is_file():
        eq = read_parquet(p)
        equity = eq["equity"].astype(float)
    else:
        missing.append(p.name)
    p = dataset_path(ref.symbol, ref.interval, ref.days, "trades", **name)
    if p.is_file():
        trades = read_parquet(p)
    else:
        missing.append(p.name)
    init = (summary.get("params") or {}).get("init_cash")
    for kind in ("signals", "candles"):
        p = dataset_path(ref.symbol, ref.interval, ref.days, kind, **name)
        if p.is_file() and init is not None:
            px = _read_columns(p, ["open_time", "open", "close"]).set_index("open_time")
            if equity is not None:
                px = px[(px.index >= equity.index[0]) & (px.index <= equity.index[-1])]
            if len(px):
                bh = (float(init) * px["close"] / float(px["open"].iloc[0])).rename("buy_and_hold")
            break
    html = report_path(ref.symbol, ref.interval, ref.days, "backtest", "html", exchange=ref.exchange)
    return Backtest(ref, summary, dict(summary.get("metrics") or {}), equity, trades, bh,
                    html if html.is_file() else None, missing)


def drawdown(equity: pd.Series, init_cash: float | None = None) -> pd.Series:
    """Drawdown from the running peak as a positive fraction (the peak includes the
    initial cash, as in S5's ``max_drawdown``).

    >>> drawdown(pd.Series([100.0, 120.0, 90.0, 130.0]), 110.0).round(3).tolist()
    [0.091, 0.0, 0.25, 0.0]
    """
    peak = equity.cummax()
    if init_cash is not None:
        peak = np.maximum(peak, float(init_cash))
    return (1.0 - equity / peak).rename("drawdown")


def metric_rows(metrics: dict[str, Any]) -> pd.DataFrame:
    """The metrics as a two-column table, formatted as S5 prints them."""
    from S5.metrics import METRIC_FORMATS, format_metric

    def show(k: str, v: Any) -> str:
        if k in METRIC_FORMATS or isinstance(v, (int, float)) and not isinstance(v, bool):
            return format_metric(k, v)
        return "n/a" if v is None else str(v)

    keys = [k for k in METRIC_FORMATS if k in metrics] + sorted(k for k in metrics if k not in METRIC_FORMATS)
    return pd.DataFrame({"metric": [k.replace("_", " ") for k in keys], "value": [show(k, metrics[k]) for k in keys]})


# -------------------------------------------------------------- paper trading
def order_events(*, data_dir: Path | None = None) -> pd.DataFrame:
    """``data/orders.jsonl`` as a frame (S7's reader), oldest first; empty when absent."""
    from S7.order_log import order_log_frame

    return order_log_frame(orders_log_path(data_dir=_base(data_dir)))


def fills_label(mode: Any, simulated: Any = None) -> str:
    """Who filled an order: ``SIMULATED market`` (flagged records), the dry-run
    simulator, the testnet, or the live exchange.

    >>> fills_label("dry-run replay"), fills_label("testnet"), fills_label("testnet", True)
    ('simulated (dry-run)', 'testnet (paper)', 'SIMULATED market')
    """
    if simulated is True:
        return "SIMULATED market"
    mode = str(mode or "")
    if mode.startswith("dry-run"):
        return "simulated (dry-run)"
    if mode.startswith("testnet"):
        return "testnet (paper)"
    if mode.startswith("live"):
        return "LIVE"
    return mode or "unknown"


def orders_table(events: pd.DataFrame) -> pd.DataFrame:
    """One row per order (client id) from the order events, newest first: when it was
    decided, mode, symbol, side, quantity, its latest status, executed quantity,
    average price, fills, reason and error. Orders without a client id (not sent)
    are one row per event.

    >>> ev = pd.DataFrame({"time": pd.to_datetime(["2024-01-01 01:00", "2024-01-01 02:00", "2024-01-01 02:00"],
    ...                    utc=True), "mode": "dry-run", "symbol": "BTCUSDT", "side": "BUY", "quantity": "0.5",
    ...                    "price": ["100", "101", "101"], "client_id": "s7-a", "status": ["INTENT", "FILLED", "FILL"],
    ...                    "reason": "entry:x", "avg_price": [None, "101", None], "executed_qty": [None, "0.5", None]})
    >>> row = orders_table(ev).iloc[0]
    >>> row["status"], float(row["avg_price"]), int(row["fills"]), str(row["time"])
    ('FILLED', 101.0, 1, '2024-01-01 01:00:00+00:00')
    """
    cols = ["time", "updated", "mode", "fills_by", "symbol", "side", "quantity", "status", "executed_qty",
            "avg_price", "fills", "reason", "error", "client_id", "events"]
    if events is None or not len(events):
        return pd.DataFrame(columns=cols)
    ev = events.copy()
    for c in ("client_id", "status", "mode", "symbol", "side", "quantity", "reason", "error", "avg_price",
              "executed_qty", "simulated"):
        if c not in ev.columns:
            ev[c] = None
    ev["_key"] = ev["client_id"].where(ev["client_id"].notna(), "row-" + ev.index.astype(str))
    rows = []
    for key, g in ev.groupby("_key", sort=False):
        fills = g[g["status"] == "FILL"]
        states = g[g["status"] != "FILL"]
        last = (states if len(states) else g).iloc[-1]
        first = g.iloc[0]
        avg = pd.to_numeric(states["avg_price"], errors="coerce").dropna()
        qty = pd.to_numeric(states["executed_qty"], errors="coerce").dropna()
        errs = g["error"].dropna()
        sim = g["simulated"].dropna()
        mode = first["mode"] if isinstance(first["mode"], str) else "unknown"
        rows.append({"time": first["time"], "updated": g["time"].iloc[-1], "mode": mode,
                     "fills_by": fills_label(mode, bool(sim.iloc[-1]) if len(sim) else None),
                     "symbol": first["symbol"], "side": first["side"],
                     "quantity": pd.to_numeric(pd.Series([first["quantity"]]), errors="coerce").iloc[0],
                     "status": last["status"], "executed_qty": float(qty.iloc[-1]) if len(qty) else None,
                     "avg_price": float(avg.iloc[-1]) if len(avg) else None, "fills": len(fills),
                     "reason": first["reason"], "error": errs.iloc[-1] if len(errs) else None,
                     "client_id": first["client_id"], "events": len(g)})
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values("time", ascending=False, kind="stable", ignore_index=True)


class _ReadOnlyStore:
    """The executor store's queries (:class:`S7.store.ExecutorStore`) on a read-only
    connection: safe while the executor writes (WAL), never creates or changes a file."""

    def __init__(self, path: Path):
        from S7.store import ExecutorStore

        self._impl = ExecutorStore.open_readonly(path)

    def __enter__(self):
        return self._impl

    def __exit__(self, *exc):
        self._impl.con.close()
        return False


@dataclass
class ExecutorState:
    """One executor state file (``data/state/s7_<mode>_<symbol>_<interval>.db``)."""

    path: Path
    mode: str
    symbol: str
    interval: str
    positions: list = field(default_factory=list)      #: S7.store.Position per symbol
    round_trips: pd.DataFrame = field(default_factory=pd.DataFrame)
    orders: pd.DataFrame = field(default_factory=pd.DataFrame)
    error: str | None = None
    file: str = ""          #: the path relative to the data directory

    @property
    def label(self) -> str:
        return f"{MODE_LABELS.get(self.mode, self.mode)} {self.symbol} {self.interval}"


def executor_states(*, data_dir: Path | None = None) -> list[ExecutorState]:
    """Every executor store under ``data/state/`` (and ``data/state/replay/``), read-only."""
    base = _base(data_dir)
    out = []
    for folder in (state_path("", data_dir=base), state_path("replay", data_dir=base)):
        if not folder.is_dir():
            continue
        for p in sorted(folder.glob("s7_*.db")):
            m = _STATE_DB.match(p.name)
            if not m:
                continue
            st = ExecutorState(p, m.group(1), m.group(2).upper(), m.group(3), file=str(p.relative_to(base)))
            try:
                with _ReadOnlyStore(p) as store:
                    symbols = [r[0] for r in store.con.execute("SELECT symbol FROM positions ORDER BY symbol")]
                    st.positions = [store.position(s) for s in symbols]
                    st.round_trips = _ms_times(pd.DataFrame(store.round_trips()))
                    st.orders = _ms_times(pd.DataFrame(store.orders()))
            except sqlite3.DatabaseError as exc:
                st.error = f"unreadable: {exc}"
            out.append(st)
    return out


def _ms_times(df: pd.DataFrame) -> pd.DataFrame:
    for c in [c for c in df.columns if c.endswith("_ms")]:
        df[c[:-3]] = pd.to_datetime(df[c], unit="ms", utc=True)
        df = df.drop(columns=c)
    return df


def positions_table(states: list[ExecutorState]) -> pd.DataFrame:
    """The strategy positions of every store, one row per (store, symbol)."""
    cols = ["mode", "fills_by", "symbol", "interval", "state", "qty", "entry_price", "entry_time", "stop",
            "take_profit", "realized_pnl", "fees", "round_trips", "dust", "file"]
    rows = []
    for st in states:
        for p in st.positions:
            rows.append({"mode": MODE_LABELS.get(st.mode, st.mode), "symbol": p.symbol, "interval": st.interval,
                         "state": "OPEN" if p.is_open else "flat", "qty": float(p.qty),
                         "entry_price": p.entry_price,
                         "entry_time": pd.Timestamp(p.entry_time_ms, unit="ms", tz="UTC") if p.is_open and
                         p.entry_time_ms else pd.NaT, "stop": p.stop, "take_profit": p.take_profit,
                         "realized_pnl": float(p.realized_pnl), "fees": float(p.fees), "round_trips": p.round_trips,
                         "dust": float(p.dust), "fills_by": fills_label(MODE_LABELS.get(st.mode, st.mode)),
                         "file": st.file})
    return pd.DataFrame(rows, columns=cols)


def kill_switch_states(*, data_dir: Path | None = None) -> list[dict[str, Any]]:
    """:meth:`S6.killswitch.KillSwitch.status` of every kill-switch state file (live,
    testnet, dry-run, replays), with ``label``, ``mode``, ``entries_allowed`` (a timed
    pause that is due counts as allowed: the next call resumes it) and
    ``reset_command``. Unreadable files come back tripped (``state_unreadable``), as
    the executor sees them."""
    import logging

    from S6.killswitch import RESET_COMMAND, STATE_FILE, KillSwitch

    base = _base(data_dir)
    live = state_path(STATE_FILE, data_dir=base)
    files = sorted(live.parent.glob("kill_switch*.json")) if live.parent.is_dir() else []
    replay_dir = state_path("replay", data_dir=base)
    files += sorted(replay_dir.glob("kill_switch*.json")) if replay_dir.is_dir() else []
    order = {"live": 0, "testnet": 1, "dry-run": 2}
    out = []
    logger = logging.getLogger("S6.killswitch")
    for p in files:
        if p.parent == replay_dir:
            mode = "dry-run replay"
            sym, _, ivl = p.stem.removeprefix("kill_switch_").rpartition("_")
            label = f"replay {sym.upper()} {ivl}".strip()
        else:
            tag = p.stem.removeprefix("kill_switch").lstrip("_") or "live"
            mode = {"dryrun": "dry-run"}.get(tag, tag)
            label = mode
        old = logger.level
        logger.setLevel(logging.CRITICAL)  # an unreadable file is shown, not logged on every rerun
        try:
            status = KillSwitch(path=p).status()
        finally:
            logger.setLevel(old)
        now = pd.Timestamp.now(tz="UTC")
        due = status["until"] is not None and pd.Timestamp(status["until"]) <= now
        status.update(label=label, mode=mode, entries_allowed=(not status["tripped"]) or due,
                      reset_command=RESET_COMMAND if p == live else f"{RESET_COMMAND} --state {p}")
        out.append(status)
    return sorted(out, key=lambda s: (order.get(s["mode"], 3), s["label"]))


def has_any_data(*, data_dir: Path | None = None) -> bool:
    """True when the data directory holds anything the dashboard can show."""
    base = _base(data_dir)
    if not base.is_dir():
        return False
    return bool(list(base.glob("*.parquet")) or list(base.glob("*_realtime.db")) or list(base.glob("*_backtest.json"))
                or orders_log_path(data_dir=base).is_file() or list(state_path("", data_dir=base).glob("*.json"))
                or list(state_path("", data_dir=base).glob("s7_*.db")))


# ------------------------------------------------------------------- overview
def overview(*, data_dir: Path | None = None, coverage: pd.DataFrame | None = None) -> dict[str, Any]:
    """The figures of the dashboard's top row: datasets (and how many are simulated),
    the newest backtest's total return, the latest sentiment score, open positions,
    and which kill-switches are tripped."""
    cov = coverage_table(data_dir=data_dir) if coverage is None else coverage
    out: dict[str, Any] = {"datasets": len(cov), "simulated": int(cov["simulated"].eq(True).sum()) if len(cov) else 0,
                           "backtest": None, "total_return": None, "backtest_simulated": None, "sentiment": None,
                           "open_positions": 0, "kill_switches": 0, "tripped": []}
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
        try:
            frame = read_parquet(files[0][1], columns=["sentiment_score"])
            out["sentiment"] = float(frame["sentiment_score"].iloc[-1]) if len(frame) else None
        except (OSError, ValueError, KeyError):  # the coverage table shows the file as unreadable
            out["sentiment"] = None
    out["open_positions"] = int(sum(p.is_open for st in executor_states(data_dir=data_dir) for p in st.positions))
    switches = kill_switch_states(data_dir=data_dir)
    out["kill_switches"] = len(switches)
    out["tripped"] = [k["label"] for k in switches if not k["entries_allowed"]]
    return out


# -------------------------------------------------------------------- figures
EQUITY_COLOR, BH_COLOR, DD_COLOR = "#1565c0", "#9e9e9e", "#c62828"
SCORE_COLOR, ITEMS_COLOR = "#6a1b9a", "#b0bec5"


def equity_figure(bt: Backtest, *, height: int = 520):
    """Equity (and buy-and-hold when the price file is there) over the drawdown, one time axis."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    title = f"{bt.ref.symbol} {bt.ref.interval} {bt.ref.days}d" + (" (simulated market)" if bt.ref.simulated else "")
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.72, 0.28],
                        subplot_titles=[f"{title}: equity", "drawdown"])
    if bt.equity is not None and len(bt.equity):
        fig.add_trace(go.Scatter(x=bt.equity.index, y=bt.equity.to_numpy(), name="equity",
                                 line=dict(color=EQUITY_COLOR, width=1.6)), row=1, col=1)
        if bt.buy_and_hold is not None:
            fig.add_trace(go.Scatter(x=bt.buy_and_hold.index, y=bt.buy_and_hold.to_numpy(), name="buy and hold",
                                     line=dict(color=BH_COLOR, width=1.2, dash="dot")), row=1, col=1)
        dd = drawdown(bt.equity, bt.init_cash)
        fig.add_trace(go.Scatter(x=dd.index, y=-dd.to_numpy(), name="drawdown", fill="tozeroy",
                                 line=dict(color=DD_COLOR, width=1)), row=2, col=1)
        fig.update_yaxes(tickformat=".0%", row=2, col=1)
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=60, b=10), hovermode="x unified",
                      legend=dict(orientation="h", yanchor="bottom", y=1.04, x=0))
    return fig


def sentiment_figure(frame: pd.DataFrame, *, simulated: bool | None = None, height: int = 330):
    """``sentiment_score`` (line, [-1, 1]) and ``n_items`` (bars, right axis)."""
    import plotly.graph_objects as go

    fig = go.Figure()
    if "n_items" in frame.columns:
        fig.add_trace(go.Bar(x=frame.index, y=frame["n_items"].to_numpy(), name="items", yaxis="y2",
                             marker_color=ITEMS_COLOR, opacity=0.6))
    fig.add_trace(go.Scatter(x=frame.index, y=frame["sentiment_score"].to_numpy(), name="sentiment score",
                             line=dict(color=SCORE_COLOR, width=1.5)))
    fig.add_hline(y=0, line=dict(color="#757575", width=1, dash="dash"))
    fig.update_layout(height=height, margin=dict(l=10, r=10, t=40, b=10), hovermode="x unified",
                      title="sentiment score" + (" (simulated market)" if simulated else ""),
                      yaxis=dict(range=[-1.05, 1.05], title="score"),
                      yaxis2=dict(overlaying="y", side="right", title="items", showgrid=False, rangemode="tozero"),
                      legend=dict(orientation="h", yanchor="bottom", y=1.02, x=0.4))
    return fig


__all__ = ["COVERAGE_COLUMNS", "SIMULATED_LABEL", "Backtest", "BacktestRef", "ExecutorState",
           "IndicatorSource", "backtest_runs", "commands", "coverage_table", "drawdown", "equity_figure",
           "executor_states", "fills_label", "first_market", "has_any_data", "indicator_sources",
           "kill_switch_states", "load_backtest", "load_indicators", "metric_rows", "order_events",
           "orders_table", "overview", "positions_table", "read_sentiment", "sentiment_figure",
           "sentiment_files", "sentiment_summary", "simulated_text"]
