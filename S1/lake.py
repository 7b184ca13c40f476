"""SQL over everything in ``data/``: DuckDB views on the Parquet datasets, the SQLite
databases attached, and a few lake-wide views.

What a connection from :func:`connect` holds (all times UTC):

- one **view per Parquet file**, named after its dataset: ``btcusdt_1h_365d``,
  ``btcusdt_1h_365d_ta``, ``btcusdt_1h_365d_signals``, ``sentiment_1h``,
  ``okx_swap_btcusdt_1h_30d`` (characters other than letters, digits and ``_``
  become ``_``). DuckDB reads the files in place, lazily, in parallel;
- ``candles``: every candle dataset in one view, with ``exchange, symbol, interval,
  days`` in front of the candle columns (``exchange`` is the venue: ``binance``,
  ``okx``, ``okx-swap-mark`` ...). When one market has several files (``_30d`` and
  ``_365d``) each candle appears once, taken from the longest window;
- ``datasets``: one row per Parquet file -- view name, kind, market, path, rows,
  and the coverage / gaps / simulated flag recorded by S1;
- ``lake``: every partition of the 1m lake and its derived intervals
  (``data/lake/<exchange>/<market>/<SYMBOL>/<interval>/<YYYY-MM>.parquet``, :mod:`S1.lake_store`)
  with ``exchange, market, symbol, interval, month`` taken from the path in front of the candle columns;
- SQL macros for fast UTC buckets (TIMESTAMPTZ in, TIMESTAMPTZ out): ``utc_minute(t)``,
  ``utc_hour(t)``, ``utc_day(t)``, ``utc_week(t)`` (Monday, as Binance) and
  ``utc_bucket(t, INTERVAL 4 HOUR)`` -- the same result as ``date_trunc`` in UTC, about
  five times faster (``date_trunc`` on a TIMESTAMPTZ goes through ICU calendars);
- each **SQLite database** (``*.db`` -- the streamer's ``btcusdt_1m_realtime.db`` --
  and ``*.sqlite`` exports) as a schema named after the file:
  ``SELECT * FROM btcusdt_1m_realtime.kline`` (one view per SQLite table, same names
  and columns either way). DuckDB's ``sqlite`` extension is loaded from the pip package
  ``duckdb-ext-sqlite`` (no network) and each file ATTACHed ``READ_ONLY``: queries read
  it live. Without the package (or an ``INSTALL sqlite`` done once online) each table
  is read once through Python's ``sqlite3`` (read-only) when the connection opens.
  ``tables(con)`` / ``sqlite_source(con)`` say which. SQLite date-time columns come out
  as UTC ``TIMESTAMPTZ`` both ways. Nothing is ever downloaded here.

>>> import tempfile, pathlib
>>> from S1.datasets import dataset_path, write_parquet
>>> from S1.offline import simulate_candles
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = write_parquet(simulate_candles("BTCUSDT", "1d", "2024-01-01", "2024-01-11"),
...                   dataset_path("BTCUSDT", "1d", 10, data_dir=d))
>>> query("SELECT symbol, count(*) AS n FROM candles GROUP BY symbol", data_dir=d)
    symbol   n
0  BTCUSDT  10
"""

from __future__ import annotations

import importlib.metadata
import logging
import os
import re
import sqlite3
import tempfile
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path

import pandas as pd

from S1.datasets import CANDLE_COLUMNS, parse_dataset_name, parquet_rows, read_metadata
from S1.errors import UserError
from S1.storage import is_remote

log = logging.getLogger(__name__)

SQLITE_SUFFIXES = (".db", ".sqlite", ".sqlite3")


@dataclass(frozen=True)
class LakeEntry:
    """One file of the lake and the name it has in SQL."""

    name: str
    kind: str            # candles, ta, signals, ml, equity, trades, sentiment, table, sqlite
    path: Path
    exchange: str | None = None
    symbol: str | None = None
    interval: str | None = None
    days: int | None = None


def sql_name(stem: str) -> str:
    """A plain SQL identifier for a file stem (``okx-swap_btcusdt_1h_30d`` -> ``okx_swap_btcusdt_1h_30d``)."""
    name = re.sub(r"[^a-z0-9_]", "_", stem.lower())
    return name if re.match(r"[a-z_]", name) else f"t_{name}"


def parse_stem(stem: str) -> dict | None:
    """``[venue_]symbol_interval_<days>d[_kind]`` -> its parts (None if not a dataset name)."""
    name = parse_dataset_name(f"{stem}.parquet")
    if name is None:
        return None
    return {"kind": name.kind, "exchange": name.exchange or "binance", "symbol": name.symbol,
            "interval": name.interval, "days": name.days}


