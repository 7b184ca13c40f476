"""What the data directory holds, for the S7 dashboard (no Streamlit): the coverage
table of every dataset file, the sentiment files, the commands that create missing
outputs, and the ``SIMULATED`` wording shared by every panel.

File names are never parsed here by hand: datasets through
:func:`S1.datasets.parse_dataset_name`, S3's files through
:func:`S1.datasets.sentiment_path` / :func:`~S1.datasets.sentiment_asset_paths` /
:func:`~S1.datasets.news_items_path`; the commands come from the sprints that own
them (S1, S4, S5).

>>> import tempfile
>>> empty = Path(tempfile.mkdtemp())
>>> coverage_table(data_dir=empty).empty, sentiment_files(data_dir=empty), has_any_data(data_dir=empty)
(True, [], False)
>>> simulated_text(True), simulated_text(False), simulated_text(None)
('SIMULATED', 'real', 'not recorded')
"""

from __future__ import annotations

import sqlite3
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from S1.datasets import (
    Dataset,
    KINDS,
    history_command,
    indicators_command,
    news_items_path,
    orders_log_path,
    parse_dataset_name,
    read_metadata,
    read_parquet,
    sentiment_asset_paths,
    sentiment_path,
    state_path,
)
from S1.datasets import data_dir as _data_dir
from S1.errors import UserError
from S1.history import find_gaps
from S1.intervals import INTERVALS
from S1.stream_store import database_simulated

#: Columns of :func:`coverage_table`.
COVERAGE_COLUMNS = ("file", "kind", "market", "interval", "rows", "first", "last", "gaps", "missing",
                    "simulated", "gap_ranges", "size_mb", "modified", "note")
#: Kinds whose rows are candles (one per open time), so gaps can be counted.
TIMED_KINDS = ("candles", "ta", "signals", "ml", "equity", "sentiment", "stream")
SIMULATED_LABEL = "SIMULATED"
DEFAULT_MARKET = ("BTCUSDT", "1h", 365)


def simulated_text(flag: bool | None) -> str:
    """How a ``simulated`` metadata flag is shown: ``SIMULATED`` / ``real`` / ``not recorded``
    (numpy / pandas booleans as Python's: a column of flags is often of a bool dtype)."""
    if flag is None or pd.isna(flag):
        return "not recorded"
    return SIMULATED_LABEL if bool(flag) else "real"


def simulated_flag(path: Path) -> bool | None:
    """The ``simulated`` flag of a Parquet file's toolkit metadata: None when the file
    does not record it (or cannot be read)."""
    try:
        meta = read_metadata(path)
    except (OSError, ValueError, UserError):  # unreadable: the coverage table and its section say so
        return None
    return bool(meta["simulated"]) if "simulated" in meta else None


# ------------------------------------------------------------------- commands
def commands(symbol: str = DEFAULT_MARKET[0], interval: str = DEFAULT_MARKET[1],
             days: int = DEFAULT_MARKET[2]) -> dict[str, str]:
    """The commands that create each kind of output for one market (shown when it is missing).

    >>> c = commands("ethusdc", "4h", 90)
    >>> c["backtest"]
    'python S5/backtest.py --symbol ETHUSDC --interval 4h --days 90'
    >>> c["signals"]
    'python S4/decision.py --symbol ETHUSDC --interval 4h --days 90 --rules S4/rules.yaml'
    """
    from S4.signals import sentiment_command
    from S5.backtest_files import backtest_command, signals_command

    ds = Dataset(symbol, interval, days)
    s, d = ds.symbol, ds.days
    since = pd.Timestamp.now(tz="UTC") - pd.Timedelta(days=d)
    return {
        "all": "make demo",
        "offline": "make demo ARGS=--offline",
        "history": history_command(ds),
        "indicators": indicators_command(ds),
        "sentiment": sentiment_command(interval, since),
        "signals": signals_command(ds),
        "backtest": backtest_command(ds),
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


def has_any_data(*, data_dir: Path | None = None) -> bool:
    """True when the data directory holds anything the dashboard can show (a replay's
    state under ``data/state/replay/`` included)."""
    base = _data_dir(data_dir)
    if not base.is_dir():
        return False
    states = (state_path("", data_dir=base), state_path("replay", data_dir=base))
    return bool(list(base.glob("*.parquet")) or list(base.glob("*_realtime.db")) or list(base.glob("*_backtest.json"))
                or orders_log_path(data_dir=base).is_file()
                or any(list(d.glob("*.json")) or list(d.glob("s7_*.db")) for d in states))



# ------------------------------------------------------------------ sentiment
def sentiment_files(*, data_dir: Path | None = None) -> list[tuple[str, Path]]:
    """``[(interval, path)]`` of the S3 market-wide sentiment files present (paths from
    :func:`S1.datasets.sentiment_path`), shortest interval first."""
    base = _data_dir(data_dir)
    out = []
    for interval in INTERVALS:
        p = sentiment_path(interval, data_dir=base)
        if p.is_file():
            out.append((interval, p))
    return out


# ------------------------------------------------------------------- coverage
def signature(path: Path) -> tuple[int, int]:
    """(mtime_ns, size): a file version, the key of the per-file caches."""
    st = path.stat()
    return st.st_mtime_ns, st.st_size


def read_columns(path: Path, columns: list[str]) -> pd.DataFrame:
    """These columns as plain columns (an index column among them comes back as one)."""
    df = read_parquet(path, columns=columns)
    return df.reset_index() if df.index.name in columns else df


def _gap_text(gaps: list) -> str:
    return "; ".join(str(g) for g in gaps[:3]) + (" ..." if len(gaps) > 3 else "")


@lru_cache(maxsize=512)
def _parquet_summary(path: str, mtime_ns: int, size: int, interval: str | None) -> dict[str, Any]:
    """Rows, first/last time, gaps and the simulated flag of one Parquet file (cached per version)."""
    from S1.storage import as_path, is_remote

    p = as_path(path)   # DATA_DIR=s3://...: the object, its footer read through one handle
    out: dict[str, Any] = {"rows": None, "first": pd.NaT, "last": pd.NaT, "gaps": None, "missing": None,
                           "simulated": None, "gap_ranges": "", "note": ""}
    try:
        if is_remote(p):
            with p.open("rb") as fh:
                meta = pq.ParquetFile(fh).metadata
                out["rows"], names = int(meta.num_rows), set(meta.schema.to_arrow_schema().names)
        else:
            pf = pq.ParquetFile(p)
            out["rows"], names = int(pf.metadata.num_rows), set(pf.schema_arrow.names)
        out["simulated"] = simulated_flag(p)
        times = None
        for col in ("open_time", "published_at"):
            if col in names:
                times = pd.DatetimeIndex(read_columns(p, [col])[col]).sort_values()
                break
        if times is not None and len(times):
            out["first"], out["last"] = times[0], times[-1]
            if interval is not None and col == "open_time":
                gaps = find_gaps(times.unique(), interval)
                out["gaps"], out["missing"] = len(gaps), int(sum(g.missing for g in gaps))
                out["gap_ranges"] = _gap_text(gaps)
        elif {"entry_time", "exit_time"} <= names:
            tr = read_columns(p, ["entry_time", "exit_time"])
            if len(tr):
                out["first"], out["last"] = tr["entry_time"].min(), tr["exit_time"].max()
    except Exception as exc:  # one unreadable file must not hide the others
        out["note"] = f"unreadable: {type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
    return out


@lru_cache(maxsize=64)
def _stream_summary(path: str, version: tuple) -> tuple[dict[str, Any], ...]:
    """One row per market of a streamer SQLite file (closed candles), read-only.

    One query for every market of the file (S1.stream_store.read_klines reads one
    market's whole candles; only the open times are needed here)."""
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
                     "gap_ranges": _gap_text(gaps), "note": "streamer SQLite (closed candles)"})
    return tuple(rows)


