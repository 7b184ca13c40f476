"""Candle exports (CSV, gzip CSV, Feather, SQLite): exact round trips, atomic writes,
SQLite upserts and index, and the ``--format`` option of S1/historical.py."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from S1.datasets import Dataset, export_path, read_candles, write_parquet
from S1.errors import UserError
from S1.formats import (
    export_candles,
    export_dataset,
    format_of,
    read_csv,
    read_export,
    read_sqlite,
    write_csv,
    write_sqlite,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def okx_like(btc_1h) -> pd.DataFrame:
    """Real-shaped candles with the columns a non-Binance exchange leaves out (NaN / 0)."""
    df = btc_1h.iloc[:500].copy()
    df["taker_buy_base"] = np.nan
    df["taker_buy_quote"] = np.nan
    df["trades"] = 0
    return df


@pytest.mark.parametrize("name", ["c.csv", "c.csv.gz", "c.feather", "c.sqlite"])
def test_every_format_round_trips_to_identical_candles(btc_1h, okx_like, tmp_path, name):
    for df in (btc_1h, okx_like):
        path = export_candles(df, tmp_path / name, symbol="BTCUSDT", interval="1h",
                              exchange="binance" if df is btc_1h else "okx")
        back = read_export(path, symbol="BTCUSDT", interval="1h", exchange="binance" if df is btc_1h else "okx")
        pd.testing.assert_frame_equal(back, df, check_exact=True, check_freq=False)
    assert format_of(path) == name.split(".")[1]


def test_csv_is_plain_iso_utc_text_and_gzip_is_gzip(btc_1h, tmp_path):
    plain = write_csv(btc_1h, tmp_path / "c.csv")
    lines = plain.read_text().splitlines()
    assert lines[0] == ("open_time,open,high,low,close,volume,close_time,quote_volume,trades,"
                        "taker_buy_base,taker_buy_quote")
    assert lines[1].startswith(f"{btc_1h.index[0]:%Y-%m-%d %H:%M:%S}.000Z,") and len(lines) == len(btc_1h) + 1
    gz = write_csv(btc_1h, tmp_path / "c.csv.gz")
    assert gz.read_bytes()[:2] == b"\x1f\x8b" and gz.stat().st_size < plain.stat().st_size / 2


def test_failed_export_leaves_the_previous_file_intact(btc_1h, tmp_path, monkeypatch):
    import S1.formats as formats

    path = write_csv(btc_1h.iloc[:10], tmp_path / "c.csv")
    before = path.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(formats.pacsv, "write_csv", boom)
    with pytest.raises(OSError):
        write_csv(btc_1h, path)
    assert path.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["c.csv"]
    bad = btc_1h.iloc[:10].copy()
    bad.index = bad.index[::-1]  # invalid candles are refused before anything is written
    with pytest.raises(UserError, match="not increasing"):
        export_candles(bad, tmp_path / "c.feather", symbol="BTCUSDT", interval="1h")
    assert not (tmp_path / "c.feather").exists()


def test_sqlite_upserts_on_market_and_open_time_with_an_index(btc_1h, tmp_path):
    db = tmp_path / "candles.sqlite"
    assert write_sqlite(btc_1h.iloc[:100], db, symbol="BTCUSDT", interval="1h") == 100
    changed = btc_1h.iloc[50:150].copy()
    changed["close"] += 1.0  # a re-export with corrected candles overwrites, never duplicates
    write_sqlite(changed, db, symbol="BTCUSDT", interval="1h")
    write_sqlite(btc_1h.iloc[:30], db, symbol="BTCUSDT", interval="1h", exchange="okx")
    write_sqlite(btc_1h.iloc[:20], db, symbol="ETHUSDC", interval="1h")
    con = sqlite3.connect(db)
    counts = dict(((e, s), n) for e, s, n in con.execute(
        "SELECT exchange, symbol, COUNT(*) FROM candles GROUP BY exchange, symbol"))
    pk = [r[1] for r in sorted(con.execute("PRAGMA table_info(candles)"), key=lambda r: r[5]) if r[5]]
    indexes = [r[1] for r in con.execute("PRAGMA index_list(candles)")]
    plan = " ".join(str(r) for r in con.execute(
        "EXPLAIN QUERY PLAN SELECT * FROM candles WHERE open_time BETWEEN 0 AND 1"))
    con.close()
    assert counts == {("binance", "BTCUSDT"): 150, ("okx", "BTCUSDT"): 30, ("binance", "ETHUSDC"): 20}
    assert pk == ["exchange", "symbol", "interval", "open_time"]
    assert "candles_open_time" in indexes and "candles_open_time" in plan
    back = read_sqlite(db, symbol="BTCUSDT", interval="1h", exchange="binance")
    want = pd.concat([btc_1h.iloc[:50], changed])
    pd.testing.assert_frame_equal(back, want, check_exact=True, check_freq=False)
    with pytest.raises(UserError, match="3 markets match"):
        read_sqlite(db)


def test_sqlite_export_refuses_foreign_files_and_leaves_them_alone(btc_1h, tmp_path):
    junk = tmp_path / "notes.sqlite"
    junk.write_text("not a database")
    with pytest.raises(UserError, match="cannot write the database"):
        write_sqlite(btc_1h.iloc[:5], junk, symbol="BTCUSDT", interval="1h")
    assert junk.read_text() == "not a database"
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE candles (a INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(UserError, match="other columns"):
        write_sqlite(btc_1h.iloc[:5], other, symbol="BTCUSDT", interval="1h")


def test_export_dataset_takes_the_market_from_the_file(btc_1h, tmp_path):
    data = tmp_path / "data"
    src = write_parquet(btc_1h, data / "okx-swap_btcusdt_1h_30d.parquet",
                        metadata={"symbol": "BTCUSDT", "interval": "1h", "exchange": "okx", "market": "swap"})
    out = export_dataset(src, "sqlite")
    assert out == export_path(Dataset("BTCUSDT", "1h", 30, exchange="okx-swap"), "sqlite", data_dir=data)
    pd.testing.assert_frame_equal(read_sqlite(out, exchange="okx-swap"), btc_1h, check_freq=False)
    assert export_dataset(src, "csv", gzip=True).name == "okx-swap_btcusdt_1h_30d.csv.gz"
    with pytest.raises(UserError, match="--gzip applies to --format csv only"):
        export_dataset(src, "feather", gzip=True)
    with pytest.raises(UserError, match="unknown --format"):
        export_path(Dataset("BTCUSDT", "1h", 30), "xlsx")


def test_read_errors_are_one_clear_line(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_csv(tmp_path / "nope.csv")
    (tmp_path / "x.csv").write_text("a,b\n1,2\n")
    with pytest.raises(UserError, match="missing columns|not a candle CSV"):
        read_csv(tmp_path / "x.csv")
    with pytest.raises(UserError, match="cannot tell the format"):
        format_of("x.xlsx")


def _cli(args, env):
    return subprocess.run([sys.executable, "S1/historical.py", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)


def test_cli_format_exports_beside_the_parquet_and_upserts_a_shared_database(exchange, settings_env, tmp_path):
    env = dict(os.environ, BINANCE_API_URL=exchange.api_url, BINANCE_ARCHIVE_URL=exchange.url,
               DATA_DIR=str(settings_env.data_dir), TOOLKIT_ENV_FILE=str(tmp_path / "empty.env"))
    db = tmp_path / "all.sqlite"
    for days in (10, 20):
        r = _cli(["--symbol", "BTCUSDT", "--interval", "1h", "--days", str(days), "--end", "2023-04-01",
                  "--format", "sqlite", "--export-out", str(db), "--no-progress"], env)
        assert r.returncode == 0, r.stderr
        rows = len(read_candles(settings_env.data_dir / f"btcusdt_1h_{days}d.parquet"))
        assert f"exported {rows:,} candles to {db}" in r.stdout and rows >= days * 24 - 1  # real data: one gap
    parquet = settings_env.data_dir / "btcusdt_1h_20d.parquet"
    pd.testing.assert_frame_equal(read_sqlite(db), read_candles(parquet))  # 10d rows upserted, not duplicated
    r = _cli(["--symbol", "BTCUSDT", "--interval", "1h", "--days", "20", "--end", "2023-04-01", "--format", "feather",
              "--no-progress"], env)
    assert r.returncode == 0 and "+0 new" in r.stdout, r.stderr
    pd.testing.assert_frame_equal(read_export(parquet.with_suffix(".feather")), read_candles(parquet))
    bad = _cli(["--symbol", "BTCUSDT", "--days", "20", "--format", "feather", "--gzip"], env)
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode == 2 and len(lines) == 1 and "--gzip applies to --format csv only" in lines[0]