def scan(data_dir: Path | None = None) -> list[LakeEntry]:
    """The Parquet and SQLite files directly in the data directory, with their SQL names."""
    from S1.datasets import data_dir as default_dir

    base = default_dir(data_dir)
    remote = is_remote(base)
    if not base.is_dir():
        return []
    entries, taken = [], set(_RESERVED)
    for p in sorted(base.iterdir()):
        # on S3 a listing holds objects and prefixes; a prefix has no .parquet suffix (no HEAD per object)
        if p.name.startswith(".") or (not remote and not p.is_file()):
            continue
        suffix = p.suffix.lower()
        if remote and suffix in SQLITE_SUFFIXES:
            continue   # SQLite databases stay on this machine (LOCAL_STATE_DIR), not in the bucket
        if suffix == ".parquet":
            parts = parse_stem(p.stem)
            if parts:
                entry = LakeEntry(sql_name(p.stem), parts.pop("kind"), p, **parts)
            else:
                kind = "sentiment" if p.stem.startswith("sentiment_") else "table"
                entry = LakeEntry(sql_name(p.stem), kind, p)
        elif suffix in SQLITE_SUFFIXES:
            entry = LakeEntry(sql_name(p.stem), "sqlite", p)
        else:
            continue
        name = entry.name
        i = 2
        while name in taken:
            name, i = f"{entry.name}_{i}", i + 1
        taken.add(name)
        entries.append(entry if name == entry.name else replace(entry, name=name))
    return entries


_RESERVED = {"candles", "datasets", "lake", "main", "information_schema", "pg_catalog", "temp", "system"}


#: UTC bucketing without ICU: ``date_trunc('day', <TIMESTAMPTZ>)`` goes through ICU's calendar
#: (time-zone aware) and is ~5x slower than integer arithmetic on the epoch microseconds.
MACROS = (
    ("CREATE MACRO utc_bucket(t, step) AS make_timestamptz("
     "epoch_us(t) // CAST(epoch(step) * 1000000 AS BIGINT) * CAST(epoch(step) * 1000000 AS BIGINT))"),
    "CREATE MACRO utc_minute(t) AS make_timestamptz(epoch_us(t) // 60000000 * 60000000)",
    "CREATE MACRO utc_hour(t) AS make_timestamptz(epoch_us(t) // 3600000000 * 3600000000)",
    "CREATE MACRO utc_day(t) AS make_timestamptz(epoch_us(t) // 86400000000 * 86400000000)",
    # weeks start on Monday 00:00 UTC, as Binance's 1w candles (1970-01-05 was a Monday)
    ("CREATE MACRO utc_week(t) AS make_timestamptz("
     "(epoch_us(t) - 345600000000) // 604800000000 * 604800000000 + 345600000000)"),
)


def _lit(path: Path | str) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def connect(data_dir: Path | None = None, *, sqlite: bool | str = True, threads: int | None = None):
    """A DuckDB connection (in memory) with the lake's views; see the module docstring.

    ``sqlite``: how the SQLite files are read -- ``"auto"`` (or True: attached through the
    sqlite extension when it loads, else a snapshot), ``"attach"`` (the extension or a
    :class:`UserError`), ``"snapshot"`` (read once now through Python's ``sqlite3``), or False
    (not at all). :func:`sqlite_source` tells which way a connection used."""
    import duckdb

    mode = {True: "auto", False: None}.get(sqlite, sqlite) if isinstance(sqlite, bool) else sqlite
    if mode is not None and mode not in SQLITE_MODES:
        raise UserError(f"sqlite={sqlite!r} is not a way to read the SQLite files",
                        f"use one of {', '.join(SQLITE_MODES)} (or False to skip them)")
    entries = scan(data_dir)
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False})
    from S1.datasets import data_dir as default_dir

    if is_remote(default_dir(data_dir)):
        _s3_access(con)
    con.execute("SET TimeZone = 'UTC'")
    for macro in MACROS:
        con.execute(macro)
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    for e in entries:
        if e.kind != "sqlite":
            con.execute(f"CREATE VIEW {_ident(e.name)} AS SELECT * FROM read_parquet({_lit(e.path)})")
    _candles_view(con, [e for e in entries if e.kind == "candles"])
    _lake_view(con, data_dir)
    _datasets_view(con, [e for e in entries if e.kind != "sqlite"])
    sources = []
    dbs = [e for e in entries if e.kind == "sqlite"] if mode else []
    if dbs:
        attach = mode != "snapshot" and _sqlite_extension(con)
        if mode == "attach" and not attach:
            con.close()
            raise UserError("DuckDB's sqlite extension is not available to attach the SQLite files",
                            f"pip install {SQLITE_EXTENSION_PACKAGE} with the duckdb it pins (see requirements.txt), "
                            "or leave --sqlite at auto to read them at connect")
        for e in dbs:
            source = _attach_sqlite(con, e, attach=attach)
            if source:
                sources.append((e.name, source, str(e.path)))
                log.debug("%s: %s (%s)", e.name, source, e.path)
    con.execute("CREATE TABLE __lake_sources (schema VARCHAR, source VARCHAR, path VARCHAR)")
    if sources:
        con.executemany("INSERT INTO __lake_sources VALUES (?, ?, ?)", sources)
    return con


