"""SQL over the lake (S1/lake.py, S1/query.py): the views, the ``candles`` union, the
streamer's SQLite table (attached through the pip-installed sqlite extension, and the
read-at-connect fallback: same columns, same values), results equal to pandas on the same
files, the CLI, and the notebook run top to bottom."""

from __future__ import annotations

import importlib.metadata
import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from S1 import lake as lake_mod
from S1.datasets import Dataset, dataset_path, read_candles, read_parquet, write_parquet
from S1.errors import UserError
from S1.history import find_gaps
from S1.lake import (
    SOURCE_ATTACH,
    SOURCE_SNAPSHOT,
    connect,
    make_demo_lake,
    parse_stem,
    query,
    sql_name,
    sqlite_source,
    sqlite_type,
    tables,
    to_frame,
    write_result,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def lake(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("lake")
    make_demo_lake(d)
    return d


def test_every_file_is_a_view_named_after_its_dataset(lake):
    con = connect(lake)
    t = tables(con)
    names = set(t.loc[t["schema"] == "main", "name"])
    assert {"btcusdt_1h_30d", "ethusdc_1h_30d", "solusdt_1h_30d", "okx_btcusdt_1h_30d", "btcusdt_1h_30d__rules_signals",
            "sentiment_1h", "candles", "datasets"} <= names
    assert ("btcusdt_1m_realtime", "kline") in set(zip(t["schema"], t["name"]))
    got = to_frame(con.sql("SELECT * FROM ethusdc_1h_30d ORDER BY open_time")).set_index("open_time")
    want = read_candles(lake / "ethusdc_1h_30d.parquet")
    np.testing.assert_array_equal(got["close"].to_numpy(), want["close"].to_numpy())
    assert (got.index == want.index).all() and str(got.index.tz) == "UTC"
    ds = to_frame(con.sql("SELECT name, kind, exchange, symbol, rows, gaps FROM datasets ORDER BY name"))
    assert ds.set_index("name").loc["ethusdc_1h_30d", ["rows", "gaps"]].tolist() == [717, 1]
    assert ds.set_index("name").loc["okx_btcusdt_1h_30d", "exchange"] == "okx"


def test_names():
    assert sql_name("okx-swap-mark_btcusdt_1h_30d") == "okx_swap_mark_btcusdt_1h_30d"
    assert sql_name("1inch") == "t_1inch"
    assert parse_stem("okx-swap_btcusdt_1h_30d") == {"kind": "candles", "exchange": "okx-swap", "symbol": "BTCUSDT",
                                                     "interval": "1h", "days": 30}
    assert parse_stem("ethusdc_1mo_365d_ta")["interval"] == "1M" and parse_stem("sentiment_1h") is None


def test_candles_view_unions_markets_and_dedupes_overlapping_windows(lake, tmp_path):
    d = tmp_path / "data"
    d.mkdir()
    for p in lake.glob("btcusdt_1h_30d.parquet"):
        (d / p.name).write_bytes(p.read_bytes())
    full = read_candles(d / "btcusdt_1h_30d.parquet")
    short = full.iloc[-100:].copy()
    short["close"] += 1000.0  # a shorter window of the same market: the 30-day file wins
    write_parquet(short, dataset_path(Dataset("BTCUSDT", "1h", 5), data_dir=d))
    df = query("SELECT * FROM candles ORDER BY open_time", data_dir=d)
    assert len(df) == len(full) and df["open_time"].is_unique and (df["days"] == 30).all()
    np.testing.assert_array_equal(df["close"].to_numpy(), full["close"].to_numpy())
    empty = query("SELECT count(*) AS n FROM candles", data_dir=tmp_path / "nothing")
    assert empty["n"].tolist() == [0]


def _pandas_daily(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    out = []
    for sym, df in frames.items():
        g = df.resample("1D")
        d = pd.DataFrame({"open": g["open"].first(), "high": g["high"].max(), "low": g["low"].min(),
                          "close": g["close"].last(), "volume": g["volume"].sum()}).dropna(subset=["open"])
        d["ret"] = d["close"].pct_change()
        d["symbol"] = sym
        out.append(d)
    return pd.concat(out).rename_axis("day").reset_index().sort_values(["symbol", "day"], ignore_index=True)


def test_daily_returns_in_sql_equal_pandas(lake):
    sql = """
        WITH d AS (SELECT symbol, date_trunc('day', open_time) AS day, arg_min(open, open_time) AS open,
                          max(high) AS high, min(low) AS low, arg_max(close, open_time) AS close,
                          sum(volume) AS volume
                   FROM candles WHERE exchange = 'binance' GROUP BY ALL)
        SELECT *, close / lag(close) OVER (PARTITION BY symbol ORDER BY day) - 1 AS ret FROM d ORDER BY symbol, day"""
    got = query(sql, data_dir=lake)
    want = _pandas_daily({s: read_candles(lake / f"{s.lower()}_1h_30d.parquet") for s in ("BTCUSDT", "ETHUSDC",
                                                                                         "SOLUSDT")})
    assert len(got) == len(want) == 3 * 30
    assert str(got["day"].dt.tz) == "UTC" and got["day"].tolist() == want["day"].tolist()
    for c in ("open", "high", "low", "close"):
        np.testing.assert_array_equal(got[c].to_numpy(), want[c].to_numpy())
    np.testing.assert_allclose(got["volume"].to_numpy(), want["volume"].to_numpy(), rtol=1e-12)
    np.testing.assert_allclose(got["ret"].to_numpy(dtype=float), want["ret"].to_numpy(dtype=float), rtol=1e-12)


def test_gap_report_in_sql_matches_s1(lake):
    sql = """
        WITH t AS (SELECT symbol, open_time, lead(open_time) OVER (PARTITION BY symbol ORDER BY open_time) AS nxt
                   FROM candles WHERE exchange = 'binance')
        SELECT symbol, open_time + INTERVAL 1 HOUR AS first_missing,
               CAST(epoch(nxt - open_time) / 3600 AS INTEGER) - 1 AS missing
        FROM t WHERE nxt - open_time > INTERVAL 1 HOUR ORDER BY ALL"""
    got = query(sql, data_dir=lake)
    gaps = find_gaps(read_candles(lake / "ethusdc_1h_30d.parquet").index, "1h")
    assert got[["symbol", "missing"]].values.tolist() == [["ETHUSDC", g.missing] for g in gaps]
    assert got["first_missing"].tolist() == [g.start for g in gaps]


def test_signals_join_sentiment_as_of(lake):
    got = query("""SELECT s.open_time, s.signal, m.sentiment_score FROM btcusdt_1h_30d__rules_signals s
                   ASOF LEFT JOIN sentiment_1h m ON s.open_time >= m.open_time ORDER BY s.open_time""", data_dir=lake)
    sig = read_parquet(lake / "btcusdt_1h_30d__rules_signals.parquet")
    sent = read_parquet(lake / "sentiment_1h.parquet")
    want = pd.merge_asof(sig[["signal"]], sent[["sentiment_score"]], left_index=True, right_index=True,
                         direction="backward")
    np.testing.assert_array_equal(got["sentiment_score"].to_numpy(), want["sentiment_score"].to_numpy())
    assert (got["signal"] != 0).sum() > 5


def test_streamer_sqlite_table_is_attached(lake):
    from S1.stream_store import read_klines

    got = query("SELECT * FROM btcusdt_1m_realtime.kline WHERE is_closed = 1 ORDER BY open_time", data_dir=lake)
    want = read_klines(lake / "btcusdt_1m_realtime.db", "BTCUSDT", "1m")
    assert len(got) == len(want) == 1440
    np.testing.assert_array_equal(got["close"].to_numpy(), want["close"].to_numpy())
    assert query("SELECT count(*) AS n FROM btcusdt_1m_realtime.kline WHERE is_closed = 0",
                 data_dir=lake)["n"].tolist() == [1]


def test_write_result_is_atomic_and_bad_sql_is_one_line(lake, tmp_path):
    con = connect(lake)
    out, n = write_result(con, "SELECT * FROM candles WHERE symbol = 'SOLUSDT';", tmp_path / "sol.parquet")
    assert n == 720 and pd.read_parquet(out)["symbol"].eq("SOLUSDT").all()
    before = out.read_bytes()
    with pytest.raises(UserError, match="SQL error: .*(sol_1h|does not exist).*--tables"):
        write_result(con, "SELECT * FROM sol_1h", out)
    assert out.read_bytes() == before and [p.name for p in tmp_path.iterdir()] == ["sol.parquet"]
    with pytest.raises(UserError, match="name the file .parquet or .csv"):
        write_result(con, "SELECT 1", tmp_path / "x.xlsx")


def _cli(args, **env):
    return subprocess.run([sys.executable, "S1/query.py", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=120, env=dict(os.environ, **env))


def test_cli_prints_tables_writes_files_and_fails_in_one_line(lake, tmp_path):
    r = _cli(["SELECT symbol, count(*) AS n FROM candles GROUP BY symbol ORDER BY symbol", "--data-dir", str(lake)])
    assert r.returncode == 0, r.stderr
    assert re.search(r"BTCUSDT +1440\n", r.stdout) and re.search(r"ETHUSDC +717\n", r.stdout), r.stdout
    assert "(3 rows, 2 columns" in r.stdout
    out = tmp_path / "daily.csv"
    sql = ("SELECT symbol, date_trunc('day', open_time) AS day, arg_max(close, open_time) AS close FROM candles "
           "GROUP BY ALL ORDER BY ALL")
    r = _cli([sql, "--out", str(out)], DATA_DIR=str(lake))
    assert r.returncode == 0 and f"wrote 90 rows to {out}" in r.stdout, r.stderr
    assert pd.read_csv(out).shape == (90, 3)
    r = _cli(["--tables", "--data-dir", str(lake)])
    assert r.returncode == 0 and "btcusdt_1m_realtime" in r.stdout and "sentiment_1h" in r.stdout
    for args, needle in [(["SELEC nonsense", "--data-dir", str(lake)], "SQL error: Parser Error"),
                         (["SELECT * FROM nope", "--data-dir", str(lake)], "nope"),
                         (["--data-dir", str(lake)], "no query given"),
                         (["SELECT 1", "--data-dir", str(tmp_path / "missing")], "is not a folder")]:
        r = _cli(args)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and needle in lines[0], r.stderr


def test_notebook_runs_top_to_bottom(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    from tests.notebook_runner import Client  # nbclient with the stalled-channel workaround

    nb = nbformat.read(REPO / "notebooks/S1_sql_over_the_lake.ipynb", as_version=4)
    Client(nb, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(REPO / "notebooks")}}).execute()
    text = "\n".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", ""))
                     for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors
    assert "ETHUSDC" in text and "signals in btcusdt_1h_30d__rules_signals" in text and "1440 rows ->" in text


def test_utc_bucket_macros_equal_date_trunc(lake):
    got = query("""SELECT count(*) AS n,
            count(*) FILTER (WHERE utc_minute(open_time) = date_trunc('minute', open_time)) AS minute,
            count(*) FILTER (WHERE utc_hour(open_time) = date_trunc('hour', open_time)) AS hour,
            count(*) FILTER (WHERE utc_day(open_time) = date_trunc('day', open_time)) AS day,
            count(*) FILTER (WHERE utc_week(open_time) = date_trunc('week', open_time)) AS week,
            count(*) FILTER (WHERE utc_bucket(open_time, INTERVAL 4 HOUR)
                             = time_bucket(INTERVAL 4 HOUR, open_time, TIMESTAMPTZ '1970-01-01 00:00:00+00')) AS h4
        FROM (SELECT open_time FROM candles UNION ALL
              SELECT to_timestamp(open_time / 1000) + INTERVAL 17 SECOND FROM btcusdt_1m_realtime.kline)""",
                data_dir=lake)
    row = got.iloc[0]
    assert row["n"] > 4000 and (row[["minute", "hour", "day", "week", "h4"]] == row["n"]).all(), row.to_dict()
    week = query("SELECT DISTINCT dayname(utc_week(open_time)) AS d FROM candles", data_dir=lake)
    assert week["d"].tolist() == ["Monday"]


# ------------------------------------------------------------- SQLite: ATTACH and the fallback
def _extension_file():
    import duckdb

    con = duckdb.connect()
    try:
        platform = con.execute("PRAGMA platform").fetchall()[0][0]
    finally:
        con.close()
    return lake_mod.sqlite_extension_file(duckdb.__version__, platform)


needs_extension = pytest.mark.skipif(
    _extension_file() is None,
    reason="duckdb-ext-sqlite (for this duckdb) is not installed: pip install -r requirements.txt")


@pytest.fixture
def no_home_extensions(monkeypatch, tmp_path):
    """DuckDB's own extension directory (~/.duckdb) empty, so only the pip package can provide sqlite."""
    (tmp_path / "home").mkdir()
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


@pytest.fixture(scope="module")
def mixed_lake(lake, tmp_path_factory) -> Path:
    """The demo lake plus a foreign SQLite file with every declared-type family, NULLs, big integers,
    date-times (text and Unix seconds), a BLOB, and a SQLite view with a computed column."""
    d = tmp_path_factory.mktemp("mixed")
    for p in lake.iterdir():
        if p.name.endswith((".parquet", ".db")):
            (d / p.name).write_bytes(p.read_bytes())
    con = sqlite3.connect(d / "exports.sqlite")
    con.executescript("""
        CREATE TABLE fills (id INTEGER PRIMARY KEY, symbol TEXT, qty REAL, price NUMERIC, big BIGINT,
                            flag BOOLEAN, at DATETIME, day DATE, raw BLOB, note);
        CREATE VIEW notional AS SELECT id, symbol, qty * price AS notional, "at" FROM fills;
    """)
    con.executemany("INSERT INTO fills VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", [
        (1, "BTCUSDT", 0.5, 42000.5, 2**62 + 1, 1, "2024-03-01 12:00:00", "2024-03-01", b"\x00\x01", b"n"),
        (2, "ETHUSDC", None, 3000, None, 0, "2024-03-01 23:59:59.250", None, None, None),
        (3, None, 1.0, None, -7, None, 1709337600, "2024-03-02", b"", None),  # Unix seconds: 2024-03-02 00:00
    ])
    con.commit()
    con.close()
    return d


def _all_sqlite_views(con) -> dict[str, pd.DataFrame]:
    t = tables(con)
    out = {}
    for schema, name in t.loc[t["schema"] != "main", ["schema", "name"]].itertuples(index=False):
        rel = f'"{schema}"."{name}"'
        cols = con.execute(f"DESCRIBE SELECT * FROM {rel}").fetchall()
        df = to_frame(con.sql(f"SELECT * FROM {rel}"))
        rows = con.execute(f"SELECT * FROM {rel} ORDER BY ALL").fetchall()  # exact Python values
        out[f"{schema}.{name}"] = (df.sort_values(list(df.columns[:2]), ignore_index=True),
                                  [(c[0], c[1]) for c in cols], rows,
                                  con.execute(f"SELECT count(*) FROM {rel}").fetchall()[0][0])
    return out


@needs_extension
def test_sqlite_files_are_attached_through_the_pip_extension(mixed_lake, no_home_extensions):
    con = connect(mixed_lake)
    try:
        assert sqlite_source(con) == {"btcusdt_1m_realtime": SOURCE_ATTACH, "exports": SOURCE_ATTACH}
        t = tables(con)
        assert set(t.loc[t["schema"] != "main", "source"]) == {SOURCE_ATTACH}
        assert set(t.loc[t["schema"] == "main", "source"]) == {"parquet", "lake"}
        # loaded from the package's file (not installed in DuckDB's directory, nothing downloaded) ...
        ext = con.execute("SELECT loaded, installed FROM duckdb_extensions() "
                          "WHERE extension_name = 'sqlite_scanner'").fetchall()
        assert ext == [(True, False)]
        # ... and each file really attached, read-only, through it
        dbs = dict(con.execute("SELECT database_name, type FROM duckdb_databases() WHERE NOT internal").fetchall())
        assert dbs["__sqlite_btcusdt_1m_realtime"] == "sqlite" and dbs["__sqlite_exports"] == "sqlite"
        with pytest.raises(Exception, match="(?i)read.only"):
            con.execute("DELETE FROM __sqlite_exports.main.fills")
    finally:
        con.close()


@needs_extension
def test_attached_file_is_read_live_and_the_snapshot_is_not(mixed_lake, tmp_path, no_home_extensions):
    db = tmp_path / "live.db"
    (tmp_path / "live.db").write_bytes((mixed_lake / "btcusdt_1m_realtime.db").read_bytes())
    live, snap = connect(tmp_path), connect(tmp_path, sqlite="snapshot")
    try:
        sql = "SELECT count(*) FROM live.kline"
        before = live.execute(sql).fetchall()[0][0]
        assert snap.execute(sql).fetchall()[0][0] == before == 1441
        w = sqlite3.connect(db)  # the streamer writing while the lake is open
        w.execute("INSERT INTO kline SELECT symbol, interval, open_time + 172800000, close_time + 172800000, open, "
                  "high, low, close, volume, quote_volume, taker_buy_base, taker_buy_quote, trades, is_closed, "
                  "updated_at FROM kline WHERE is_closed = 1 LIMIT 5")
        w.commit()
        w.close()
        assert live.execute(sql).fetchall()[0][0] == before + 5
        assert snap.execute(sql).fetchall()[0][0] == before
        assert sqlite_source(live) == {"live": SOURCE_ATTACH} and sqlite_source(snap) == {"live": SOURCE_SNAPSHOT}
    finally:
        live.close()
        snap.close()


@needs_extension
def test_attach_and_snapshot_give_the_same_columns_and_values(mixed_lake, no_home_extensions):
    attached, snapshot = connect(mixed_lake, sqlite="attach"), connect(mixed_lake, sqlite="snapshot")
    try:
        a, s = _all_sqlite_views(attached), _all_sqlite_views(snapshot)
    finally:
        attached.close()
        snapshot.close()
    assert set(a) == set(s) == {"btcusdt_1m_realtime.kline", "btcusdt_1m_realtime.kline_watermark",
                                "exports.fills", "exports.notional"}
    for name in a:
        assert a[name][1] == s[name][1], name  # names and DuckDB types, in order
        pd.testing.assert_frame_equal(a[name][0], s[name][0], check_exact=True, obj=name)
        assert a[name][2] == s[name][2], name
        assert a[name][3] == s[name][3] == len(a[name][2]) > 0, name  # count(*) too (WITHOUT ROWID tables)
    fills = a["exports.fills"][0]
    types = dict(a["exports.fills"][1])
    assert types == {"id": "BIGINT", "symbol": "VARCHAR", "qty": "DOUBLE", "price": "DOUBLE", "big": "BIGINT",
                     "flag": "BIGINT", "at": "TIMESTAMP WITH TIME ZONE", "day": "DATE", "raw": "BLOB",
                     "note": "BLOB"}
    assert str(fills["at"].dt.tz) == "UTC"
    assert fills["at"].tolist() == [pd.Timestamp("2024-03-01 12:00:00", tz="UTC"),
                                    pd.Timestamp("2024-03-01 23:59:59.250", tz="UTC"),
                                    pd.Timestamp("2024-03-02 00:00:00", tz="UTC")]
    assert a["exports.fills"][2][0][4] == 2**62 + 1  # exact, not through a float
    assert a["exports.fills"][2][0][8] == b"\x00\x01" and a["exports.fills"][2][2][9] is None
    assert a["exports.notional"][0]["notional"].tolist()[0] == 0.5 * 42000.5


def test_fallback_reads_at_connect_when_the_extension_is_missing(lake, monkeypatch, no_home_extensions, caplog):
    real_files = importlib.metadata.files

    def files(name):
        if name == "duckdb-ext-sqlite":
            raise importlib.metadata.PackageNotFoundError(name)
        return real_files(name)

    monkeypatch.setattr(lake_mod.importlib.metadata, "files", files)
    lake_mod.sqlite_extension_file.cache_clear()
    try:
        con = connect(lake)  # auto: no package, nothing in DuckDB's directory -> the snapshot
        try:
            assert sqlite_source(con) == {"btcusdt_1m_realtime": SOURCE_SNAPSHOT}
            ext = con.execute("SELECT loaded FROM duckdb_extensions() WHERE extension_name = 'sqlite_scanner'"
                              ).fetchall()
            assert ext in ([], [(False,)])
            t = tables(con)
            assert t.loc[t["schema"] == "btcusdt_1m_realtime", "source"].tolist() == [SOURCE_SNAPSHOT] * 2
        finally:
            con.close()
        from S1.stream_store import read_klines

        got = query("SELECT * FROM btcusdt_1m_realtime.kline WHERE is_closed = 1 ORDER BY open_time", data_dir=lake)
        want = read_klines(lake / "btcusdt_1m_realtime.db", "BTCUSDT", "1m")
        assert len(got) == len(want) == 1440
        np.testing.assert_array_equal(got["close"].to_numpy(), want["close"].to_numpy())
        assert str(got["open_time"].dtype) == "int64"
        with pytest.raises(UserError, match="sqlite extension is not available.*pip install duckdb-ext-sqlite"):
            connect(lake, sqlite="attach")
    finally:
        lake_mod.sqlite_extension_file.cache_clear()


@needs_extension
def test_a_package_for_another_duckdb_is_refused_with_a_warning(caplog):
    import duckdb

    con = duckdb.connect()
    platform = con.execute("PRAGMA platform").fetchall()[0][0]
    con.close()
    with caplog.at_level("WARNING", logger="S1.lake"):
        assert lake_mod.sqlite_extension_file("9.9.9", platform) is None
    assert "not DuckDB v9.9.9" in caplog.text and "pip install -r requirements.txt" in caplog.text


def test_sqlite_type_follows_the_extension_rules():
    assert [sqlite_type(t) for t in ("INTEGER", "int8", "BOOLEAN", "VARCHAR(20)", "CLOB", "BLOB", None, "REAL",
                                     "FLOAT", "DOUBLE PRECISION", "DATE", "DATETIME", "TIMESTAMP", "TIME",
                                     "DECIMAL(10,2)", "NUMERIC", "JSON")] == [
        "BIGINT", "BIGINT", "BIGINT", "VARCHAR", "VARCHAR", "BLOB", "BLOB", "DOUBLE", "DOUBLE", "DOUBLE", "DATE",
        "TIMESTAMP", "TIMESTAMP", "TIMESTAMP", "DOUBLE", "DOUBLE", "VARCHAR"]


def test_cli_tables_says_how_sqlite_is_read(lake):
    r = _cli(["--tables", "--sqlite", "snapshot", "--data-dir", str(lake)])
    assert r.returncode == 0, r.stderr
    assert re.search(r"btcusdt_1m_realtime +kline +view +15 +sqlite snapshot \(read at connect\)", r.stdout), r.stdout
    if _extension_file() is not None:
        r = _cli(["--tables", "--data-dir", str(lake)])
        assert r.returncode == 0 and re.search(r"kline +view +15 +sqlite attached \(live\)", r.stdout), r.stdout
    r = _cli(["SELECT 1", "--sqlite", "live", "--data-dir", str(lake)])
    assert r.returncode == 2 and "invalid choice" in r.stderr and len(r.stderr.strip().splitlines()) == 1


@needs_extension
def test_a_file_the_extension_cannot_read_falls_back_to_the_snapshot(tmp_path, no_home_extensions, caplog):
    con = sqlite3.connect(tmp_path / "odd.sqlite")
    # valid SQLite, but DuckDB's parser (which the extension runs on view definitions) rejects `at` unquoted
    con.executescript("CREATE TABLE t (id INTEGER, at DATETIME); INSERT INTO t VALUES (1, '2024-01-01 00:00:00');"
                      "CREATE VIEW v AS SELECT id, at FROM t;")
    con.close()
    (tmp_path / "broken.db").write_bytes(b"this is not a database")
    with caplog.at_level("WARNING", logger="S1.lake"):
        lake_con = connect(tmp_path)
    try:
        assert sqlite_source(lake_con) == {"odd": SOURCE_SNAPSHOT}
        assert lake_con.execute('SELECT id, "at" FROM odd.v').fetchall() == [
            (1, pd.Timestamp("2024-01-01", tz="UTC").to_pydatetime())]
    finally:
        lake_con.close()
    assert "odd.sqlite cannot be attached" in caplog.text and "broken.db is not a readable SQLite" in caplog.text
