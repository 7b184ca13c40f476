"""S1/ccxt_stream.py on OKX: ``python S1/streamer.py --exchange okx`` through ccxt.pro's okx class
against the local OKX (S1/local/okx.py: v5 REST + the ``/ws/v5/business`` candle and
``/ws/v5/public`` trade channels) on one accelerated clock, with connections dropped (TCP reset,
close frame, OKX's 64008 service-upgrade notice) and handshakes refused.

The SQLite table must hold every closed candle of the window exactly once with OKX's values
(OHLCV, quote volume from ``volCcyQuote``; trades 0 and taker volumes NULL: OKX does not report
them), none left in progress, from the stream (``confirm`` "1") and from REST backfills."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from contextlib import contextmanager

import aiohttp
import numpy as np
import pandas as pd
import pytest

from S1.ccxt_source import Venue, make_exchange
from S1.ccxt_stream import CcxtStreamer, trade_fields
from S1.intervals import to_ms
from S1.local.okx import LocalOkx, LocalOkxStream
from S1.local.simulated import simulate_candles
from S1.local.stream import ReplayClock
from S1.rest_client import run
from S1.settings import get_settings
from S1.stream_store import read_klines
from tests.S1.stream_harness import closed_rows, ctrl_c_when, db_rows, fast, replay, streamer_cli

pytest.importorskip("ccxt.pro")

OKX = Venue("okx")
MARKETS = {"BTCUSDT": "BTC/USDT", "ETHUSDT": "ETH/USDT"}


def okx_frame(symbol: str, start: str, end: str) -> pd.DataFrame:
    """Simulated 1m candles with sizes on OKX's 1e-8 lot grid (so trades can add up to them)."""
    df = simulate_candles(symbol, "1m", start, end)
    df[["volume", "taker_buy_base"]] = df[["volume", "taker_buy_base"]].round(8)
    return df


def okx_published(df: pd.DataFrame) -> pd.DataFrame:
    """What the streamer stores from OKX for ``df``: OHLCV and quote volume exactly, the close
    time from the interval, trades 0 and taker volumes NaN (OKX does not report them)."""
    out = df.copy()
    out["trades"] = 0
    out[["taker_buy_base", "taker_buy_quote"]] = np.nan
    return out


@contextmanager
def okx_market(frames: dict[str, pd.DataFrame], *, start: int, end: int | None, wall_per_candle: float,
               **stream_kw):
    """LocalOkx + LocalOkxStream (1m candles of ``frames`` by OKX instId) on one paused ReplayClock."""
    clock = ReplayClock(start, speed=60.0 / wall_per_candle, end_ms=end, paused=True)
    okx = LocalOkx(clock.now_ms)
    for inst_id, df in frames.items():
        okx.add("last", inst_id, "1m", df)
    st = LocalOkxStream(okx, clock, **stream_kw)
    with okx:
        yield okx, st, clock


def point_at(monkeypatch, okx: LocalOkx, st: LocalOkxStream, retries: int = 2) -> None:
    monkeypatch.setenv("CCXT_API_URLS", f"okx={okx.url}")
    monkeypatch.setenv("CCXT_WS_URLS", f"okx={st.ws_url}")
    monkeypatch.setenv("HTTP_MAX_RETRIES", str(retries))
    get_settings.cache_clear()


def okx_streamer(markets: dict[str, str], **kw) -> CcxtStreamer:
    return CcxtStreamer(fast(symbols=tuple(markets), exchange=OKX.token, **kw), venue=OKX, markets=markets)


def _window(start: int, end: int, backfill_minutes: int) -> slice:
    return slice(pd.Timestamp(start - backfill_minutes * 60_000, unit="ms", tz="UTC"),
                 pd.Timestamp(end - 1, unit="ms", tz="UTC"))


