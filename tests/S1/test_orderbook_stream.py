"""Order books and tickers end to end: S1/book_stream.py (the real client) over real WebSockets
and REST against the local server (S1/local/stream.py + S1/local/depth.py), which keeps the
TRUE book and its history per update id, and injects lost and out-of-order depth packets and
connection drops. Every recorded book must equal the true book at the same update id; no
crossed book may ever be written."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from decimal import Decimal
from pathlib import Path

import pytest

from S1.book_store import BookFiles, read_books
from S1.book_stream import BookConfig, BookStreamer
from S1.errors import UserError
from S1.local.exchange import LocalBinance
from S1.local.stream import LocalStream, ReplayClock
from S1.settings import get_settings
from tests.S1.stream_harness import ctrl_c_when

SYMBOLS = ("BTCUSDT", "ETHUSDT")


@pytest.fixture
def market(monkeypatch):
    def start(simulate: bool = True, **stream_kw):
        clock = ReplayClock(None, speed=5.0)  # 50 depth events/s per market
        ex = LocalBinance(simulate=simulate, simulate_days=1, now_ms=clock.now_ms)
        stream_kw.setdefault("ping_interval", 0.5)
        st = LocalStream(ex, clock, **stream_kw)
        ex.start()
        started.append(ex)
        monkeypatch.setenv("BINANCE_API_URL", ex.api_url)
        monkeypatch.setenv("BINANCE_WS_URL", st.ws_url)
        monkeypatch.setenv("HTTP_MAX_RETRIES", "2")
        get_settings.cache_clear()
        return ex, st

    started: list[LocalBinance] = []
    yield start
    for ex in started:
        ex.stop()
    get_settings.cache_clear()


def run_until(streamer: BookStreamer, done, timeout: float = 90.0):
    """Run the streamer until ``done()`` holds (checked every 10 ms), then stop it cleanly."""

    async def main():
        task = asyncio.create_task(streamer.run())
        deadline = time.monotonic() + timeout
        while not done() and time.monotonic() < deadline and not task.done():
            await asyncio.sleep(0.01)
        streamer.stop("test done")
        summary = await task
        assert done(), f"condition not reached: {streamer.stats}"
        return summary

    return asyncio.run(main())


def config(tmp_path: Path, **kw) -> BookConfig:
    base = dict(symbols=SYMBOLS, streams=("depth",), book_every=0, db_path=tmp_path / "book.db", depth=20,
                backoff_initial=0.01, backoff_max=0.05, status_every=0.5, commit_interval=0.02, healthy_after=0.2)
    base.update(kw)
    return BookConfig(**base)


def assert_books_true(db: Path, st: LocalStream, symbol: str, depth: int = 20) -> int:
    books = read_books(db, symbol)
    truth = st.depth_markets[symbol].history
    for uid, (_, bids, asks) in books.items():
        assert (bids, asks) == (truth[uid][0][:depth], truth[uid][1][:depth]), f"{symbol} book at {uid}"
        assert Decimal(bids[0][0]) < Decimal(asks[0][0])
    return len(books)


def test_books_survive_lost_and_reordered_packets(market, tmp_path):
    ex, st = market(depth_gap_every=23, depth_swap_every=17)
    streamer = BookStreamer(config(tmp_path))
    summary = run_until(streamer, lambda: streamer.stats.books_recorded >= 300
                        and all(b.gaps >= 4 for b in streamer.books.values()))
    assert all(f.dropped and f.swapped for f in st.depth_feeds)      # the faults really happened
    n = sum(assert_books_true(tmp_path / "book.db", st, s) for s in SYMBOLS)
    assert n == summary.books_recorded >= 300
    assert summary.gaps >= 8 and summary.snapshots >= summary.gaps
    # the resyncs went through REST snapshots with a real lastUpdateId
    assert sum("/api/v3/depth" in r.path for r in ex.requests) == summary.snapshots
    con = sqlite3.connect(tmp_path / "book.db")
    crossed = con.execute("""SELECT COUNT(*) FROM book b JOIN book a ON a.symbol=b.symbol AND a.update_id=b.update_id
                             WHERE b.side='bid' AND b.level=0 AND a.side='ask' AND a.level=0
                             AND CAST(b.price AS REAL) >= CAST(a.price AS REAL)""").fetchone()[0]
    assert crossed == 0


def test_books_are_rebuilt_after_connection_drops(market, tmp_path):
    ex, st = market(drop_every=0.4, drop_kinds=("abort", "close", "shutdown"))
    streamer = BookStreamer(config(tmp_path, book_every=0.05))
    after: list[int] = []
    streamer.on_record = lambda s, u: after.append(streamer.stats.reconnects)
    summary = run_until(streamer, lambda: streamer.stats.reconnects >= 3 and sum(r >= 3 for r in after) >= 4)
    assert summary.reconnects >= 3 and summary.snapshots >= 2 * 4       # every reconnect rebuilt both books
    for s in SYMBOLS:
        assert assert_books_true(tmp_path / "book.db", st, s) > 0


def test_book_ticker_and_ticker_tables(market, tmp_path):
    ex, st = market()
    streamer = BookStreamer(config(tmp_path, streams=("depth", "bookTicker", "ticker"), book_every=0.2))
    run_until(streamer, lambda: streamer.stats.tickers >= 4 and streamer.stats.book_tickers >= 40)
    con = sqlite3.connect(tmp_path / "book.db")
    rows = con.execute("SELECT symbol, update_id, bid_price, bid_qty, ask_price, ask_qty FROM book_ticker").fetchall()
    assert len(rows) >= 40
    for sym, u, b, bq, a, aq in rows:      # best bid/ask = the true book's top at that update id
        bids, asks = st.depth_markets[sym].history[u]
        assert (b, bq) == bids[0] and (a, aq) == asks[0]
    tick = con.execute("SELECT symbol, last, low, high, bid, ask FROM ticker").fetchall()
    assert len(tick) >= 4 and {t[0] for t in tick} == set(SYMBOLS)
    assert all(lo <= last <= hi and bid < ask for _, last, lo, hi, bid, ask in tick)


@pytest.mark.parametrize("fmt", ["parquet", "feather"])
def test_files_rolled_by_hour_are_complete(tmp_path, fmt):
    import pyarrow.feather as feather
    import pyarrow.parquet as pq

    now = [1_700_000_000.0 - 1_700_000_000 % 3600 + 3590]   # 10 s before an hour ends
    files = BookFiles(tmp_path / "out", fmt=fmt, clock=lambda: now[0])
    files.write(book=[("BTCUSDT", 1, 10, 11, "bid", 0, "1.0", "2.0")])
    partial = list((tmp_path / "out").rglob("*.partial"))
    assert len(partial) == 1                           # the hour in progress is not a finished name
    now[0] += 20
    files.write(book=[("BTCUSDT", 2, 20, 21, "ask", 0, "3.0", "4.0")], ticker=[("BTCUSDT", 5, *[1.0] * 9, 7)])
    files.close()
    done = sorted((tmp_path / "out").rglob(f"*.{fmt}"))
    assert not list((tmp_path / "out").rglob("*.partial")) and len(done) == 3
    read = pq.read_table if fmt == "parquet" else feather.read_table
    books = [read(p).to_pylist() for p in done if p.parts[-3] == "book"]
    assert [b[0]["update_id"] for b in books] == [1, 2] and books[1][0]["price"] == "3.0"


def test_streamer_writes_parquet_books_equal_to_the_truth(market, tmp_path):
    import pyarrow.parquet as pq

    ex, st = market(depth_gap_every=31)
    streamer = BookStreamer(config(tmp_path, book_format="parquet", db_path=tmp_path / "files"))
    run_until(streamer, lambda: streamer.stats.books_recorded >= 50)
    table = pq.read_table(sorted((tmp_path / "files" / "book").rglob("*.parquet"))).to_pylist()
    by_id: dict[tuple, tuple[list, list]] = {}
    for r in sorted(table, key=lambda r: (r["symbol"], r["update_id"], r["side"], r["level"])):
        by_id.setdefault((r["symbol"], r["update_id"]), ([], []))[r["side"] == "ask"].append((r["price"], r["qty"]))
    assert len(by_id) >= 50
    for (sym, uid), (bids, asks) in by_id.items():
        truth = st.depth_markets[sym].history[uid]
        assert (bids, asks) == (truth[0][:20], truth[1][:20])


def test_cli_records_books(market, tmp_path, capsys):
    from S1.streamer import main

    ex, st = market()
    db = tmp_path / "cli.db"
    # each run ends on its event (a book in the file) with Ctrl-C; --duration is only the bound
    with ctrl_c_when(lambda: len(read_books(db, "BTCUSDT")) > 0):
        assert main(["--symbols", "BTCUSDT,ETHUSDT", "--streams", "depth,bookTicker,ticker", "--book-every",
                     "update", "--duration", "300", "--db", str(db)]) == 0
    assert "books recorded" in capsys.readouterr().out
    assert assert_books_true(db, st, "BTCUSDT") > 0
    pytest.importorskip("ccxt.pro")
    ex.rows_for("ETHUSDT", "1m")
    db2 = tmp_path / "ccxt.db"
    with ctrl_c_when(lambda: len(read_books(db2, "ETHUSDT")) > 0):
        assert main(["--client", "ccxt", "--symbols", "ETH/USDT", "--streams", "orderbook,ticker", "--book-every",
                     "update", "--duration", "300", "--db", str(db2)]) == 0
    assert "books recorded" in capsys.readouterr().out
    assert len(read_books(db2, "ETHUSDT")) > 0


@pytest.mark.parametrize("argv, problem", [
    (["--streams", "depth,candles"], "unknown stream 'candles'"),
    (["--streams", "depth", "--interval", "5m"], "are for candles"),
    (["--streams", "depth", "--book-every", "soon"], "not a duration"),
    (["--streams", "depth", "--depth", "0"], "--depth must be"),
])
def test_cli_bad_input_is_one_clear_line(argv, problem):
    from S1.streamer import main

    with pytest.raises(UserError, match=problem):
        main(argv)


def test_unknown_symbol_fails_before_writing(market, tmp_path):
    ex, st = market(simulate=False)                     # an exchange that lists no symbol
    cfg = config(tmp_path, symbols=("NOPEUSDT",), duration=60)
    with pytest.raises(UserError, match="unknown symbol"):
        asyncio.run(BookStreamer(cfg).run())
    assert not any("/api/v3/depth" in r.path for r in ex.requests)
    assert not cfg.db_path.exists()                    # no empty file left for a typo


def test_ccxt_path_records_true_books_through_gaps(market, tmp_path):
    """``--exchange``/``--client ccxt``: ccxt.pro's watch_order_book / watch_ticker / watch_bids_asks
    (CCXT's own Binance book procedure) against the same local server."""
    pytest.importorskip("ccxt.pro")
    from S1.ccxt_book_stream import CcxtBookStreamer
    from S1.ccxt_source import Venue

    ex, st = market(depth_gap_every=11)
    ex.rows_for("BTCUSDT", "1m")                       # listed in the local exchangeInfo
    cfg = config(tmp_path, symbols=("BTCUSDT",), streams=("depth", "bookTicker", "ticker"))
    streamer = CcxtBookStreamer(cfg, venue=Venue("binance"), markets={"BTCUSDT": "BTC/USDT"})
    after: list[int] = []
    streamer.on_record = lambda s, u: after.append(streamer.stats.gaps)
    run_until(streamer, lambda: streamer.stats.gaps >= 3 and sum(g >= 3 for g in after) >= 3
              and streamer.stats.tickers >= 2 and streamer.stats.book_tickers >= 5)
    truth = st.depth_markets["BTCUSDT"].history

    def exact(levels):
        return [(Decimal(p), Decimal(q)) for p, q in levels]

    books = read_books(tmp_path / "book.db", "BTCUSDT")
    assert len(books) == len(after)
    for uid, (_, bids, asks) in books.items():          # CCXT's floats, recorded as exact text
        assert (exact(bids), exact(asks)) == (exact(truth[uid][0][:20]), exact(truth[uid][1][:20]))
    con = sqlite3.connect(tmp_path / "book.db")
    assert con.execute("SELECT COUNT(*) FROM ticker").fetchone()[0] >= 2
    assert con.execute("SELECT COUNT(*) FROM book_ticker").fetchone()[0] >= 5