def sqlite_source(con) -> dict[str, str]:
    """How each SQLite file of a :func:`connect` connection is read: ``{schema: source}`` with
    source :data:`SOURCE_ATTACH` (the sqlite extension, live) or :data:`SOURCE_SNAPSHOT`."""
    return dict(con.execute("SELECT schema, source FROM __lake_sources").fetchall())


def _candles_view(con, entries: list[LakeEntry]) -> None:
    cols = ", ".join(_ident(c) for c in ("open_time", *CANDLE_COLUMNS))
    by_market: dict[tuple, list[LakeEntry]] = {}
    for e in entries:
        by_market.setdefault((e.exchange, e.symbol, e.interval), []).append(e)
    selects = []
    for (exchange, symbol, interval), files in sorted(by_market.items()):
        parts = [f"SELECT {_lit(exchange)} AS exchange, {_lit(symbol)} AS symbol, {_lit(interval)} AS interval, "
                 f"{int(f.days)} AS days, {cols} FROM read_parquet({_lit(f.path)})" for f in files]
        if len(parts) == 1:
            selects.append(parts[0])
        else:  # one market in several windows: each candle once, from the longest window
            selects.append("SELECT * FROM (" + " UNION ALL ".join(parts) + ") QUALIFY row_number() OVER "
                           "(PARTITION BY open_time ORDER BY days DESC) = 1")
    if not selects:  # an empty view with the right columns, so queries still parse
        selects = ["SELECT NULL::VARCHAR AS exchange, NULL::VARCHAR AS symbol, NULL::VARCHAR AS interval, "
                   "NULL::INTEGER AS days, NULL::TIMESTAMPTZ AS open_time, "
                   + ", ".join(f"NULL::{'BIGINT' if c == 'trades' else 'TIMESTAMPTZ' if c == 'close_time' else 'DOUBLE'}"
                               f" AS {c}" for c in CANDLE_COLUMNS) + " WHERE false"]
    con.execute("CREATE VIEW candles AS " + " UNION ALL ".join(f"({s})" for s in selects))


def _lake_view(con, data_dir: Path | None) -> None:
    """``lake``: every partition of ``data/lake`` (:mod:`S1.lake_store`) in one view, with
    ``exchange, market, symbol, interval, month`` taken from the path
    (``lake/<exchange>/<market>/<SYMBOL>/<interval>/<YYYY-MM>.parquet``: not ``key=value``
    folders, so DuckDB's hive partitioning does not apply; the path is split instead)."""
    from S1.datasets import glob_escape, lake_dir

    base = lake_dir(data_dir=data_dir)
    cols = ", ".join(_ident(c) for c in ("open_time", *CANDLE_COLUMNS))
    if any(base.glob("*/*/*/*/*.parquet")):
        pattern = (f"{glob_escape(str(base))}/*/*/*/*/*.parquet" if is_remote(base) else
                   (Path(glob_escape(str(base))) / "*" / "*" / "*" / "*" / "*.parquet").as_posix())
        con.execute(
            "CREATE VIEW lake AS SELECT p[-5] AS exchange, p[-4] AS market, p[-3] AS symbol, "
            "CASE WHEN p[-2] = '1mo' THEN '1M' ELSE p[-2] END AS interval, replace(p[-1], '.parquet', '') AS month, "
            f"{cols} FROM (SELECT string_split(replace(filename, '\\', '/'), '/') AS p, * "
            f"FROM read_parquet({_lit(pattern)}, filename = true))")
        return
    con.execute("CREATE VIEW lake AS SELECT NULL::VARCHAR AS exchange, NULL::VARCHAR AS market, "
                "NULL::VARCHAR AS symbol, NULL::VARCHAR AS interval, NULL::VARCHAR AS month, "
                "NULL::TIMESTAMPTZ AS open_time, "
                + ", ".join(f"NULL::{'BIGINT' if c == 'trades' else 'TIMESTAMPTZ' if c == 'close_time' else 'DOUBLE'}"
                            f" AS {c}" for c in CANDLE_COLUMNS) + " WHERE false")