# ----------------------------------------------------------------------------- klines
def test_okx_every_closed_candle_once_through_drops_and_a_refused_handshake(settings_env, monkeypatch, tmp_path):
    start, end = to_ms("2024-03-01 01:00"), to_ms("2024-03-01 02:00")
    frames = {"BTC-USDT": okx_frame("BTCUSDT", "2024-02-29 23:00", "2024-03-01 03:00"),
              "ETH-USDT": okx_frame("ETHUSDT", "2024-02-29 23:00", "2024-03-01 03:00")}
    with okx_market(frames, start=start, end=end, wall_per_candle=0.05, updates_per_candle=2,
                    drop_every=0.6, drop_kinds=("abort", "close", "notice")) as (okx, st, clock):
        point_at(monkeypatch, okx, st)
        st.refuse(1, access="business")
        db = tmp_path / "okx.db"
        s = okx_streamer(MARKETS, db_path=db, backfill_minutes=30)
        summary = run(replay(s, clock, done=lambda: all(w >= end for w in s.watermarks.values())
                             and st.drops >= 5 and s.stats.reconnects >= 5, timeout=120))  # 5+ disconnects
        drops, conns = st.drops, list(st.connections)
        refused = [r for r in okx.server.requests if r.path == "/ws/v5/business" and r.status == 503]
    window = _window(start, end, 30)
    for inst_id, df in frames.items():
        pd.testing.assert_frame_equal(read_klines(db, inst_id.replace("-", ""), "1m"), okx_published(df.loc[window]),
                                      check_exact=True, check_freq=False)
    rows = db_rows(db)
    assert len(rows) == len({r[:3] for r in rows}), "every candle once"
    assert len(done := [r for r in rows if r[2] < end]) == 2 * 90 and all(r[3] == 1 for r in done), "none in progress"
    assert all(r[3] == 0 for r in rows if r[2] >= end), "only the candle forming at the end is in progress"
    assert refused and drops >= 5 and summary.reconnects >= 5, (drops, summary)
    assert {c.ended_by for c in conns} >= {"abort", "close", "notice"}
    assert all(c.access == "business" for c in conns) and any(len(c.subscriptions) == 2 for c in conns), \
        "both symbols on one connection"
    # both paths closed candles (the split depends on where the wall-clock drops fell); together: every row
    assert summary.closed_stream > 0 and summary.closed_rest >= 60 and summary.in_progress_rows > 0, summary
    assert summary.closed_stream + summary.closed_rest >= len(rows), summary
    con = sqlite3.connect(db)
    assert dict(con.execute("SELECT symbol, complete_until FROM kline_watermark")) == {"BTCUSDT": end, "ETHUSDT": end}
    con.close()


def test_okx_candles_not_yet_confirmed_on_rest_are_not_skipped(settings_env, monkeypatch, tmp_path, caplog):
    """OKX's REST may still say ``confirm`` "0" for a candle that has just closed: the backfill
    must wait for it, not move the watermark past it (such candles were lost before)."""
    caplog.set_level(logging.INFO, logger="S1.streamer")
    start, end = to_ms("2024-03-01 01:00"), to_ms("2024-03-01 01:40")
    df = okx_frame("BTCUSDT", "2024-02-29 23:00", "2024-03-01 03:00")
    with okx_market({"BTC-USDT": df}, start=start, end=None, wall_per_candle=0.05, updates_per_candle=2,
                    drop_every=0.3, drop_kinds=("abort", "close")) as (okx, st, clock):
        okx.unconfirmed_lag_ms = 90_000  # 00:58 and 00:59 are not final at 01:00 (the paused start)
        point_at(monkeypatch, okx, st)
        db = tmp_path / "lag.db"
        s = okx_streamer({"BTCUSDT": "BTC/USDT"}, db_path=db, backfill_minutes=10, max_failures=20)

        async def until_complete():
            task = asyncio.create_task(s.run())
            while not any(r.status == 200 for r in okx.requests):  # the first backfill got its candles at 01:00
                assert not task.done(), task.exception()
                await asyncio.sleep(0.01)
            for _ in range(3000):  # ... and were found not final (waited for, not a fixed sleep)
                if "has not finalised the 2024-03-01 00:58 UTC candle" in caplog.text:
                    break
                assert not task.done(), task.exception()
                await asyncio.sleep(0.01)
            clock.resume()  # ... and once the clock moves on, they are
            for _ in range(2000):
                assert not task.done(), task.exception()
                if s.watermarks.get("BTCUSDT", 0) >= end:
                    break
                await asyncio.sleep(0.01)
            s.stop("test over")
            return await task

        summary = run(until_complete())
    got = read_klines(db, "BTCUSDT", "1m")
    window = _window(start, end, 10)
    pd.testing.assert_frame_equal(got.loc[window], okx_published(df.loc[window]), check_exact=True, check_freq=False)
    assert "BTCUSDT: the exchange has not finalised the 2024-03-01 00:58 UTC candle yet" in caplog.text
    assert summary.reconnects >= 3 and summary.closed_rest >= 10, summary


