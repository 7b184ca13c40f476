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
- SQL macros for fast UTC buckets (TIMESTAMPTZ in, TIMESTAMPTZ out): ``utc_minute(t)``,
  ``utc_hour(t)``, ``utc_day(t)``, ``utc_week(t)`` (Monday, as Binance) and
  ``utc_bucket(t, INTERVAL 4 HOUR)`` -- the same result as ``date_trunc`` in UTC, about
  five times faster (``date_trunc`` on a TIMESTAMPTZ goes through ICU calendars);
- each **SQLite database** (``*.db`` -- the streamer's ``btcusdt_1m_realtime.db`` --
  and ``*.sqlite`` exports) as a schema named after the file:
  ``SELECT * FROM btcusdt_1m_realtime.kline``. With DuckDB's ``sqlite`` extension
  installed (``INSTALL sqlite`` once, online) the files are attached read-only and
  read live; without it (offline) each table is read once through Python's
  ``sqlite3`` (read-only) when the connection opens. Nothing is ever downloaded here.

>>> import tempfile, pathlib
>>> from S1.datasets import dataset_path, write_parquet
>>> from S1.simulated import simulate_candles
>>> d = pathlib.Path(tempfile.mkdtemp())
>>> _ = write_parquet(simulate_candles("BTCUSDT", "1d", "2024-01-01", "2024-01-11"),
...                   dataset_path("BTCUSDT", "1d", 10, data_dir=d))
>>> query("SELECT symbol, count(*) AS n FROM candles GROUP BY symbol", data_dir=d)
    symbol   n
0  BTCUSDT  10
"""

from __future__ import annotations

import logging
import os
import re
import sqlite3
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from S1.cli import UserError
from S1.datasets import CANDLE_COLUMNS, read_metadata, parse_dataset_name

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
    if not base.is_dir():
        return []
    entries, taken = [], set(_RESERVED)
    for p in sorted(base.iterdir()):
        if p.name.startswith(".") or not p.is_file():
            continue
        suffix = p.suffix.lower()
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


_RESERVED = {"candles", "datasets", "main", "information_schema", "pg_catalog", "temp", "system"}


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


def connect(data_dir: Path | None = None, *, sqlite: bool = True, threads: int | None = None):
    """A DuckDB connection (in memory) with the lake's views; see the module docstring."""
    import duckdb

    entries = scan(data_dir)
    con = duckdb.connect(":memory:", config={"autoinstall_known_extensions": False})
    con.execute("SET TimeZone = 'UTC'")
    for macro in MACROS:
        con.execute(macro)
    if threads:
        con.execute(f"SET threads = {int(threads)}")
    for e in entries:
        if e.kind != "sqlite":
            con.execute(f"CREATE VIEW {_ident(e.name)} AS SELECT * FROM read_parquet({_lit(e.path)})")
    _candles_view(con, [e for e in entries if e.kind == "candles"])
    _datasets_view(con, [e for e in entries if e.kind != "sqlite"])
    if sqlite:
        for e in entries:
            if e.kind == "sqlite":
                _attach_sqlite(con, e)
    return con


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


def _datasets_view(con, entries: list[LakeEntry]) -> None:
    rows = []
    for e in entries:
        meta, n = {}, None
        try:
            meta = read_metadata(e.path)
            n = pq.read_metadata(e.path).num_rows
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


def _sqlite_extension(con) -> bool:
    try:
        row = con.execute("SELECT installed FROM duckdb_extensions() WHERE extension_name = 'sqlite_scanner'"
                          ).fetchone()
        if not row or not row[0]:
            return False
        con.execute("LOAD sqlite")
        return True
    except Exception:  # noqa: BLE001 - any failure: use the fallback
        return False


def _attach_sqlite(con, e: LakeEntry) -> None:
    if _sqlite_extension(con):
        con.execute(f"ATTACH {_lit(e.path)} AS {_ident(e.name)} (TYPE sqlite, READ_ONLY)")
        return
    try:
        src = sqlite3.connect(f"{e.path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
        try:
            tables = [r[0] for r in src.execute(
                "SELECT name FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite_%'")]
            frames = {t: pd.read_sql_query(f"SELECT * FROM {_ident(t)}", src) for t in tables}
        finally:
            src.close()
    except sqlite3.DatabaseError as exc:
        log.warning("%s is not a readable SQLite database (%s): skipped", e.path, exc)
        return
    con.execute(f"CREATE SCHEMA {_ident(e.name)}")
    for t, df in frames.items():
        reg = f"__sqlite_{e.name}_{sql_name(t)}"
        con.register(reg, df)
        con.execute(f"CREATE VIEW {_ident(e.name)}.{_ident(t)} AS SELECT * FROM {_ident(reg)}")


# ------------------------------------------------------------------------ queries
def tables(con) -> pd.DataFrame:
    """The lake's queryable names: schema, name, kind (view / table) and columns."""
    return con.sql(
        "SELECT table_schema AS schema, table_name AS name, "
        "CASE WHEN table_type = 'VIEW' THEN 'view' ELSE 'table' END AS kind, "
        "(SELECT count(*) FROM information_schema.columns c WHERE c.table_schema = t.table_schema "
        " AND c.table_name = t.table_name) AS columns "
        "FROM information_schema.tables t WHERE table_name NOT LIKE '\\_\\_%' ESCAPE '\\' "
        "ORDER BY schema <> 'main', schema, name").to_arrow_table().to_pandas()


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
        n = con.execute(f"COPY ({sql}) TO {_lit(tmp)} ({opts})").fetchone()[0]
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

    from S1.datasets import dataset_path, realtime_db_path, sentiment_path, write_parquet
    from S1.intervals import to_ms
    from S1.simulated import simulate_candles
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
        written.append(write_parquet(df, dataset_path(sym, "1h", days, data_dir=data_dir), metadata=meta(sym, gaps=gaps)))
    okx = simulate_candles("BTCUSDTOKX", "1h", start, end_ts)
    written.append(write_parquet(okx, dataset_path("BTCUSDT", "1h", days, data_dir=data_dir, exchange="okx"),
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
    written.append(write_parquet(sig, dataset_path(symbols[0], "1h", days, "signals", data_dir=data_dir),
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
