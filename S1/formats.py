"""Candle exports: CSV (optionally gzip), Feather, SQLite -- and readers that give the
exact candles back. Parquet stays the format the sprints chain through; these are for
spreadsheets, R, other tools and databases.

- **CSV**: header ``open_time,open,...,taker_buy_quote``; times ISO 8601 UTC with
  milliseconds (``2024-01-01 00:00:00.000Z``); floats in shortest round-trip form (a
  re-read gives the same bits); NaN as an empty field. Written by ``pyarrow.csv``
  into memory, then atomically (temp file + rename). ``.csv.gz`` is gzip-compressed.
- **Feather** (Arrow IPC, zstd): the Parquet file's table and metadata, via pyarrow.
- **SQLite**: table ``candles`` -- ``exchange, symbol, interval, open_time`` (ms UTC)
  as the primary key, the candle columns (times INTEGER ms, prices REAL, trades
  INTEGER) -- upserted in one transaction (a failed export leaves the database as it
  was), plus an index on ``open_time`` for time-range queries over all markets. Many
  datasets can share one database (``--export-out data/candles.sqlite``).

>>> import tempfile, pathlib
>>> from S1.offline import simulate_candles
>>> df = simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-02")
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> for name in ("x.csv", "x.csv.gz", "x.feather"):
...     p = export_candles(df, d / name, symbol="BTCUSDT", interval="1h")
...     assert read_export(p).equals(df)
>>> p = export_candles(df, d / "x.sqlite", symbol="BTCUSDT", interval="1h")
>>> read_export(p, symbol="BTCUSDT", interval="1h").equals(df)
True
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.feather as feather

from S1.datasets import (
    CANDLE_COLUMNS,
    CANDLE_SCHEMA,
    EXPORT_EXTENSIONS,
    META_KEY,
    atomic_write_bytes,
    candles_from_arrays,
    empty_candles,
    normalize_symbol,
    validate_candles,
    write_parquet,
)
from S1.errors import UserError
from S1.intervals import check_interval
from S1.storage import as_path, is_remote

FORMATS = tuple(EXPORT_EXTENSIONS)
_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".gz": "csv", ".feather": "feather", ".arrow": "feather",
             ".sqlite": "sqlite", ".sqlite3": "sqlite", ".db": "sqlite"}

SQLITE_COLUMNS = ("exchange", "symbol", "interval", "open_time", "close_time", "open", "high", "low", "close",
                  "volume", "quote_volume", "trades", "taker_buy_base", "taker_buy_quote")
SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS candles (
    exchange        TEXT    NOT NULL,
    symbol          TEXT    NOT NULL,
    interval        TEXT    NOT NULL,
    open_time       INTEGER NOT NULL,
    close_time      INTEGER NOT NULL,
    open            REAL    NOT NULL,
    high            REAL    NOT NULL,
    low             REAL    NOT NULL,
    close           REAL    NOT NULL,
    volume          REAL,
    quote_volume    REAL,
    trades          INTEGER NOT NULL,
    taker_buy_base  REAL,
    taker_buy_quote REAL,
    PRIMARY KEY (exchange, symbol, interval, open_time)
) WITHOUT ROWID;
"""
SQLITE_INDEX = "CREATE INDEX IF NOT EXISTS candles_open_time ON candles (open_time)"
_UPSERT = (f"INSERT INTO candles ({', '.join(SQLITE_COLUMNS)}) VALUES ({', '.join('?' * len(SQLITE_COLUMNS))}) "
           "ON CONFLICT (exchange, symbol, interval, open_time) DO UPDATE SET "
           + ", ".join(f"{c} = excluded.{c}" for c in SQLITE_COLUMNS[4:]))


