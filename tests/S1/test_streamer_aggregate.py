"""``--stream trades --aggregate 1m``: 1m candles built from trades, cross-checked
against the exchange's own klines -- on the real captured payloads, on trades the
local exchange derives from real (ADABTC) or simulated 1m klines, and end to end
through dropped connections."""

from __future__ import annotations

import asyncio
import json
import time

import numpy as np
import pandas as pd
import pytest
from websockets.asyncio.client import connect

from S1.datasets import candles_from_arrays
from S1.intervals import to_ms
from S1.local.exchange import LocalBinance, candles_to_rows
from S1.local.simulated import simulate_candles
from S1.local.stream import LocalStream, ReplayClock
from S1.settings import get_settings
from S1.stream_client import KlineStreamer
from S1.stream_config import StreamConfig
from S1.stream_store import read_klines
from S1.trade_aggregation import MinuteAggregator, parse_trade

PRICE_COLS = ["open", "high", "low", "close", "trades", "close_time"]


def published(df: pd.DataFrame) -> pd.DataFrame:
    """The exchange's own klines for ``df``: its values through Binance's 8-decimal JSON."""
    return candles_from_arrays(np.array([[float(f"{x:.8f}") for x in r] for r in candles_to_rows(df)]))


def _trade(agg, t, p, q, m, f, last=None, epoch=1):
    return agg.add(t, p, q, m, f, f if last is None else last, epoch=epoch)


# ----------------------------------------------------------------- the aggregator
def test_minute_from_contiguous_trades_follows_binance_rules():
    agg = MinuteAggregator("BTCUSDT")
    _trade(agg, 59_000, 100.0, 1.0, False, 10)                 # the chain starts before minute 1
    assert _trade(agg, 60_100, 101.0, 2.0, False, 11, 13) == ([], [0])  # 3 trades, taker buy; minute 0
    #                                                            was joined mid-way: not trusted
    _trade(agg, 70_000, 105.0, 1.0, True, 14)                  # high, taker sell
    _trade(agg, 80_000, 99.0, 4.0, True, 15)                   # low
    _trade(agg, 119_999, 102.0, 0.5, False, 16)                # close
    rows, bad = _trade(agg, 120_000, 103.0, 1.0, True, 17)     # a later minute closes it
    assert bad == [] and len(rows) == 1
    (sym, iv, t, T, o, h, lo, c, v, q, vb, qb, n, closed), = rows
    assert (sym, iv, t, T, closed) == ("BTCUSDT", "1m", 60_000, 119_999, 1)
    assert (o, h, lo, c) == (101.0, 105.0, 99.0, 102.0)
    assert v == pytest.approx(7.5) and n == 6
    assert q == pytest.approx(101 * 2 + 105 * 1 + 99 * 4 + 102 * 0.5)
    assert vb == pytest.approx(2.5) and qb == pytest.approx(101 * 2 + 102 * 0.5)  # taker buys: m false


def test_gaps_in_trade_ids_make_minutes_incomplete_and_quiet_minutes_flat():
    agg = MinuteAggregator("ETHUSDC")
    assert _trade(agg, 1_000, 10.0, 1.0, False, 1) == ([], [])
    rows, bad = _trade(agg, 61_000, 11.0, 1.0, False, 2)
    assert rows == [] and bad == [0]                           # minute 0: we joined mid-minute
    rows, bad = _trade(agg, 200_000, 12.0, 1.0, False, 3)      # contiguous: 2, 3 were quiet
    assert bad == [] and [r[2] for r in rows] == [60_000, 120_000]
    flat = rows[1]
    assert flat[4:8] == (11.0, 11.0, 11.0, 11.0) and flat[8:13] == (0.0, 0.0, 0.0, 0.0, 0)
    _trade(agg, 201_000, 12.5, 1.0, False, 4)
    rows, bad = _trade(agg, 202_000, 13.0, 1.0, False, 9)      # ids 5..8 missed inside minute 3
    assert rows == [] and bad == []
    rows, bad = _trade(agg, 241_000, 14.0, 1.0, False, 10)
    assert rows == [] and bad == [180_000]                     # minute 3 is not trusted
    assert _trade(agg, 241_500, 99.0, 1.0, False, 10) == ([], [])  # a replayed id is ignored
    assert agg.cur[4] == 14.0