# ----------------------------------------------------------------------------- trades
def test_okx_trade_ids_are_consecutive_so_minutes_close_from_trades():
    """OKX's trades channel aggregates: ``tradeId`` is the last of ``count`` trades."""
    push = {"timestamp": 60_001, "price": 2.0, "amount": 3.0, "side": "buy", "id": "107",
            "info": {"instId": "BTC-USDT", "tradeId": "107", "px": "2", "sz": "3", "side": "buy", "ts": "60001",
                     "count": "3"}}
    assert trade_fields(push, 0) == ((60_001, 2.0, 3.0, False, 105, 107), True)
    assert trade_fields({**push, "info": {**push["info"], "count": "1"}}, 0)[0][4:] == (107, 107)


def test_okx_candles_built_from_trades_equal_the_klines(settings_env, monkeypatch, tmp_path):
    start, end = to_ms("2024-03-01 01:00"), to_ms("2024-03-01 01:40")
    df = okx_frame("BTCUSDT", "2024-03-01", "2024-03-01 02:00")
    with okx_market({"BTC-USDT": df}, start=start, end=end + 30_000, wall_per_candle=0.08,
                    drop_every=0.8, drop_kinds=("abort", "close")) as (okx, st, clock):  # a trade at 01:40 closes 01:39
        point_at(monkeypatch, okx, st)
        db = tmp_path / "trades.db"
        s = okx_streamer({"BTCUSDT": "BTC/USDT"}, db_path=db, backfill_minutes=5, stream="trades")
        summary = run(replay(s, clock, done=lambda: s.watermarks["BTCUSDT"] >= end, timeout=40))
        conns = list(st.connections)
    window = _window(start, end, 5)
    got, want = read_klines(db, "BTCUSDT", "1m"), df.loc[window]
    cols = ["open", "high", "low", "close", "volume", "close_time"]
    pd.testing.assert_frame_equal(got[cols], want[cols], check_freq=False)
    np.testing.assert_allclose(got["quote_volume"], want["quote_volume"], rtol=1e-9)  # sums of px x sz
    # a minute closed from trades knows its trades and taker volume; one from REST has them as OKX does (none)
    from_trades = got["trades"] > 0
    assert (got.loc[from_trades, "trades"] == want.loc[from_trades[from_trades].index, "trades"]).all()
    np.testing.assert_allclose(got.loc[from_trades, "taker_buy_base"],
                               want.loc[from_trades[from_trades].index, "taker_buy_base"], rtol=1e-9)
    assert got.loc[~from_trades, "taker_buy_base"].isna().all()
    # minutes proven complete from consecutive trade ids, the others from REST (the split depends on where the
    # wall-clock drops fell); together they cover every minute
    assert summary.closed_stream > 0 and summary.closed_stream + summary.closed_rest >= len(got), summary
    assert summary.closed_rest >= 5 and st.drops >= 2 and summary.reconnects >= 2, summary
    assert all(c.access == "public" and c.subscriptions == [("trades", "BTC-USDT")] for c in conns)


# --------------------------------------------------------------------------------- CLI
def test_cli_exchange_okx_two_symbols_and_trades(settings_env, monkeypatch, capsys):
    frames = {"BTC-USDT": okx_frame("BTCUSDT", "2024-04-30 22:00", "2024-05-01 03:00"),
              "ETH-USDT": okx_frame("ETHUSDT", "2024-04-30 22:00", "2024-05-01 03:00")}
    with okx_market(frames, start=to_ms("2024-05-01"), end=None, wall_per_candle=0.05) as (okx, st, clock):
        point_at(monkeypatch, okx, st, retries=0)
        clock.resume()
        db = settings_env.data_dir / "okx_btcusdt_1m_realtime.db"
        # each run ends on its event (candles in the table) with Ctrl-C; --duration is only the bound
        with ctrl_c_when(lambda: min(closed_rows(db, s) for s in ("BTCUSDT", "ETHUSDT")) >= 20):
            code, out, err = streamer_cli(["--exchange", "okx", "--symbols", "BTC/USDT,ETH/USDT", "--duration",
                                           "300", "--backfill-minutes", "20"], capsys)
        assert code == 0, err
        assert out.startswith(f"{db}: ")
        for inst_id, df in frames.items():
            got = read_klines(db, inst_id.replace("-", ""), "1m")
            assert len(got) >= 20
            pd.testing.assert_frame_equal(got, okx_published(df.loc[got.index]), check_exact=True, check_freq=False)
            assert got.index.equals(df.loc[got.index[0]:got.index[-1]].index), "no gap"
        tdb = settings_env.data_dir / "okx_btcusdt_1m_trades_realtime.db"
        with ctrl_c_when(lambda: closed_rows(tdb, "BTCUSDT") >= 10):
            code, out, err = streamer_cli(["--exchange", "okx", "--symbol", "BTC/USDT", "--stream", "trades",
                                           "--aggregate", "1m", "--duration", "300", "--backfill-minutes", "10"],
                                          capsys)
        assert code == 0, err
        got = read_klines(tdb, "BTCUSDT", "1m")
        want = frames["BTC-USDT"].loc[got.index]
        assert len(got) >= 10
        pd.testing.assert_frame_equal(got[["open", "high", "low", "close", "volume"]],
                                      want[["open", "high", "low", "close", "volume"]], check_freq=False)
        code, out, err = streamer_cli(["--exchange", "okx", "--symbol", "BTC/USDX", "--duration", "1"], capsys)
        assert code == 2 and err.count("\n") == 1 and "unknown symbol 'BTC/USDX' on okx" in err, err


