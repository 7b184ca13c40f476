"""A streamer that fails at its start (an unknown symbol) leaves no empty database behind --
the python-binance and CCXT kline streamers and the CCXT book streamer -- and never deletes a
database that was there before."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from S1.errors import UserError
from S1.intervals import to_ms
from S1.local.exchange import LocalBinance
from S1.local.simulated import simulate_candles
from S1.settings import get_settings
from S1.stream_client import KlineStreamer
from S1.stream_store import KlineStore
from tests.S1.stream_harness import fast, streamer_cli

ROW = ("BTCUSDT", "1m", 0, 59_999, 1.0, 2.0, 0.5, 1.5, 10.0, 15.0, 5.0, 7.5, 3, 1)


@pytest.fixture
def exchange(settings_env, monkeypatch):
    """A local exchange listing BTCUSDT only; settings pointed at it."""
    with LocalBinance(now_ms=to_ms("2024-03-01")) as ex:
        ex.add_candles("BTCUSDT", "1m", simulate_candles("BTCUSDT", "1m", "2024-02-29 22:00", "2024-03-01"))
        monkeypatch.setenv("BINANCE_API_URL", ex.api_url)
        monkeypatch.setenv("BINANCE_WS_URL", "ws://127.0.0.1:9")     # never reached: the start fails first
        monkeypatch.setenv("HTTP_MAX_RETRIES", "0")
        get_settings.cache_clear()
        yield ex
    get_settings.cache_clear()


def _files(folder):
    return sorted(p.name for p in folder.iterdir())


def _ccxt_kline(db, market):
    pytest.importorskip("ccxt.pro")
    from S1.ccxt_source import Venue
    from S1.ccxt_stream import CcxtStreamer

    return CcxtStreamer(fast(symbols=("BTCUSDT",), db_path=db), venue=Venue("binance"), markets={"BTCUSDT": market})


def _ccxt_book(db, market):
    pytest.importorskip("ccxt.pro")
    from S1.book_stream import BookConfig
    from S1.ccxt_book_stream import CcxtBookStreamer
    from S1.ccxt_source import Venue

    cfg = BookConfig(symbols=("BTCUSDT",), streams=("depth",), book_every=0, db_path=db, depth=20)
    return CcxtBookStreamer(cfg, venue=Venue("binance"), markets={"BTCUSDT": market})


STREAMERS = {
    "binance-klines": lambda db: KlineStreamer(fast(symbols=("NOPEUSDT",), db_path=db)),
    "ccxt-klines": lambda db: _ccxt_kline(db, "BTC/USDX"),
    "ccxt-books": lambda db: _ccxt_book(db, "BTC/USDX"),
}


@pytest.mark.parametrize("kind", sorted(STREAMERS))
def test_a_failed_start_leaves_no_new_database(exchange, tmp_path, kind):
    folder = tmp_path / "out"
    folder.mkdir()
    db = folder / "live.db"
    streamer = STREAMERS[kind](db)
    with pytest.raises(Exception) as err:  # noqa: PT011 -- a UserError, or CCXT's BadSymbol from the library
        asyncio.run(streamer.run())
    assert "USDX" in str(err.value) or "NOPEUSDT" in str(err.value)
    assert _files(folder) == []                                    # not the .db, nor its -wal / -shm


@pytest.mark.parametrize("with_row", [True, False])
def test_a_failed_start_never_deletes_an_existing_database(exchange, tmp_path, with_row):
    db = tmp_path / "live.db"
    store = KlineStore(db)
    if with_row:
        store.write([ROW])
    store.close()
    with pytest.raises(UserError, match="unknown symbol"):
        asyncio.run(KlineStreamer(fast(symbols=("NOPEUSDT",), db_path=db)).run())
    assert db.exists()                                            # there before: kept, even when empty
    con = sqlite3.connect(db)
    assert con.execute("SELECT COUNT(*) FROM kline").fetchone()[0] == int(with_row)
    con.close()


def test_cli_unknown_ccxt_symbol_writes_nothing(exchange, settings_env, capsys):
    pytest.importorskip("ccxt.pro")
    code, out, err = streamer_cli(["--client", "ccxt", "--symbol", "BTC/USDX", "--duration", "1"], capsys)
    assert code == 2 and "unknown symbol 'BTC/USDX'" in err, err
    assert not settings_env.data_dir.exists() or not any(settings_env.data_dir.glob("*.db*"))