def test_clock_closes_a_minute_only_if_the_connection_stayed_up():
    agg = MinuteAggregator("BTCUSDT")
    _trade(agg, 59_000, 10.0, 1.0, False, 1)
    _trade(agg, 61_000, 11.0, 1.0, False, 2, epoch=1)
    assert agg.close_due(121_500, 2_000, epoch=1, connected=True) == ([], [])  # within the grace
    assert agg.close_due(125_000, 2_000, epoch=2, connected=True) == ([], [])  # reconnected since
    assert agg.close_due(125_000, 2_000, epoch=1, connected=False) == ([], [])
    rows, bad = agg.close_due(125_000, 2_000, epoch=1, connected=True)
    assert [r[2] for r in rows] == [60_000] and agg.cur is None
    rows, _ = _trade(agg, 250_000, 12.0, 1.0, False, 3)      # the next contiguous trade: 2, 3 flat
    assert [r[2] for r in rows] == [120_000, 180_000]


# --------------------------------------------------------- real captured payloads
def _capture(shared_dir) -> list[dict]:
    lines = (shared_dir / "data/api/ws_combined_stream_capture_2021-10-12.txt").read_text().splitlines()[1:]
    return [json.loads(line.split(": ", 1)[1]) for line in lines if ": " in line]


def test_real_capture_aggtrade_rebuilds_the_real_kline(shared_dir):
    """LRCBTC's minute had one trade: the aggregate built from that real aggTrade
    equals the real kline event, field by field; NKNUSDT's last trade explains the
    kline's close and its whole taker-buy volume."""
    events = _capture(shared_dir)
    klines = {e["data"]["s"]: e["data"]["k"] for e in events if e["stream"].endswith("@kline_1m")}
    trades = {e["data"]["s"]: e["data"] for e in events if e["stream"].endswith("@aggTrade")}
    assert {"LRCBTC", "NKNUSDT"} <= set(klines) & set(trades)

    k, tr = klines["LRCBTC"], trades["LRCBTC"]
    agg = MinuteAggregator("LRCBTC")
    agg.last_id = k["f"] - 1  # the trade before the minute (so the chain covers it)
    agg.add(*parse_trade(tr), epoch=1)
    row = agg.current_row()
    assert row[2:4] == (k["t"], k["T"])
    assert row[4:8] == tuple(float(k[x]) for x in "ohlc")
    assert row[8:12] == pytest.approx(tuple(float(k[x]) for x in "vqVQ"), rel=1e-12)
    assert row[12] == k["n"] and agg.cur[10] is True

    k, tr = klines["NKNUSDT"], trades["NKNUSDT"]
    agg = MinuteAggregator("NKNUSDT")
    agg.add(*parse_trade(tr), epoch=1)
    row = agg.current_row()
    assert tr["l"] == k["L"] and tr["f"] > k["f"]          # we saw the minute's last trade only
    assert row[7] == float(k["c"])                          # close = last price
    assert row[10] == float(k["V"]) and row[11] == pytest.approx(float(k["Q"]), rel=1e-12)  # m false = taker buy
    assert agg.cur[10] is False                             # and we know the minute is not complete


def test_real_agg_trade_payload_parses(shared_dir):
    event = json.loads((shared_dir / "data/api/ws_spot_agg_trade.json").read_text())
    assert parse_trade(event["data"]) == (1675759520847, 1632.46, 0.34305, False, 228423, 228423)


# ------------------------------------------------- against the exchange's klines
@pytest.fixture(params=["real", "simulated"])
def minute_klines(request):
    if request.param == "real":
        shared = request.getfixturevalue("shared_dir")
        from S1.kline_files import sniff_and_read

        files = sorted((shared / "data/klines/binance_dump").glob("ADABTC-1m-2021-11-2*.csv"))
        df = sniff_and_read(files[0], "1m")
        return "ADABTC", df
    return "BTCUSDT", simulate_candles("BTCUSDT", "1m", "2024-02-01 00:00", "2024-02-01 00:12")