def format_of(path: Path | str) -> str:
    """The export format a file name implies (``x.csv.gz`` -> ``csv``)."""
    suffix = as_path(path).suffix.lower()
    if suffix == ".gz" and not str(path).lower().endswith(".csv.gz"):
        suffix = ""
    if suffix not in _SUFFIXES:
        raise UserError(f"cannot tell the format of {path}",
                        "use a .parquet, .csv, .csv.gz, .feather or .sqlite file name")
    return _SUFFIXES[suffix]


def candle_table(df: pd.DataFrame, *, metadata: dict[str, Any] | None = None) -> pa.Table:
    """A validated candle frame as an Arrow table in :data:`S1.datasets.CANDLE_SCHEMA`."""
    df = validate_candles(df, what="candles to export").loc[:, list(CANDLE_COLUMNS)]
    table = pa.Table.from_pandas(df, preserve_index=True).select(CANDLE_SCHEMA.names)
    table = table.cast(CANDLE_SCHEMA.with_metadata(table.schema.metadata))
    if metadata:
        meta = dict(table.schema.metadata or {})
        meta[META_KEY] = json.dumps(metadata, default=str).encode()
        table = table.replace_schema_metadata(meta)
    return table


def _frame(table: pa.Table, what: str) -> pd.DataFrame:
    missing = [c for c in CANDLE_SCHEMA.names if c not in table.column_names]
    if missing:
        raise UserError(f"{what}: missing columns {missing}", "export it again with S1/historical.py --format ...")
    table = table.select(CANDLE_SCHEMA.names).cast(CANDLE_SCHEMA)
    df = table.to_pandas().set_index("open_time")
    df.index = df.index.as_unit("ns")
    df["close_time"] = df["close_time"].dt.as_unit("ns")
    return validate_candles(df, what=what)


# --------------------------------------------------------------------------- CSV
_CSV_WRITE = pacsv.WriteOptions(include_header=True, quoting_style="needed", quoting_header="none")


def write_csv(df: pd.DataFrame, path: Path | str, *, gzip: bool | None = None) -> Path:
    """Write candles as CSV atomically; ``gzip`` defaults to the ``.gz`` suffix."""
    path = as_path(path)
    gzip = str(path).lower().endswith(".gz") if gzip is None else gzip
    sink = pa.BufferOutputStream()
    stream = pa.CompressedOutputStream(sink, "gzip") if gzip else sink
    pacsv.write_csv(candle_table(df), stream, write_options=_CSV_WRITE)
    if gzip:
        stream.close()
    return atomic_write_bytes(path, sink.getvalue().to_pybytes())


def read_csv(path: Path | str) -> pd.DataFrame:
    """Candles from a CSV written by :func:`write_csv` (``.gz`` decompressed)."""
    path = _existing(path)
    try:
        table = pacsv.read_csv(_source(path), convert_options=pacsv.ConvertOptions(
            column_types={f.name: f.type for f in CANDLE_SCHEMA}, strings_can_be_null=False))
    except pa.ArrowInvalid as exc:
        raise UserError(f"{path} is not a candle CSV ({str(exc).splitlines()[0]})",
                        "export it with S1/historical.py --format csv") from None
    return _frame(table, str(path))


# ----------------------------------------------------------------------- Feather
def write_feather(df: pd.DataFrame, path: Path | str, *, metadata: dict[str, Any] | None = None) -> Path:
    """Write candles as Feather v2 (Arrow IPC, zstd) atomically, toolkit metadata kept."""
    sink = pa.BufferOutputStream()
    feather.write_feather(candle_table(df, metadata=metadata), sink, compression="zstd")
    return atomic_write_bytes(as_path(path), sink.getvalue().to_pybytes())


def read_feather(path: Path | str) -> pd.DataFrame:
    path = _existing(path)
    try:
        table = feather.read_table(_source(path))
    except (pa.ArrowInvalid, OSError) as exc:
        raise UserError(f"{path} is not a Feather file ({str(exc).splitlines()[0]})",
                        "export it with S1/historical.py --format feather") from None
    return _frame(table, str(path))