def _datasets_view(con, entries: list[LakeEntry]) -> None:
    rows = []
    for e in entries:
        meta, n = {}, None
        try:
            meta = read_metadata(e.path)
            n = parquet_rows(e.path)
        except Exception as exc:  # noqa: BLE001 - a foreign or broken file still gets its view
            meta = {"error": str(exc).splitlines()[0]}

        def ts(key, meta=meta):
            v = meta.get(key)
            return pd.Timestamp(int(v), unit="ms", tz="UTC") if v is not None else pd.NaT

        rows.append({"name": e.name, "kind": e.kind, "exchange": e.exchange, "symbol": e.symbol,
                     "interval": e.interval, "days": e.days, "rows": n,
                     "coverage_start": ts("coverage_start_ms"), "coverage_end": ts("coverage_end_ms"),
                     "gaps": len(meta.get("gaps", [])) if "gaps" in meta else None,
                     "simulated": meta.get("simulated"), "path": str(e.path)})
    cols = ["name", "kind", "exchange", "symbol", "interval", "days", "rows", "coverage_start", "coverage_end",
            "gaps", "simulated", "path"]
    df = pd.DataFrame(rows, columns=cols).astype({"days": "Int64", "rows": "Int64", "gaps": "Int64",
                                                   "simulated": "boolean"})
    for c in ("coverage_start", "coverage_end"):
        df[c] = pd.to_datetime(df[c], utc=True)
    con.register("__lake_datasets", df)
    con.execute("CREATE VIEW datasets AS SELECT * FROM __lake_datasets")


#: How the SQLite files of the lake are read (``connect(sqlite=...)``, ``query.py --sqlite``).
SQLITE_MODES = ("auto", "attach", "snapshot")
#: The pip package that ships DuckDB's ``sqlite`` extension (one wheel per DuckDB release and platform).
SQLITE_EXTENSION_PACKAGE = "duckdb-ext-sqlite"
SOURCE_ATTACH = "sqlite attached (live)"
SOURCE_SNAPSHOT = "sqlite snapshot (read at connect)"


