"""A streamer database written from the simulated market is labelled so (``toolkit_meta``,
like the Parquet files' ``simulated`` metadata), for good; S1/query.py and the dashboard's data
table show SIMULATED for it and not for a real one."""

from __future__ import annotations

import sqlite3

import pytest

from S1.intervals import to_ms
from S1.local.simulated import simulate_candles
from S1.rest_client import run
from S1.settings import get_settings
from S1.stream_client import KlineStreamer
from S1.stream_store import KlineStore, database_simulated
from tests.S1.stream_harness import closed_rows, fast, local_market, point_at, replay

ROW = ("BTCUSDT", "1m", 0, 59_999, 1.0, 2.0, 0.5, 1.5, 10.0, 15.0, 5.0, 7.5, 3, 1)


def _db(path, *, simulated):
    store = KlineStore(path, simulated=simulated)
    store.write([ROW], {("BTCUSDT", "1m"): 60_000})
    store.close()
    return path


def test_the_label_is_sticky_and_readers_record_nothing(tmp_path):
    from S1.book_store import BookStore

    db = tmp_path / "k.db"
    KlineStore(db).close()                                   # a reader-style open: no label
    assert database_simulated(db) is None
    KlineStore(db, simulated=False).close()
    assert database_simulated(db) is False
    KlineStore(db, simulated=True).close()
    assert database_simulated(db) is True
    KlineStore(db, simulated=False).close()                  # a later real run: still holds simulated rows
    assert database_simulated(db) is True
    books = tmp_path / "b.db"
    BookStore(books, simulated=True).close()
    assert database_simulated(books) is True
    assert database_simulated(tmp_path / "missing.db") is None


@pytest.mark.parametrize("simulated", [True, False])
def test_the_streamer_labels_its_database_from_the_settings(settings_env, monkeypatch, tmp_path, simulated):
    start, end = to_ms("2024-03-01 01:00"), to_ms("2024-03-01 01:05")
    df = simulate_candles("BTCUSDT", "1m", "2024-03-01 00:00", "2024-03-01 02:00")
    with local_market({("BTCUSDT", "1m"): df}, start=start, end=end, wall_per_candle=0.05,
                      interval="1m") as (ex, st, clock):
        point_at(monkeypatch, ex, st)
        monkeypatch.setenv("SIMULATED_MARKET", "1" if simulated else "0")
        get_settings.cache_clear()
        db = tmp_path / "live.db"
        s = KlineStreamer(fast(symbols=("BTCUSDT",), db_path=db, backfill_minutes=5))
        run(replay(s, clock, done=lambda: closed_rows(db, "BTCUSDT") >= 5))
    assert database_simulated(db) is simulated


@pytest.fixture
def two_dbs(settings_env):
    data = settings_env.data_dir
    data.mkdir(parents=True, exist_ok=True)
    _db(data / "btcusdt_1m_realtime.db", simulated=True)
    _db(data / "ethusdt_1m_realtime.db", simulated=False)
    return data


def test_query_names_the_simulated_database(two_dbs, capsys):
    from S1 import query

    def ask(*argv):
        assert query.main([*argv, "--data-dir", str(two_dbs), "--sqlite", "snapshot"]) == 0
        return capsys.readouterr().out

    out = ask("SELECT count(*) AS n FROM btcusdt_1m_realtime.kline")
    assert "SIMULATED market data" in out and "btcusdt_1m_realtime (btcusdt_1m_realtime.db)" in out
    out = ask("SELECT count(*) AS n FROM ethusdt_1m_realtime.kline")
    assert "SIMULATED" not in out
    out = ask("--tables")
    sim = [ln for ln in out.splitlines() if ln.startswith("SIMULATED")]
    assert len(sim) == 1 and "btcusdt_1m_realtime" in sim[0] and "ethusdt" not in sim[0]


def test_the_dashboard_data_table_shows_simulated_streams(two_dbs):
    from S7.dashboard_files import coverage_table, simulated_text

    cov = coverage_table(data_dir=two_dbs)
    streams = cov[cov["kind"] == "stream"].set_index("file")
    assert simulated_text(streams.loc["btcusdt_1m_realtime.db", "simulated"]) == "SIMULATED"
    assert simulated_text(streams.loc["ethusdt_1m_realtime.db", "simulated"]) == "real"


def test_an_empty_labelled_database_still_counts_as_empty(tmp_path):
    """The label row is bookkeeping: a failed start's file is still removed."""
    from S1.stream_store import remove_if_empty

    db = tmp_path / "k.db"
    KlineStore(db, simulated=True).close()
    assert remove_if_empty(db) and not db.exists()
    con = sqlite3.connect(_db(tmp_path / "full.db", simulated=True))
    con.close()
    assert not remove_if_empty(tmp_path / "full.db")