# ------------------------------------------------------------------------ SQLite
def _connect(path: Path) -> sqlite3.Connection:
    fix = "pass a new .sqlite file or one written by S1/historical.py --format sqlite"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        con = sqlite3.connect(path, timeout=30)
        con.executescript(SQLITE_SCHEMA)
        cols = tuple(r[1] for r in con.execute("PRAGMA table_info(candles)"))
    except (sqlite3.DatabaseError, OSError) as exc:
        raise UserError(f"cannot write the database {path} ({exc})", fix) from None
    if cols != SQLITE_COLUMNS:
        con.close()
        raise UserError(f"{path} has a 'candles' table with other columns ({', '.join(cols)})", fix)
    con.execute(SQLITE_INDEX)
    return con


def write_sqlite(df: pd.DataFrame, path: Path | str, *, symbol: str, interval: str,
                 exchange: str | None = "binance") -> int:
    """Upsert candles into ``path``'s ``candles`` table in one transaction; returns rows written."""
    if is_remote(path):
        raise UserError(f"{path}: a SQLite export is written on this machine, not in the bucket",
                        "pass --export-out with a local .sqlite file")
    path = Path(path)
    symbol, interval = normalize_symbol(symbol), check_interval(interval)
    exchange = (exchange or "binance").lower()
    df = validate_candles(df, what="candles to export")
    n = len(df)
    columns = [[exchange] * n, [symbol] * n, [interval] * n, df.index.as_unit("ms").asi8.tolist(),
               pd.DatetimeIndex(df["close_time"]).as_unit("ms").asi8.tolist()]
    columns += [df[c].to_numpy(dtype=np.float64).tolist() for c in SQLITE_COLUMNS[5:11]]
    columns += [df["trades"].to_numpy(dtype=np.int64).tolist()]
    columns += [df[c].to_numpy(dtype=np.float64).tolist() for c in SQLITE_COLUMNS[12:]]
    rows = list(zip(*columns))
    con = _connect(path)
    try:
        with con:  # BEGIN ... COMMIT, ROLLBACK on any error
            con.executemany(_UPSERT, rows)
    except sqlite3.DatabaseError as exc:
        raise UserError(f"cannot write the database {path} ({exc})", "check the file and the disk space") from None
    finally:
        con.close()
    return len(rows)


def read_sqlite(path: Path | str, *, symbol: str | None = None, interval: str | None = None,
                exchange: str | None = None) -> pd.DataFrame:
    """Candles of one market from a database written by :func:`write_sqlite`. ``symbol``,
    ``interval`` and ``exchange`` may be left out when the table holds only one of each."""
    path = _existing(path)
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
        try:
            markets = con.execute("SELECT DISTINCT exchange, symbol, interval FROM candles").fetchall()
            want = [m for m in markets
                    if (exchange is None or m[0] == exchange.lower())
                    and (symbol is None or m[1] == normalize_symbol(symbol))
                    and (interval is None or m[2] == interval)]
            if len(want) != 1:
                listed = ", ".join("/".join(m) for m in markets[:8]) or "none"
                raise UserError(f"{path}: {len(want)} markets match (the table holds {listed})",
                                "pass symbol=, interval= and exchange= to pick one")
            rows = con.execute(
                "SELECT open_time, open, high, low, close, volume, close_time, quote_volume, trades, "
                "taker_buy_base, taker_buy_quote FROM candles WHERE exchange=? AND symbol=? AND interval=? "
                "ORDER BY open_time", want[0]).fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise UserError(f"{path}: cannot read the candles table ({exc})",
                        "point at a database written by S1/historical.py --format sqlite") from None
    if not rows:
        return empty_candles()
    arr = np.array(rows, dtype=np.float64)  # NULL -> NaN
    return validate_candles(candles_from_arrays(arr), what=str(path))