@cache
def sqlite_extension_file(version: str, platform: str) -> Path | None:
    """The ``sqlite_scanner.duckdb_extension`` file of the pip package ``duckdb-ext-sqlite``
    built for DuckDB ``version`` on ``platform`` (``PRAGMA platform``), or None when the
    package is absent or holds no file for this DuckDB (the package pins ``duckdb==`` its
    release; a file for another release would not load)."""
    try:
        files = importlib.metadata.files(SQLITE_EXTENSION_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    want = ("extensions", f"v{version.lstrip('v')}", platform, "sqlite_scanner.duckdb_extension")
    found = [f for f in files if tuple(f.parts[-4:]) == want]
    if not found:
        shipped = sorted({"/".join(f.parts[-3:-1]) for f in files if f.name.endswith(".duckdb_extension")})
        _warn_once(f"{SQLITE_EXTENSION_PACKAGE} holds the sqlite extension for {', '.join(shipped) or 'nothing'}, "
                   f"not DuckDB v{version.lstrip('v')}/{platform}: SQLite files are read at connect instead -- "
                   f"reinstall with pip install -r requirements.txt (it pins the matching duckdb)")
        return None
    path = Path(found[0].locate())
    return path if path.is_file() else None


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning("%s", message)


def _sqlite_extension(con) -> bool:
    """Load DuckDB's ``sqlite`` extension into ``con`` without any network: first the file of
    the pip package ``duckdb-ext-sqlite`` (``LOAD '<path>'``), else an extension already
    installed in DuckDB's own extension directory (``INSTALL sqlite`` done once online).
    False when neither works (then the lake reads the SQLite files at connect)."""
    import duckdb

    try:
        platform = con.execute("PRAGMA platform").fetchall()[0][0]
    except duckdb.Error:
        platform = ""
    path = sqlite_extension_file(duckdb.__version__, platform)
    if path is not None:
        try:
            con.execute(f"LOAD {_lit(path)}")
            return True
        except duckdb.Error as exc:
            _warn_once(f"cannot load {path} ({str(exc).splitlines()[0]}): SQLite files are read at connect "
                       f"instead -- reinstall with pip install -r requirements.txt")
    try:
        rows = con.execute("SELECT installed FROM duckdb_extensions() WHERE extension_name = 'sqlite_scanner'"
                           ).fetchall()
        if rows and rows[0][0]:
            con.execute("LOAD sqlite")
            return True
    except duckdb.Error:
        pass
    return False


#: The pip package that ships DuckDB's ``httpfs`` extension (S3 reads when DATA_DIR is s3://).
HTTPFS_EXTENSION_PACKAGE = "duckdb-ext-httpfs"


def _s3_access(con) -> None:
    """Load DuckDB's ``httpfs`` extension from the pip package ``duckdb-ext-httpfs`` (no download at
    run time; else one installed in DuckDB's own directory) and add an S3 secret from settings
    (endpoint, keys, region, path-style URLs), so views can read ``s3://...``."""
    import duckdb

    from S1.storage import duckdb_secret_sql

    platform = con.execute("PRAGMA platform").fetchall()[0][0]
    want = ("extensions", f"v{duckdb.__version__.lstrip('v')}", platform, "httpfs.duckdb_extension")
    try:
        files = importlib.metadata.files(HTTPFS_EXTENSION_PACKAGE) or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    found = [Path(f.locate()) for f in files if tuple(f.parts[-4:]) == want]
    try:
        con.execute(f"LOAD {_lit(found[0])}" if found and found[0].is_file() else "LOAD httpfs")
    except duckdb.Error as exc:
        con.close()
        raise UserError(f"DuckDB cannot read s3:// without its httpfs extension ({str(exc).splitlines()[0]})",
                        f"pip install -r requirements.txt (it pins {HTTPFS_EXTENSION_PACKAGE} for the duckdb it pins)"
                        ) from None
    con.execute(duckdb_secret_sql())


def sqlite_type(declared: str | None) -> str:
    """The DuckDB type DuckDB's sqlite extension gives a column declared ``declared`` in SQLite
    (SQLite's affinity rules plus dates), so both ways of reading a file give the same columns.

    >>> [sqlite_type(t) for t in ("INTEGER", "REAL", "TEXT", "", "DATETIME", "DATE", "NUMERIC", "BOOLEAN")]
    ['BIGINT', 'DOUBLE', 'VARCHAR', 'BLOB', 'TIMESTAMP', 'DATE', 'DOUBLE', 'BIGINT']
    """
    t = (declared or "").strip().lower()
    if "int" in t or "bool" in t:
        return "BIGINT"
    if "char" in t or "clob" in t or "text" in t:
        return "VARCHAR"
    if "blob" in t or not t:
        return "BLOB"
    if "real" in t or "floa" in t or "doub" in t:
        return "DOUBLE"
    if t == "date":
        return "DATE"
    if "time" in t:
        return "TIMESTAMP"
    if "dec" in t or "num" in t:
        return "DOUBLE"
    return "VARCHAR"


def _column_sql(name: str, duck_type: str, *, cast: bool) -> str:
    """One column of a SQLite view: SQLite date-times as TIMESTAMPTZ in UTC (the lake's convention;
    a naive SQLite date-time is a UTC wall time), other columns as they are (``cast``: from the
    snapshot's text/number to the type the extension would give)."""
    col = _ident(name)
    if duck_type == "TIMESTAMP":
        return f"timezone('UTC', {f'CAST({col} AS TIMESTAMP)' if cast else col}) AS {col}"
    if cast and duck_type == "DATE":
        return f"CAST({col} AS DATE) AS {col}"
    return col


def _attach_sqlite(con, e: LakeEntry, *, attach: bool) -> str | None:
    """Expose the SQLite file ``e`` as schema ``e.name`` with one view per table (and SQLite view),
    same names and columns both ways: ``attach`` -- the file ATTACHed read-only through the
    extension (each query reads it live); else a snapshot read through Python's ``sqlite3`` now.
    Returns the way used (:data:`SOURCE_ATTACH` / :data:`SOURCE_SNAPSHOT`), None if unreadable."""
    import duckdb

    if attach:
        cat = f"__sqlite_{e.name}"
        try:
            con.execute(f"ATTACH {_lit(e.path.resolve())} AS {_ident(cat)} (TYPE sqlite, READ_ONLY)")
            names = [r[0] for r in con.execute("SELECT table_name FROM information_schema.tables "
                                               "WHERE table_catalog = ? ORDER BY table_name", [cat]).fetchall()]
            # DESCRIBE rather than information_schema.columns: it also types the columns of SQLite views
            described = {t: con.execute(f"DESCRIBE SELECT * FROM {_ident(cat)}.main.{_ident(t)}").fetchall()
                         for t in names}
            views = {t: f"SELECT {', '.join(_column_sql(r[0], r[1], cast=False) for r in cols)} "
                        f"FROM {_ident(cat)}.main.{_ident(t)}{_rowid_guard(con, cat, t, cols)}"
                     for t, cols in described.items()}
        except duckdb.Error as exc:
            # e.g. not a SQLite file, or a SQLite view whose SQL DuckDB's parser rejects (the extension
            # parses view definitions): the whole file is read at connect instead (it says why)
            con.execute(f"DETACH DATABASE IF EXISTS {_ident(cat)}")
            source = _attach_sqlite(con, e, attach=False)
            if source:  # (else the snapshot has said the file is unreadable)
                log.warning("%s cannot be attached through DuckDB's sqlite extension (%s): read at connect instead",
                            e.path, str(exc).strip().splitlines()[0])
            return source
        con.execute(f"CREATE SCHEMA {_ident(e.name)}")
        for table, select in views.items():
            con.execute(f"CREATE VIEW {_ident(e.name)}.{_ident(table)} AS {select}")
        return SOURCE_ATTACH
    try:
        frames = _read_sqlite(e.path)
    except sqlite3.DatabaseError as exc:
        log.warning("%s is not a readable SQLite database (%s): skipped", e.path, exc)
        return None
    con.execute(f"CREATE SCHEMA {_ident(e.name)}")
    for table, (data, types) in frames.items():
        reg = f"__sqlite_{e.name}_{sql_name(table)}"
        con.register(reg, data)
        exprs = ", ".join(_column_sql(c, types[c], cast=True) for c in data.column_names)
        con.execute(f"CREATE VIEW {_ident(e.name)}.{_ident(table)} AS SELECT {exprs} FROM {_ident(reg)}")
    return SOURCE_SNAPSHOT


def _rowid_guard(con, cat: str, table: str, cols: list) -> str:
    """A WHERE clause that is always true but makes every scan read one column, for SQLite tables
    created ``WITHOUT ROWID`` (the streamer's ``kline``): when a query needs no column at all
    (``SELECT count(*)``) the sqlite extension 1.4 asks SQLite for ``ROWID``, which such tables do
    not have. Empty for the tables that do not need it (probed)."""
    import duckdb

    try:
        con.execute(f"SELECT count(*) FROM (SELECT 1 FROM {_ident(cat)}.main.{_ident(table)} LIMIT 1)").fetchall()
        return ""
    except duckdb.Error as exc:
        if "rowid" not in str(exc).lower() or not cols:
            raise
    col = next((r[0] for r in cols if r[1] == "BIGINT"), cols[0][0])
    return f" WHERE hash({_ident(col)}) IS NOT NULL"  # hash() is never NULL: no row is dropped


def _read_sqlite(path: Path) -> dict[str, tuple]:
    """Every table and view of a SQLite file, read once, read-only (safe while the streamer writes:
    WAL readers never block it), as ``{name: (pyarrow.Table, {column: duckdb type})}`` typed as the
    sqlite extension types them (integers stay exact, NULLs stay NULL)."""
    import pyarrow as pa

    arrow = {"BIGINT": pa.int64(), "DOUBLE": pa.float64(), "VARCHAR": pa.string(), "BLOB": pa.binary(),
             "TIMESTAMP": pa.string(), "DATE": pa.string()}
    src = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    try:
        objects = src.execute(
            "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'"
        ).fetchall()
        out = {}
        for t, kind in objects:
            decl = {r[1]: r[2] for r in src.execute(f"PRAGMA table_info({_ident(t)})")}
            cur = src.execute(f"SELECT * FROM {_ident(t)}")
            cols = [d[0] for d in cur.description]
            rows = cur.fetchall()
            values = list(zip(*rows)) if rows else [()] * len(cols)
            arrays, types = [], {}
            for c, v in zip(cols, values):
                if kind == "view" and not decl.get(c):  # a computed column: typed by its values
                    first = next((x for x in v if x is not None), None)
                    types[c] = {int: "BIGINT", float: "DOUBLE", bytes: "BLOB"}.get(type(first), "VARCHAR")
                else:
                    types[c] = sqlite_type(decl.get(c))
                if types[c] == "TIMESTAMP":  # numbers in a date-time column are Unix seconds (as the extension)
                    v = [_unix_text(x) if isinstance(x, (int, float)) else x for x in v]
                try:
                    arrays.append(pa.array(v, type=arrow[types[c]]))
                except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
                    # SQLite is dynamically typed: a value not of the declared type (the extension
                    # refuses such a column); keep it readable as text rather than drop the table
                    types[c] = "VARCHAR"
                    arrays.append(pa.array([None if x is None else str(x) for x in v], type=pa.string()))
            out[t] = (pa.table(arrays, names=cols), types)
        return out
    finally:
        src.close()


def _unix_text(seconds: float) -> str:
    return pd.Timestamp(seconds, unit="s").isoformat(sep=" ")


# ------------------------------------------------------------------------ queries
def tables(con) -> pd.DataFrame:
    """The lake's queryable names: schema, name, kind (view / table), columns, and source
    (``parquet``, ``lake`` for ``candles``/``datasets``, or for a SQLite file's tables how it
    is read: ``sqlite attached (live)`` / ``sqlite snapshot (read at connect)``)."""
    return con.sql(
        "SELECT t.table_schema AS schema, t.table_name AS name, "
        "CASE WHEN t.table_type = 'VIEW' THEN 'view' ELSE 'table' END AS kind, "
        "(SELECT count(*) FROM information_schema.columns c WHERE c.table_catalog = t.table_catalog "
        " AND c.table_schema = t.table_schema AND c.table_name = t.table_name) AS columns, "
        "coalesce(s.source, CASE WHEN t.table_name IN ('candles', 'datasets') THEN 'lake' ELSE 'parquet' END) "
        "AS source "
        "FROM information_schema.tables t LEFT JOIN __lake_sources s ON s.schema = t.table_schema "
        "WHERE t.table_catalog = current_database() AND t.table_name NOT LIKE '\\_\\_%' ESCAPE '\\' "
        "ORDER BY t.table_schema <> 'main', t.table_schema, t.table_name").to_arrow_table().to_pandas()


def run(con, sql: str):
    """Run one SQL statement; errors become one :class:`UserError` line naming the fix."""
    import duckdb

    if not str(sql).strip():
        raise UserError("empty query", 'pass SQL such as "SELECT * FROM datasets"')
    try:
        return con.sql(sql)
    except duckdb.Error as exc:
        first = str(exc).strip().splitlines()[0]
        names = ", ".join(tables(con)["name"].head(12)) or "none (the data directory holds no datasets)"
        raise UserError(f"SQL error: {first}", f"the lake has: {names} (see --tables)") from None


def query(sql: str, *, data_dir: Path | None = None, con=None) -> pd.DataFrame:
    """The result of ``sql`` over the lake as a DataFrame (timestamps UTC)."""
    own = con is None
    con = con or connect(data_dir)
    try:
        return to_frame(run(con, sql))
    finally:
        if own:
            con.close()


def to_frame(rel) -> pd.DataFrame:
    """A DuckDB relation as a DataFrame through Arrow (UTC timestamps kept; empty for no relation)."""
    return rel.to_arrow_table().to_pandas() if rel is not None else pd.DataFrame()


def write_result(con, sql: str, out: Path | str) -> tuple[Path, int]:
    """Write the result of ``sql`` to ``out`` (.parquet or .csv) atomically; returns (path, rows)."""
    out = Path(out)
    fmt = {".parquet": "parquet", ".csv": "csv"}.get(out.suffix.lower())
    if fmt is None:
        raise UserError(f"--out {out}: unknown format", "name the file .parquet or .csv")
    sql = str(sql).strip().rstrip(";")
    if run(con, sql) is None:
        raise UserError("the statement returns no rows to write", "use a SELECT with --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=f".tmp.{fmt}", dir=out.parent)
    os.close(fd)
    try:
        opts = "FORMAT parquet, COMPRESSION zstd" if fmt == "parquet" else "FORMAT csv, HEADER true"
        n = con.execute(f"COPY ({sql}) TO {_lit(tmp)} ({opts})").fetchall()[0][0]
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return out, int(n)


# --------------------------------------------------------------------------- demo
def make_demo_lake(data_dir: Path, *, symbols: tuple[str, ...] = ("BTCUSDT", "ETHUSDC", "SOLUSDT"),
                   days: int = 30, end: str = "2024-03-01") -> list[Path]:
    """Write a small *simulated* lake into ``data_dir`` (never the real ``data/`` unless asked):
    1h candles per symbol (ETHUSDC with a 3-hour gap), an OKX file, one ``_signals`` file
    (SMA 12/48 crossings), ``sentiment_1h.parquet`` and a streamer database
    (``btcusdt_1m_realtime.db``, last day of 1m candles + the candle in progress).
    Every file is labelled simulated. Returns the paths written."""
    import numpy as np

    from S1.datasets import Dataset, dataset_path, realtime_db_path, sentiment_path, write_parquet
    from S1.intervals import to_ms
    from S1.offline import simulate_candles
    from S1.stream_store import KlineStore, rows_from_klines

    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    end_ts = pd.Timestamp(end, tz="UTC")
    start = end_ts - pd.Timedelta(days=days)
    written = []

    def meta(symbol, exchange="binance", gaps=()):
        return {"symbol": symbol, "interval": "1h", "days": days, "coverage_start_ms": to_ms(start),
                "coverage_end_ms": to_ms(end_ts), "exchange": exchange, "simulated": True, "gaps": list(gaps),
                "sources": ["simulated"]}

    frames = {}
    for sym in symbols:
        df = simulate_candles(sym, "1h", start, end_ts)
        gaps = []
        if sym == "ETHUSDC":
            hole = pd.date_range(start + pd.Timedelta(days=10, hours=5), periods=3, freq="1h", tz="UTC")
            df = df.drop(hole)
            gaps = [f"{hole[0]:%Y-%m-%d %H:%M} .. {hole[-1]:%Y-%m-%d %H:%M} (3)"]
        frames[sym] = df
        written.append(write_parquet(df, dataset_path(Dataset(sym, "1h", days), data_dir=data_dir), metadata=meta(sym, gaps=gaps)))
    okx = simulate_candles("BTCUSDTOKX", "1h", start, end_ts)
    written.append(write_parquet(okx, dataset_path(Dataset("BTCUSDT", "1h", days, exchange="okx"), data_dir=data_dir),
                                 metadata=meta("BTCUSDT", "okx")))
    # signals: SMA 12/48 crossings on the first symbol (the S4 layout: inputs + entry/exit/signal/rule)
    sig = frames[symbols[0]].copy()
    fast, slow = sig["close"].rolling(12).mean(), sig["close"].rolling(48).mean()
    above = (fast > slow).astype(int)
    cross = above.diff().fillna(0)
    sig["SMA_12"], sig["SMA_48"] = fast, slow
    sig["entry"], sig["exit"] = cross > 0, cross < 0
    sig["signal"] = np.where(sig["entry"], 1, np.where(sig["exit"], -1, 0)).astype(np.int64)
    sig["rule"] = np.where(sig["entry"], "sma_cross_up", np.where(sig["exit"], "sma_cross_down", ""))
    written.append(write_parquet(sig, dataset_path(Dataset(symbols[0], "1h", days), "signals", data_dir=data_dir),
                                 metadata={**meta(symbols[0]), "rules": "demo: SMA 12/48 crossings"}))
    # sentiment: an hourly score in [-1, 1] (the S3 layout)
    rng = np.random.default_rng(7)
    idx = pd.date_range(start, end_ts, freq="1h", tz="UTC", inclusive="left", name="open_time")
    n_items = rng.poisson(0.6, len(idx))
    score = np.tanh(np.cumsum(rng.normal(0, 0.15, len(idx))) * 0.5)
    sent = pd.DataFrame({"sentiment_score": score, "n_items": n_items.astype(np.int64),
                         "evidence": np.abs(score) * 3}, index=idx)
    written.append(write_parquet(sent, sentiment_path("1h", data_dir=data_dir),
                                 metadata={"simulated": True, "interval": "1h"}))
    # the streamer's database: the last day of 1m BTCUSDT, plus the candle in progress
    db = realtime_db_path(["BTCUSDT"], "1m", data_dir=data_dir)
    db.unlink(missing_ok=True)
    m = simulate_candles("BTCUSDT", "1m", end_ts - pd.Timedelta(days=1), end_ts + pd.Timedelta(minutes=1))
    from S1.datasets import candles_to_rows

    rows = candles_to_rows(m)
    store = KlineStore(db)
    try:
        store.write(rows_from_klines("BTCUSDT", "1m", rows[:-1]) + rows_from_klines("BTCUSDT", "1m", rows[-1:],
                                                                                     closed=False),
                    {("BTCUSDT", "1m"): int(rows[-1, 0])})
    finally:
        store.close()
    written.append(db)
    return written
