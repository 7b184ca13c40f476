"""S1/ccxt_stream.py: ``python S1/streamer.py --exchange ...`` through ccxt.pro, against the local
exchange (REST) and its WebSocket replay (S1/local/stream.py) on one accelerated clock, with
the connection dropped and refused on a schedule.

CCXT's Binance class runs the whole CCXT path end to end (``--client ccxt``): the SQLite
table must hold exactly the candles the python-binance streamer stores -- every closed
candle once, the exchange's values -- from the stream, from trades, or from the REST
backfill; the "closed by the next candle" rule for exchanges without a closed flag runs on
the same replay."""

from __future__ import annotations

import asyncio
import re
import socket
import sqlite3

import numpy as np
import pandas as pd
import pytest

from S1.ccxt_source import Venue
from S1.ccxt_stream import CcxtStreamer, newest_candle, resolve_markets, tap_market_id, tap_rows, trade_fields
from S1.errors import NetworkError
from S1.intervals import to_ms
from S1.local.exchange import LocalBinance
from S1.local.simulated import simulate_candles
from S1.rest_client import run
from S1.settings import get_settings
from S1.stream_store import read_klines
from tests.S1.stream_harness import (
    closed_rows,
    ctrl_c_when,
    db_rows,
    fast,
    local_market,
    point_at,
    published,
    replay,
    streamer_cli,
)

pytest.importorskip("ccxt.pro")

BINANCE_VIA_CCXT = Venue("binance")


def ccxt_streamer(markets: dict[str, str], **kw) -> CcxtStreamer:
    return CcxtStreamer(fast(symbols=tuple(markets), **kw), venue=BINANCE_VIA_CCXT, markets=markets)


def test_every_closed_candle_once_through_drops_same_as_python_binance(settings_env, monkeypatch, tmp_path):
    start, end = to_ms("2024-03-01 01:00"), to_ms("2024-03-01 02:30")
    frames = {("BTCUSDT", "1m"): simulate_candles("BTCUSDT", "1m", "2024-02-29 23:00", "2024-03-01 03:00"),
              ("ETHUSDT", "1m"): simulate_candles("ETHUSDT", "1m", "2024-02-29 23:00", "2024-03-01 03:00")}
    with local_market(frames, start=start, end=end, wall_per_candle=0.05, interval="1m", updates_per_candle=2,
                      drop_every=0.6, drop_kinds=("abort", "close", "shutdown"), shutdown_grace=0.05) as (ex, st, clock):
        point_at(monkeypatch, ex, st)
        st.refuse(1)
        db = tmp_path / "live.db"
        s = ccxt_streamer({"BTCUSDT": "BTC/USDT", "ETHUSDT": "ethusdt"}, db_path=db, backfill_minutes=30)
        summary = run(replay(s, clock, done=lambda: all(w >= end for w in s.watermarks.values())
                             and st.drops >= 5 and s.stats.reconnects >= 5, timeout=120))  # 5+ disconnects, waited for
        drops = st.drops
    window = slice(pd.Timestamp(start - 30 * 60_000, unit="ms", tz="UTC"), pd.Timestamp(end - 1, unit="ms", tz="UTC"))
    for (symbol, _), df in frames.items():
        pd.testing.assert_frame_equal(read_klines(db, symbol, "1m"), published(df.loc[window]))
    rows = db_rows(db)
    assert len(rows) == len({r[:3] for r in rows}) == 2 * len(frames[("BTCUSDT", "1m")].loc[window])
    assert all(r[3] == 1 for r in rows)
    assert drops >= 5 and summary.reconnects >= 5, (drops, summary)
    # both paths closed candles (how many each is a matter of where the wall-clock drops fell): the stream
    # between drops, REST for the 2 x 30 backfill and each gap; together they account for every row
    assert summary.closed_stream > 0 and summary.closed_rest >= 60 and summary.in_progress_rows > 0, summary
    assert summary.closed_stream + summary.closed_rest >= len(rows), summary
    con = sqlite3.connect(db)
    assert dict(con.execute("SELECT symbol, complete_until FROM kline_watermark")) == {"BTCUSDT": end,
                                                                                      "ETHUSDT": end}
    con.close()