# ---------------------------------------------------------------------------- protocol
def test_local_okx_speaks_the_v5_websocket_protocol(settings_env, monkeypatch):
    """What CCXT relies on, checked on the wire: URLs rebased onto CCXT_WS_URLS, one ack per
    subscribed argument, the snapshot then confirm 0/1 pushes equal to REST's candle, text
    ping/pong, error events 60018 (wrong URL/channel) and 60012 (bad request)."""
    df = okx_frame("BTCUSDT", "2024-03-01", "2024-03-01 02:00")
    with okx_market({"BTC-USDT": df}, start=to_ms("2024-03-01 01:00:10"), end=None, wall_per_candle=0.2,
                    updates_per_candle=2) as (okx, st, clock):
        point_at(monkeypatch, okx, st)
        ex = make_exchange(OKX, get_settings(), pro=True)
        assert (ex.get_url("candle1m"), ex.get_url("trades")) == (f"{st.ws_url}/ws/v5/business",
                                                                   f"{st.ws_url}/ws/v5/public")
        assert ex.toolkit_url == okx.url

        async def session():
            try:
                async with aiohttp.ClientSession() as http, http.ws_connect(f"{st.ws_url}/ws/v5/business") as ws:
                    await ws.send_str(json.dumps({"op": "subscribe", "id": "7", "args": [
                        {"channel": "candle1m", "instId": "BTC-USDT"}, {"channel": "candle1m", "instId": "XRP-USDT"}]}))
                    got = [json.loads(await ws.receive_str()) for _ in range(3)]
                    clock.resume()
                    pushes = [json.loads(await ws.receive_str()) for _ in range(3)]
                    await ws.send_str("ping")
                    while await ws.receive_str() != "pong":
                        pass
                    await ws.send_str("{nope")
                    while "event" not in (bad := json.loads(await ws.receive_str())):
                        pass
                async with aiohttp.ClientSession() as http, http.ws_connect(f"{st.ws_url}/ws/v5/public") as ws:
                    await ws.send_str(json.dumps({"op": "subscribe", "args": [{"channel": "candle1m",
                                                                              "instId": "BTC-USDT"}]}))
                    wrong_url = json.loads(await ws.receive_str())
                rest = await ex.fetch_ohlcv("BTC/USDT", "1m", to_ms("2024-03-01 01:00"), 1)
                return got, pushes, bad, wrong_url, rest
            finally:
                await ex.close()

        got, pushes, bad, wrong_url, rest = run(session())
    ack, snap, err = got
    assert ack == {"id": "7", "event": "subscribe", "arg": {"channel": "candle1m", "instId": "BTC-USDT"},
                   "connId": ack["connId"]}
    assert err["event"] == "error" and err["code"] == "60018" and "XRP-USDT" in err["msg"] and err["id"] == "7"
    assert snap["arg"] == {"channel": "candle1m", "instId": "BTC-USDT"} and snap["data"][0][8] == "0"
    assert snap["data"][0][0] == str(to_ms("2024-03-01 01:00"))
    assert [p["data"][0][8] for p in pushes] == ["0", "0", "1"]
    final = pushes[-1]["data"][0]
    row = df.loc["2024-03-01 01:00"]
    assert [float(x) for x in final[1:6]] == [row.open, row.high, row.low, row.close, row.volume]
    assert float(final[7]) == row.quote_volume and float(final[6]) == row.quote_volume  # spot: volCcy = quote
    assert rest[0][:6] == [float(x) for x in final[:6]], "REST serves the candle the stream closed"
    assert bad["event"] == "error" and bad["code"] == "60012"
    assert wrong_url["event"] == "error" and wrong_url["code"] == "60018", "candles live on /business only"