def _file_columns(p: Path) -> dict[str, Any]:
    st = p.stat()
    return {"size_mb": round(st.st_size / 1e6, 3), "modified": pd.Timestamp(st.st_mtime, unit="s", tz="UTC")}


def coverage_table(*, data_dir: Path | None = None) -> pd.DataFrame:
    """Every dataset in the data directory, one row each (see :data:`COVERAGE_COLUMNS`).

    ``simulated`` is the file's metadata flag (None when the file does not record it);
    ``gaps``/``missing`` count missing candles between the first and last open time
    (:func:`S1.history.find_gaps`) for time-indexed kinds; an unreadable file gets a
    ``note`` instead of raising. Sorted by kind order, then file name.
    """
    base = _data_dir(data_dir)
    rows: list[dict[str, Any]] = []
    if base.is_dir():
        sentiment_names = {p.name: (interval, "all symbols") for interval, p in sentiment_files(data_dir=base)}
        for interval in {iv for iv, _ in sentiment_names.values()}:
            for asset, p in sentiment_asset_paths(interval, data_dir=base).items():
                sentiment_names[p.name] = (interval, f"{asset} news")
        news = news_items_path(data_dir=base).name
        for p in sorted(base.glob("*.parquet")):
            if p.name.startswith("."):
                continue  # temp files of atomic writes
            parsed = parse_dataset_name(p.name)
            if parsed is not None:
                kind, market, interval = parsed.kind, parsed.label, parsed.interval
            elif p.name in sentiment_names:
                kind, (interval, market) = "sentiment", sentiment_names[p.name]
            elif p.name == news:
                kind, market, interval = "news", "all symbols", None
            else:
                kind, market, interval = "other", "", None
            info = _parquet_summary(str(p), *signature(p), interval if kind in TIMED_KINDS else None)
            rows.append({"file": p.name, "kind": kind, "market": market, "interval": interval, **info,
                         **_file_columns(p)})
        for p in sorted(base.glob("*_realtime.db")):
            wal = p.with_name(p.name + "-wal")
            version = (signature(p), signature(wal) if wal.exists() else None)
            for info in _stream_summary(str(p), version):
                rows.append({"file": p.name, "kind": "stream", "simulated": database_simulated(p),
                             **_file_columns(p), **info})
    out = pd.DataFrame(rows, columns=list(COVERAGE_COLUMNS))
    if len(out):
        order = {k: i for i, k in enumerate([*KINDS, "sentiment", "news", "stream", "other"])}
        out = out.sort_values(["file", "market"], kind="stable")
        out = out.iloc[np.argsort(out["kind"].map(order).to_numpy(), kind="stable")].reset_index(drop=True)
        for c in ("rows", "gaps", "missing"):
            out[c] = out[c].astype("Int64")
    return out


__all__ = ["COVERAGE_COLUMNS", "DEFAULT_MARKET", "SIMULATED_LABEL", "TIMED_KINDS", "commands", "coverage_table",
           "first_market", "has_any_data", "read_columns", "sentiment_files", "signature", "simulated_flag",
           "simulated_text"]