@pytest.mark.parametrize("trade_stream", ["aggTrade", "trade"])
def test_candles_built_from_ccxt_trades(trade_stream, settings_env, monkeypatch, tmp_path):
    start, end = to_ms("2024-03-01 01:00"), to_ms("2024-03-01 01:40")
    df = simulate_candles("BTCUSDT", "1m", "2024-03-01", "2024-03-01 02:00")
    with local_market({("BTCUSDT", "1m"): df}, start=start, end=end + 30_000, wall_per_candle=0.08,
                      interval="1m", drop_every=0.8) as (ex, st, clock):  # a trade at 01:40 closes 01:39
        point_at(monkeypatch, ex, st)
        db = tmp_path / "trades.db"
        s = ccxt_streamer({"BTCUSDT": "BTC/USDT"}, db_path=db, backfill_minutes=5, stream="trades",
                          trade_stream=trade_stream)
        summary = run(replay(s, clock, done=lambda: s.watermarks["BTCUSDT"] >= end, timeout=40))
    window = slice(pd.Timestamp(start - 5 * 60_000, unit="ms", tz="UTC"), pd.Timestamp(end - 1, unit="ms", tz="UTC"))
    got, want = read_klines(db, "BTCUSDT", "1m"), published(df.loc[window])
    pd.testing.assert_frame_equal(got.drop(columns=["quote_volume", "taker_buy_quote"]),
                                  want.drop(columns=["quote_volume", "taker_buy_quote"]))
    np.testing.assert_allclose(got[["quote_volume", "taker_buy_quote"]], want[["quote_volume", "taker_buy_quote"]],
                               rtol=1e-9)  # sums of price x qty: float rounding only
    # minutes proven complete from trade ids alone, the others (first after each drop) from REST: how many
    # of each depends on where the wall-clock drops fell, not on the code; together they cover every minute
    assert summary.closed_stream > 0 and summary.closed_stream + summary.closed_rest >= len(got), summary
    assert summary.closed_rest >= 5 and st.drops >= 2 and summary.reconnects >= 2


def test_exchanges_without_a_closed_flag_take_the_closed_candle_from_rest(settings_env, monkeypatch, tmp_path):
    start, end = to_ms("2024-03-01 01:00"), to_ms("2024-03-01 01:30")
    df = simulate_candles("BTCUSDT", "1m", "2024-03-01", "2024-03-01 02:00")
    with local_market({("BTCUSDT", "1m"): df}, start=start, end=end + 30_000, wall_per_candle=0.05, interval="1m",
                      updates_per_candle=3) as (ex, st, clock):  # 01:30 starts: 01:29 is known closed
        point_at(monkeypatch, ex, st)
        db = tmp_path / "generic.db"
        s = ccxt_streamer({"BTCUSDT": "BTC/USDT"}, db_path=db, backfill_minutes=0)
        s.uses_tap = False  # what every exchange but Binance and OKX gets
        seen_live = []
        put = s._on_ohlcv

        def spy(symbol, market_id, ohlcv, recv):
            put(symbol, market_id, ohlcv, recv)
            seen_live.append(sqlite3.connect(db).execute("SELECT count(*) FROM kline WHERE is_closed=0").fetchone())

        s._on_ohlcv = spy
        summary = run(replay(s, clock, done=lambda: s.watermarks["BTCUSDT"] >= end, timeout=40))
    got = read_klines(db, "BTCUSDT", "1m")
    window = slice(pd.Timestamp(start, unit="ms", tz="UTC"), pd.Timestamp(end - 1, unit="ms", tz="UTC"))
    pd.testing.assert_frame_equal(got.loc[window], published(df.loc[window]))  # every column: the exchange's
    assert len(got.loc[window]) == 30 and summary.closed_stream == 0 and summary.closed_rest >= 30
    # the candle in progress was shown (two for a moment: the new one, and the one REST is replacing)
    assert summary.in_progress_rows > 30 and max(seen_live) in ((1,), (2,))
    assert [r for r in db_rows(db) if r[3] == 0 and r[2] < end] == []  # every closed one was replaced