# ------------------------------------------------------------------- dispatchers
def export_candles(df: pd.DataFrame, path: Path | str, *, fmt: str | None = None, symbol: str, interval: str,
                   exchange: str | None = None, metadata: dict[str, Any] | None = None) -> Path:
    """Write candles to ``path`` in ``fmt`` (default: from the file name); returns the path."""
    path = as_path(path)
    fmt = fmt or format_of(path)
    if fmt == "csv":
        return write_csv(df, path)
    if fmt == "feather":
        return write_feather(df, path, metadata=metadata)
    if fmt == "sqlite":
        write_sqlite(df, path, symbol=symbol, interval=interval, exchange=exchange)
        return path
    if fmt == "parquet":
        return write_parquet(validate_candles(df), path, metadata=metadata)
    raise UserError(f"unknown --format {fmt!r}", f"use one of {', '.join(FORMATS)}")


def export_dataset(dataset: Path | str, fmt: str, *, gzip: bool = False, out: Path | str | None = None) -> Path:
    """Export an S1 candle file (``data/<stem>.parquet``) to ``data/<stem>.csv[.gz]|.feather|.sqlite``
    (or ``out``); the market comes from the file's metadata. Returns the export's path."""
    from S1.ccxt_source import Venue
    from S1.datasets import read_candles, read_metadata

    dataset = as_path(dataset)
    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}", f"use one of {', '.join(FORMATS)}")
    if gzip and fmt != "csv":
        raise UserError(f"--gzip applies to --format csv only, not {fmt}", "drop --gzip or use --format csv")
    df = read_candles(dataset)
    meta = read_metadata(dataset)
    if out is None:
        out = dataset.with_name(dataset.stem + EXPORT_EXTENSIONS[fmt] + (".gz" if gzip else ""))
        if fmt == "sqlite" and is_remote(out):   # SQLite stays on this machine (LOCAL_STATE_DIR)
            from S1.datasets import local_dir

            out = local_dir() / out.name
    out = as_path(out)
    if fmt == "csv" and gzip != str(out).lower().endswith(".gz"):
        raise UserError(f"--export-out {out} and --gzip disagree", "name the file .csv.gz with --gzip, .csv without")
    if out.resolve() == dataset.resolve():
        raise UserError(f"--export-out {out} is the dataset itself", "pick another file name")
    if not meta.get("symbol") or not meta.get("interval"):
        raise UserError(f"{dataset} does not say which market it holds (no S1 metadata)",
                        "re-create it with S1/historical.py, or use S1.formats.export_candles(df, path, symbol=, interval=)")
    venue = Venue(meta.get("exchange", "binance"), meta.get("market", "spot"), meta.get("price", "last"))
    return export_candles(df, out, fmt=fmt, symbol=meta["symbol"], interval=meta["interval"],
                          exchange=venue.token or "binance", metadata=meta)


def read_export(path: Path | str, **market) -> pd.DataFrame:
    """Candles back from any export (``symbol=``/``interval=``/``exchange=`` for SQLite)."""
    fmt = format_of(path)
    if fmt == "csv":
        return read_csv(path)
    if fmt == "feather":
        return read_feather(path)
    if fmt == "sqlite":
        return read_sqlite(path, **market)
    from S1.datasets import read_candles

    return read_candles(as_path(path))


def _source(path):
    """What pyarrow reads: the file, or an object's body fetched in one GET (DATA_DIR=s3://)."""
    if not is_remote(path):
        return path
    body = pa.BufferReader(path.read_bytes())
    return pa.CompressedInputStream(body, "gzip") if str(path).lower().endswith(".gz") else body


def _existing(path: Path | str) -> Path:
    path = as_path(path)
    if not path.is_file():
        raise UserError(f"{path} does not exist", "export it first: python S1/historical.py ... --format csv")
    return path


__all__ = ["FORMATS", "export_candles", "export_dataset", "read_export", "write_csv", "read_csv", "write_feather", "read_feather",
           "write_sqlite", "read_sqlite", "format_of", "candle_table"]
