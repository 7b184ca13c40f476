"""S1/stream_store.py: the streamer's SQLite table (exact schema, WAL, upserts that
never downgrade a closed candle, one transaction per batch, watermarks, readers
while writing) and the read_klines reader."""

from __future__ import annotations

import sqlite3
import threading

import numpy as np
import pandas as pd
import pytest

from S1.datasets import CANDLE_COLUMNS, candles_to_rows
from S1.errors import UserError
from S1.local.simulated import simulate_candles
from S1.stream_store import KLINE_COLUMNS, KlineStore, read_klines, rows_from_klines


def _row(t, close, closed, symbol="BTCUSDT", interval="1m", n=3):
    return (symbol, interval, t, t + 59_999, 10.0, max(10.0, close), min(10.0, close), close, 5.0, 50.0,
            2.0, 20.0, n, closed)


@pytest.fixture
def store(tmp_path):
    s = KlineStore(tmp_path / "k.db")
    yield s
    s.close()


def test_table_is_exactly_the_issue_layout(store):
    info = store.con.execute("PRAGMA table_info(kline)").fetchall()
    assert tuple(r[1] for r in info) == KLINE_COLUMNS == (
        "symbol", "interval", "open_time", "close_time", "open", "high", "low", "close", "volume",
        "quote_volume", "taker_buy_base", "taker_buy_quote", "trades", "is_closed", "updated_at")
    types = {r[1]: r[2] for r in info}
    assert all(types[c] == "REAL" for c in ("open", "high", "low", "close", "volume", "quote_volume",
                                            "taker_buy_base", "taker_buy_quote"))
    assert all(types[c] == "INTEGER" for c in ("open_time", "close_time", "trades", "is_closed", "updated_at"))
    pk = sorted((r[5], r[1]) for r in info if r[5])
    assert [c for _, c in pk] == ["symbol", "interval", "open_time"]
    assert store.con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_upsert_in_progress_then_closed_and_never_downgraded(store):
    store.write([_row(0, 11.0, 0)])
    store.write([_row(0, 12.0, 0)])                     # the candle in progress moves
    assert store.con.execute("SELECT close, is_closed FROM kline").fetchall() == [(12.0, 0)]
    store.write([_row(0, 13.0, 1)])                     # the closed one lands
    store.write([_row(0, 99.0, 0)])                     # a late in-progress update
    assert store.con.execute("SELECT close, is_closed FROM kline").fetchall() == [(13.0, 1)]
    store.write([_row(0, 13.5, 1)])                     # closed over closed (REST after stream): newest wins
    assert store.con.execute("SELECT close, is_closed, COUNT(*) FROM kline").fetchall() == [(13.5, 1, 1)]
    updated = store.con.execute("SELECT updated_at FROM kline").fetchone()[0]
    assert abs(updated - pd.Timestamp.now(tz="UTC").value // 10**6) < 60_000  # ms UTC of the write


def test_a_batch_is_one_transaction(store):
    store.write([_row(0, 11.0, 1)])
    bad = list(_row(60_000, 11.0, 1))
    bad[7] = None  # close NOT NULL: the whole batch must roll back
    with pytest.raises(sqlite3.IntegrityError):
        store.write([_row(120_000, 11.0, 1), tuple(bad)], {("BTCUSDT", "1m"): 180_000})
    assert store.count() == 1 and store.watermark("BTCUSDT", "1m") is None


def test_watermark_only_moves_forward(store):
    assert store.watermark("BTCUSDT", "1m") is None
    store.write([], {("BTCUSDT", "1m"): 120_000})
    store.write([], {("BTCUSDT", "1m"): 60_000})
    assert store.watermark("BTCUSDT", "1m") == 120_000
    assert store.watermark("ETHUSDT", "1m") is None
    store.write([_row(0, 1.0, 1), _row(60_000, 1.0, 0)])
    assert store.last_closed_open_ms("BTCUSDT", "1m") == 0


def test_readers_read_while_the_writer_holds_a_transaction(tmp_path):
    df = simulate_candles("BTCUSDT", "1m", "2024-01-01", "2024-01-01 02:00")
    rows = rows_from_klines("BTCUSDT", "1m", candles_to_rows(df))
    store = KlineStore(tmp_path / "k.db")
    store.write(rows[:60])
    # an open write transaction (not committed) must not block nor leak into readers
    store.con.execute("BEGIN IMMEDIATE")
    store.con.executemany("INSERT INTO kline VALUES (" + ",".join("?" * 15) + ")",
                          [(*r, 0) for r in rows[60:]])
    got: list = []
    t = threading.Thread(target=lambda: got.append(read_klines(tmp_path / "k.db", "BTCUSDT", "1m")))
    t.start()
    t.join(5)
    assert len(got) == 1 and len(got[0]) == 60
    store.con.commit()
    assert len(read_klines(tmp_path / "k.db", "btcusdt", "1m")) == 120
    store.close()


def test_read_klines_is_a_candle_frame(tmp_path):
    df = simulate_candles("ETHUSDC", "1m", "2024-03-01", "2024-03-01 01:00")
    store = KlineStore(tmp_path / "k.db")
    rows = rows_from_klines("ETHUSDC", "1m", candles_to_rows(df))
    rows[-1] = rows[-1][:-1] + (0,)  # the last candle still in progress
    store.write(rows[::-1])
    store.write([_row(0, 1.0, 1, symbol="BTCUSDT")])
    store.close()
    got = read_klines(tmp_path / "k.db", "eth/usdc", "1m")
    pd.testing.assert_frame_equal(got, df.iloc[:-1])
    assert list(got.columns) == list(CANDLE_COLUMNS) and str(got.index.dtype) == "datetime64[ns, UTC]"
    last = read_klines(tmp_path / "k.db", "ETHUSDC", "1m", last_n=5)
    pd.testing.assert_frame_equal(last, df.iloc[-6:-1])
    everything = read_klines(tmp_path / "k.db", "ETHUSDC", "1m", closed_only=False)
    assert len(everything) == len(df) and everything["is_closed"].tolist() == [True] * (len(df) - 1) + [False]
    pd.testing.assert_frame_equal(everything.drop(columns="is_closed"), df)
    assert read_klines(tmp_path / "k.db", "ETHUSDC", "5m").empty
    assert "is_closed" in read_klines(tmp_path / "k.db", "ETHUSDC", "5m", closed_only=False).columns


def test_read_klines_errors_say_what_to_do(tmp_path):
    with pytest.raises(UserError, match="start the streamer first: python S1/streamer.py --symbol BTCUSDT"):
        read_klines(tmp_path / "none.db", "BTCUSDT", "1m")
    assert not (tmp_path / "none.db").exists()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    with pytest.raises(UserError, match="cannot read the kline table"):
        read_klines(empty, "BTCUSDT", "1m")
    with pytest.raises(UserError, match="last_n must be a positive"):
        read_klines(empty, "BTCUSDT", "1m", last_n=0)
    with pytest.raises(UserError, match="unsupported interval"):
        read_klines(empty, "BTCUSDT", "1H")


def test_bad_database_paths_are_user_errors(tmp_path):
    afile = tmp_path / "plain.txt"
    afile.write_text("x")
    with pytest.raises(UserError, match="cannot create the folder of --db"):
        KlineStore(afile / "k.db")
    with pytest.raises(UserError, match="is a folder"):
        KlineStore(tmp_path)
    with pytest.raises(UserError, match="exists and is not a SQLite database"):
        KlineStore(afile)
    assert afile.read_text() == "x"  # nothing overwritten
    other = tmp_path / "other.db"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE kline (a INTEGER)")
    con.commit()
    con.close()
    with pytest.raises(UserError, match="has a 'kline' table with other columns"):
        KlineStore(other)


def test_s2_reader_reads_the_same_file(tmp_path):
    """The S2 indicator reader (S2/ta_io.py) and ours agree on the streamer's file."""
    ta_io = pytest.importorskip("S2.ta_io")
    df = simulate_candles("BTCUSDT", "1m", "2024-03-01", "2024-03-01 03:00")
    store = KlineStore(tmp_path / "k.db")
    store.write(rows_from_klines("BTCUSDT", "1m", candles_to_rows(df)))
    store.close()
    theirs = ta_io.read_kline_sqlite(tmp_path / "k.db", symbol="BTCUSDT", interval="1m", limit=100)
    pd.testing.assert_frame_equal(theirs, read_klines(tmp_path / "k.db", "BTCUSDT", "1m", last_n=100))


def test_rows_from_klines_keeps_the_row_layout():
    arr = np.array([[0, 1.5, 2, 1, 1.75, 10, 59_999, 15, 7, 4, 6]], dtype=float)
    (r,) = rows_from_klines("BTCUSDT", "1m", arr)
    assert r == ("BTCUSDT", "1m", 0, 59_999, 1.5, 2.0, 1.0, 1.75, 10.0, 15.0, 4.0, 6.0, 7, 1)
    assert all(type(v) is int for v in (r[2], r[3], r[12], r[13]))