def test_gives_up_after_bounded_failures_with_one_line(settings_env, monkeypatch, tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]
    with LocalBinance(now_ms=to_ms("2024-03-01")) as ex:
        ex.add_candles("BTCUSDT", "1m", simulate_candles("BTCUSDT", "1m", "2024-02-29 23:00", "2024-03-01"))
        monkeypatch.setenv("BINANCE_API_URL", ex.api_url)
        monkeypatch.setenv("BINANCE_WS_URL", f"ws://127.0.0.1:{dead}")
        get_settings.cache_clear()
        db = tmp_path / "k.db"
        s = ccxt_streamer({"BTCUSDT": "BTC/USDT"}, db_path=db, backfill_minutes=10, max_failures=3)
        with pytest.raises(NetworkError, match="websocket failed 3 times in a row") as err:
            run(asyncio.wait_for(s.run(), 30))
    assert "\n" not in str(err.value)
    assert len(read_klines(db, "BTCUSDT", "1m")) == 10  # the REST backfill is safe in the file


def test_cli_exchange_flag(settings_env, monkeypatch, tmp_path, capsys):
    df = simulate_candles("BTCUSDT", "1m", "2024-04-30 22:00", "2024-05-01 03:00")
    with local_market({("BTCUSDT", "1m"): df}, start=to_ms("2024-05-01"), end=None, wall_per_candle=0.05,
                      interval="1m") as (ex, st, clock):
        point_at(monkeypatch, ex, st, retries=0)
        clock.resume()
        db = settings_env.data_dir / "btcusdt_1m_realtime.db"  # Binance spot: the python-binance file name
        # ends on the event (the 20 backfilled candles in the table) with Ctrl-C; --duration is the bound
        with ctrl_c_when(lambda: closed_rows(db, "BTCUSDT") >= 20):
            code, out, err = streamer_cli(["--client", "ccxt", "--symbol", "BTC/USDT", "--duration", "300",
                                           "--backfill-minutes", "20"], capsys)
        assert code == 0, err
        assert out.startswith(f"{db}: ") and len(read_klines(db, "BTCUSDT", "1m")) >= 20
        cases = [(["--client", "ccxt", "--symbol", "BTC/USDX"], r"unknown symbol 'BTC/USDX' on binance"),
                 (["--exchange", "okkx"], r"unknown exchange 'okkx' -- did you mean okx"),
                 (["--client", "ccxt", "--symbols", "BTC/USDT,BTCUSDT"], r"are the same market -- pass each"),
                 (["--client", "ccxt", "--interval", "7m"], r"unsupported interval '7m'")]
        for argv, pattern in cases:
            code, out, err = streamer_cli(argv + ["--duration", "1"], capsys)
            assert code == 2 and err.count("\n") == 1 and re.search(pattern, err), (argv, err)


def test_resolve_markets_names_files_by_exchange(settings_env, monkeypatch):
    with LocalBinance(now_ms=to_ms("2024-03-01")) as ex:
        for symbol in ("BTCUSDT", "ETHUSDT"):
            ex.add_candles(symbol, "1m", simulate_candles(symbol, "1m", "2024-02-29 23:00", "2024-03-01"))
        monkeypatch.setenv("BINANCE_API_URL", ex.api_url)
        get_settings.cache_clear()
        got = run(resolve_markets(["BTC/USDT", "eth/usdt"], BINANCE_VIA_CCXT, "1m"))
    assert got == {"BTCUSDT": "BTC/USDT", "ETHUSDT": "eth/usdt"}
    from S1.stream_config import StreamConfig

    cfg = StreamConfig(symbols=tuple(got), exchange=Venue("okx", "swap").token)
    assert cfg.db_path.name == "okx-swap_btcusdt_1m_realtime.db"