@pytest.mark.parametrize("kind", ["aggTrade", "trade"])
def test_trade_stream_aggregates_to_the_exchange_klines(minute_klines, kind):
    """Feed the local exchange's trade stream (trades consistent with its 1m klines)
    through the aggregator: every minute seen whole equals the exchange's kline."""
    symbol, df = minute_klines
    start = int(df.index[0].value // 10**6) - 30_000
    end = int(df.index[-1].value // 10**6) + 90_000
    clock = ReplayClock(start, speed=60 / 0.05, end_ms=end, paused=True)  # a minute per 50 ms
    ex = LocalBinance(now_ms=clock.now_ms)
    ex.add_candles(symbol, "1m", df)
    st = LocalStream(ex, clock, ping_interval=None)
    with ex:
        agg = MinuteAggregator(symbol)
        closed: list[tuple] = []

        async def listen():
            last = int(df.index[-2].value // 10**6)  # the last minute a later trade closes
            deadline = time.monotonic() + 120
            async with connect(f"{st.ws_url}/ws/{symbol.lower()}@{kind}", compression=None) as ws:
                clock.resume()
                # read until that minute is closed (what was sent before the clock ended is read too)
                while not (clock.finished and closed and closed[-1][2] >= last) and time.monotonic() < deadline:
                    try:
                        raw = await asyncio.wait_for(ws.recv(), 0.3)
                    except TimeoutError:
                        continue
                    rows, _ = agg.add(*parse_trade(json.loads(raw)), epoch=1)
                    closed.extend(rows)

        asyncio.run(listen())
    got = candles_from_arrays(np.array([[r[2], *r[4:8], r[8], r[3], r[9], r[12], r[10], r[11]] for r in closed]))
    # every minute but the first (no earlier trade id proves we saw it whole) and the last (no later
    # trade closes it)
    assert list(got.index) == list(df.index[1:-1])
    expected = published(df).loc[got.index]
    pd.testing.assert_frame_equal(got[PRICE_COLS], expected[PRICE_COLS])
    np.testing.assert_allclose(got[["volume", "taker_buy_base"]], expected[["volume", "taker_buy_base"]],
                               rtol=1e-12)
    np.testing.assert_allclose(got[["quote_volume", "taker_buy_quote"]],
                               expected[["quote_volume", "taker_buy_quote"]], rtol=1e-9)


# -------------------------------------------------------------------- end to end
def _run_trades(monkeypatch, tmp_path, df, symbol, *, kind, start, end, wall_per_minute, **stream_kw):
    clock = ReplayClock(start, speed=60 / wall_per_minute, end_ms=end, paused=True)
    ex = LocalBinance(now_ms=clock.now_ms)
    ex.add_candles(symbol, "1m", df)
    st = LocalStream(ex, clock, ping_interval=0.05, **stream_kw)
    with ex:
        monkeypatch.setenv("BINANCE_API_URL", ex.api_url)
        monkeypatch.setenv("BINANCE_WS_URL", st.ws_url)
        monkeypatch.setenv("HTTP_MAX_RETRIES", "2")
        get_settings.cache_clear()
        db = tmp_path / "trades.db"
        s = KlineStreamer(StreamConfig(symbols=(symbol,), stream="trades", trade_stream=kind, db_path=db,
                                       backfill_minutes=0, backoff_initial=0.01, backoff_max=0.05,
                                       status_every=0.5, commit_interval=0.01))

        async def go():
            task = asyncio.create_task(s.run())
            while not (s.stats.connections and s.watermarks):
                assert not task.done(), task.exception()
                await asyncio.sleep(0.01)
            clock.resume()
            deadline = time.monotonic() + 120
            while not (clock.finished and s.watermarks[symbol] >= end - end % 60_000) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            s.stop("test over")
            return await task

        summary = asyncio.run(go())
        return db, summary, st


def test_trades_mode_end_to_end_matches_the_klines(minute_klines, settings_env, monkeypatch, tmp_path):
    symbol, df = minute_klines
    start = int(df.index[0].value // 10**6) + 20_000    # join mid-minute: that minute comes from REST
    last_open = int(df.index[-2].value // 10**6)
    end = last_open + 60_000 + 30_000                    # a trade of the next minute closes the last one
    db, summary, st = _run_trades(monkeypatch, tmp_path, df, symbol, kind="aggTrade", start=start, end=end,
                                  wall_per_minute=0.06)
    got = read_klines(db, symbol, "1m")
    expected = published(df).loc[:pd.Timestamp(last_open, unit="ms", tz="UTC")]
    pd.testing.assert_frame_equal(got[PRICE_COLS], expected[PRICE_COLS])
    np.testing.assert_allclose(got.drop(columns=PRICE_COLS), expected.drop(columns=PRICE_COLS), rtol=1e-9)
    assert summary.incomplete_minutes == 1            # only the minute we joined in the middle of
    assert summary.closed_stream >= len(expected) - 2  # the rest was built from trades


def test_trades_mode_survives_drops(settings_env, monkeypatch, tmp_path):
    df = simulate_candles("SOLUSDT", "1m", "2024-02-01 00:00", "2024-02-01 01:00")
    start, end = to_ms("2024-02-01 00:00:10"), to_ms("2024-02-01 00:40:30")
    db, summary, st = _run_trades(monkeypatch, tmp_path, df, "SOLUSDT", kind="trade", start=start, end=end,
                                  wall_per_minute=0.04, drop_every=0.15)
    got = read_klines(db, "SOLUSDT", "1m")
    expected = published(df).loc["2024-02-01 00:00":"2024-02-01 00:39"]
    pd.testing.assert_frame_equal(got[PRICE_COLS], expected[PRICE_COLS])
    np.testing.assert_allclose(got.drop(columns=PRICE_COLS), expected.drop(columns=PRICE_COLS), rtol=1e-9)
    assert st.drops >= 5 and summary.reconnects >= 5
    assert summary.closed_stream > 0 and summary.closed_rest > 0 and summary.incomplete_minutes >= 1