def test_taps_read_the_closed_flag_of_raw_messages():
    k = {"e": "kline", "E": 5, "k": {"t": 60_000, "T": 119_999, "s": "BTCUSDT", "o": "1.0", "h": "2.0", "l": "0.5",
                                     "c": "1.5", "v": "10", "q": "15", "n": 3, "V": "4", "Q": "6", "x": True}}
    assert tap_rows("binance", k) == [[60_000.0, 1.0, 2.0, 0.5, 1.5, 10.0, 119_999.0, 15.0, 3.0, 4.0, 6.0, 1.0]]
    assert tap_market_id("binance", k) == "BTCUSDT"
    k["k"]["x"] = False
    assert tap_rows("binance", k)[0][11] == 0.0
    okx = {"arg": {"channel": "candle1m", "instId": "BTC-USDT"},
           "data": [["60000", "1", "2", "0.5", "1.5", "10", "15", "15", "1"]]}
    row = tap_rows("okx", okx)[0]
    assert row[:6] == [60_000.0, 1.0, 2.0, 0.5, 1.5, 10.0] and row[7] == 15.0 and row[11] == 1.0
    assert tap_market_id("okx", okx) == "BTC-USDT"
    okx["data"][0][8] = "0"
    assert tap_rows("okx", okx)[0][11] == 0.0
    assert tap_rows("okx", {"event": "subscribe", "arg": {"channel": "candle1m"}}) == []
    live = newest_candle([[120_000, 3, 3, 3, 3, 3], [0, 1, 1, 1, 1, 1]])
    assert live[0] == 120_000 and live[11] == 0.0 and np.isnan(live[7])


def test_trade_fields_keep_real_ids_and_mark_made_up_ones():
    agg = {"timestamp": 1, "price": 2.0, "amount": 3.0, "side": "buy", "id": "10",
           "info": {"e": "aggTrade", "a": 10, "f": 100, "l": 104, "m": False}}
    assert trade_fields(agg, 0) == ((1, 2.0, 3.0, False, 100, 104), True)
    assert trade_fields({**agg, "info": {}}, 0) == ((1, 2.0, 3.0, False, 10, 10), True)
    uuid = {"timestamp": 1, "price": 2.0, "amount": 3.0, "side": "sell", "id": "a1-b2"}
    assert trade_fields(uuid, 42) == ((1, 2.0, 3.0, True, 42, 42), False)


def test_a_send_on_a_closing_connection_is_a_drop_not_the_end(settings_env, monkeypatch, tmp_path):
    """aiohttp raises a bare ConnectionResetError ("Cannot write to closing transport") when CCXT
    subscribes on a connection the server is closing -- seen in CI when a drop raced a subscription.
    The streamer must reconnect as for any drop, not die. The race is injected deterministically here:
    the third watch call fails that way, then the real CCXT call goes on against the local server."""
    import ccxt.pro

    start, end = to_ms("2024-03-01 01:00"), to_ms("2024-03-01 01:40")
    frames = {("BTCUSDT", "1m"): simulate_candles("BTCUSDT", "1m", "2024-02-29 23:00", "2024-03-01 02:00")}
    real_watch = ccxt.pro.binance.watch_ohlcv
    calls = {"n": 0}

    async def watch_racing_a_close(self, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 3:
            raise ConnectionResetError("Cannot write to closing transport")
        return await real_watch(self, *a, **kw)

    monkeypatch.setattr(ccxt.pro.binance, "watch_ohlcv", watch_racing_a_close)
    with local_market(frames, start=start, end=end, wall_per_candle=0.05, interval="1m",
                      updates_per_candle=2) as (ex, st, clock):
        point_at(monkeypatch, ex, st)
        db = tmp_path / "live.db"
        s = ccxt_streamer({"BTCUSDT": "BTC/USDT"}, db_path=db, backfill_minutes=30)
        run(replay(s, clock, done=lambda: all(w >= end for w in s.watermarks.values()) and calls["n"] > 3,
                   timeout=120))
    assert calls["n"] > 3
    window = slice(pd.Timestamp(start - 30 * 60_000, unit="ms", tz="UTC"), pd.Timestamp(end - 1, unit="ms", tz="UTC"))
    pd.testing.assert_frame_equal(read_klines(db, "BTCUSDT", "1m"), published(frames[("BTCUSDT", "1m")].loc[window]))
