"""S1/local/stream.py: the local WebSocket replay speaks Binance's stream protocol
(event layouts checked against the real capture), replays each candle as a few
in-progress updates then the closed one -- the very candles its REST twin serves on
the same clock --, pings, drops, refuses and answers SUBSCRIBE like the exchange."""

from __future__ import annotations

import asyncio
import json
import time

import aiohttp
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from S1.intervals import to_ms
from S1.local.exchange import LocalBinance, candles_to_rows
from S1.local.simulated import simulate_candles
from S1.local.stream import (
    FIRST_TRADE_ID,
    LocalStream,
    ReplayClock,
    agg_trade_event,
    first_trade_ids,
    kline_event,
    partial_row,
    trade_events,
    trades_for_kline,
)
from S1.rest_client import BinanceRest
from S1.settings import Settings

START = to_ms("2024-03-01 00:00")


@pytest.fixture
def market():
    """BTCUSDT 1m/1h simulated, paused clock at START, 1 replayed minute per 40 ms."""
    clock = ReplayClock(START, speed=60 / 0.04, paused=True)
    ex = LocalBinance(now_ms=clock.now_ms)
    ex.add_candles("BTCUSDT", "1m", simulate_candles("BTCUSDT", "1m", "2024-02-29 23:00", "2024-03-01 02:00"))
    ex.add_candles("BTCUSDT", "1h", simulate_candles("BTCUSDT", "1h", "2024-02-29", "2024-03-02"))
    # pong_timeout: a generous 2 s, so a loaded machine's late pong never cuts the well-behaved client off
    st = LocalStream(ex, clock, updates_per_candle=3, ping_interval=0.05, pong_timeout=2.0)
    with ex:
        yield ex, st, clock


async def collect(url: str, until, timeout: float = 10.0) -> list[dict]:
    out = []
    async with connect(url, compression=None) as ws:
        deadline = time.monotonic() + timeout
        while not until(out) and time.monotonic() < deadline:
            try:
                out.append(json.loads(await asyncio.wait_for(ws.recv(), 0.5)))
            except TimeoutError:
                pass
    return out


# ------------------------------------------------------------------ event layouts
def _capture(shared_dir):
    lines = (shared_dir / "data/api/ws_combined_stream_capture_2021-10-12.txt").read_text().splitlines()[1:]
    return [json.loads(line.split(": ", 1)[1]) for line in lines if ": " in line]


def _shape(obj):
    """Keys in order and value types, recursively."""
    if isinstance(obj, dict):
        return [(k, _shape(v)) for k, v in obj.items()]
    return type(obj).__name__


def test_events_have_the_real_binance_layout(shared_dir):
    real = _capture(shared_dir)
    real_kline = next(e for e in real if e["stream"].endswith("@kline_1m"))
    real_agg = next(e for e in real if e["stream"].endswith("@aggTrade"))
    row = candles_to_rows(simulate_candles("BTCUSDT", "1m", "2024-03-01", "2024-03-01 00:01"))[0]
    ours = json.loads(kline_event("BTCUSDT", "1m", row, 123, False, 77))
    assert _shape(ours) == _shape(real_kline["data"])
    assert ours["k"]["f"] == 77 and ours["k"]["L"] == 77 + int(row[8]) - 1 and ours["k"]["x"] is False
    blocks = trades_for_kline(row, 77)
    assert _shape(json.loads(agg_trade_event("BTCUSDT", 5, blocks[0], 123))) == _shape(real_agg["data"])
    trade = json.loads(trade_events("BTCUSDT", blocks[0], 123)[0])
    assert list(trade) == ["e", "E", "s", "t", "p", "q", "T", "m", "M"]
    # decimals as strings with 8 places, exactly like the REST rows
    assert ours["k"]["o"] == f"{row[1]:.8f}" and ours["k"]["v"] == f"{row[5]:.8f}"


@pytest.mark.parametrize("source", ["real_adabtc", "real_btc_1h", "simulated"])
def test_generated_trades_add_up_to_the_kline(source, request):
    if source == "simulated":
        rows = candles_to_rows(simulate_candles("ETHUSDC", "1m", "2024-03-01", "2024-03-01 03:00"))
    else:
        shared = request.getfixturevalue("shared_dir")
        from S1.kline_files import sniff_and_read

        name = "ADABTC-1m-2021-11-27.csv" if source == "real_adabtc" else "BTCUSDT-1h-2023-03.csv"
        rows = candles_to_rows(sniff_and_read(shared / "data/klines/binance_dump" / name,
                                               "1m" if "ADA" in name else "1h"))
    ids = first_trade_ids(rows)
    assert ids[0] == FIRST_TRADE_ID and (np.diff(ids) == rows[:-1, 8]).all()  # contiguous trade ids
    for row, fid in zip(rows, ids):
        blocks = trades_for_kline(row, int(fid))
        n = int(row[8])
        if n == 0:  # a halted candle: no trade at all
            assert blocks == []
            continue
        prices = [b.price for b in blocks]
        qty = np.array([b.qty_units for b in blocks], dtype=np.int64)
        taker = np.array([not b.buyer_maker for b in blocks])
        assert prices[0] == row[1] and prices[-1] == row[4] and max(prices) == row[2] and min(prices) == row[3]
        assert qty.sum() == round(row[5] * 1e8) and qty[taker].sum() == round(row[9] * 1e8)
        quote = sum(p * q for p, q in zip(prices, qty / 1e8))
        assert quote == pytest.approx(row[7], rel=1e-9)
        assert sum(p * q for p, q, t in zip(prices, qty / 1e8, taker) if t) == pytest.approx(row[10], rel=1e-9,
                                                                                             abs=1e-12)
        assert blocks[0].first_id == fid and blocks[-1].last_id == fid + n - 1
        assert all(b.first_id == a.last_id + 1 for a, b in zip(blocks, blocks[1:]))
        times = [b.time_ms for b in blocks]
        assert times == sorted(times) and row[0] <= times[0] and times[-1] <= row[6]


@pytest.mark.parametrize("n,vol,buy", [(1, 0.5, 0.5), (1, 1e-8, 0.0), (2, 3.0, 1.0), (3, 2.0, 2.0), (5, 1e-8, 1e-8)])
def test_thin_klines_still_get_consistent_trades(n, vol, buy):
    price = 100.0 if n != 2 else 101.0
    row = np.array([0, 100.0, price, 100.0, price, vol, 59_999, vol * 100.0, n, buy, buy * 100.0])
    blocks = trades_for_kline(row, 10)
    assert 1 <= len(blocks) <= n
    assert sum(b.last_id - b.first_id + 1 for b in blocks) == n and blocks[0].first_id == 10
    assert sum(b.qty_units for b in blocks) == round(vol * 1e8)
    assert blocks[0].price == 100.0 and blocks[-1].price == price


# ------------------------------------------------------------------------ replay
def test_each_candle_is_a_few_updates_then_the_closed_one_as_rest_serves_it(market):
    ex, st, clock = market

    async def scenario():
        task = asyncio.create_task(collect(f"{st.ws_url}/stream?streams=btcusdt@kline_1m/btcusdt@kline_1h",
                                           until=lambda out: clock.finished))
        deadline = time.monotonic() + 30
        while not st.connections and time.monotonic() < deadline:  # subscribed before the clock runs
            await asyncio.sleep(0.01)
        assert st.connections, "the stream never connected"
        clock.end_ms = START + 6 * 60_000
        clock.resume()
        events = await task
        async with BinanceRest(Settings(_env_file=None, binance_api_url=ex.api_url)) as api:
            rest = await api.klines_range("BTCUSDT", "1m", START, START + 6 * 60_000)
        return events, rest

    events, rest = asyncio.run(scenario())
    assert {e["stream"] for e in events} == {"btcusdt@kline_1m"}  # no 1h event within 6 minutes
    ks = [e["data"]["k"] for e in events]
    assert all(e["data"]["e"] == "kline" and e["data"]["s"] == "BTCUSDT" for e in events)
    opens = sorted({k["t"] for k in ks})
    assert opens == [START + i * 60_000 for i in range(6)]
    for t, r in zip(opens, rest):
        mine = [k for k in ks if k["t"] == t]
        assert [k["x"] for k in mine] == [False, False, False, True]
        closed = mine[-1]
        assert [float(closed[c]) for c in "ohlcvqVQ"] == [r[1], r[2], r[3], r[4], r[5], r[7], r[9], r[10]]
        assert closed["n"] == r[8] and closed["T"] == r[6]
        for k in mine[:-1]:  # in progress: inside the final range, volumes growing
            assert float(k["l"]) >= r[3] and float(k["h"]) <= r[2] and float(k["v"]) <= r[5]
        assert [float(k["v"]) for k in mine] == sorted(float(k["v"]) for k in mine)
    times = [e["data"]["E"] for e in events]
    assert times == sorted(times) and times[-1] == START + 6 * 60_000  # E = the replay clock


def test_raw_stream_pings_and_pong_timeout(market):
    ex, st, clock = market
    clock.resume()

    async def scenario():
        async with connect(f"{st.ws_url}/ws/btcusdt@kline_1m", compression=None) as ws:
            first = json.loads(await asyncio.wait_for(ws.recv(), 10))
            until = time.monotonic() + 30  # generous: what we wait for is three answered pings
            while not (st.connections[0].pongs >= 3) and time.monotonic() < until:
                try:  # keep reading (websockets answers pings while we read)
                    await asyncio.wait_for(ws.recv(), 0.05)
                except TimeoutError:
                    pass
        # a client that never answers pings is cut off, as Binance does
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(f"{st.ws_url}/ws/btcusdt@kline_1m", autoping=False) as ws:
                async for msg in ws:
                    if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                        break
                return first, ws.close_code

    first, code = asyncio.run(scenario())
    assert first["e"] == "kline" and "stream" not in first  # raw streams are not wrapped
    conns = st.connections
    assert conns[0].pings >= 3 and conns[0].pongs >= 3     # websockets answered every ping
    assert conns[1].ended_by == "pong-timeout" and code == 1008
    assert conns[1].pings == 1 and conns[1].pongs == 0   # cut off at the first unanswered ping


def test_drop_kinds_refusals_and_requests(market):
    ex, st, clock = market
    st.drop_every, st.drop_kinds, st.shutdown_grace = 0.15, ("shutdown", "close", "abort"), 0.2
    clock.resume()
    url = f"{st.ws_url}/stream?streams=btcusdt@kline_1m"

    async def scenario():
        seen = []
        for _ in range(3):
            async with connect(url, compression=None) as ws:
                try:
                    async for raw in ws:
                        seen.append(json.loads(raw))
                except ConnectionClosed as exc:
                    seen.append(("closed", exc.rcvd.code if exc.rcvd else None))
                else:
                    seen.append(("closed", ws.close_code))
        st.refuse(1)
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, compression=None):
                pass
        async with connect(url, compression=None) as ws:
            await ws.send(json.dumps({"method": "SUBSCRIBE", "params": ["btcusdt@kline_1h"], "id": 1}))
            await ws.send(json.dumps({"method": "LIST_SUBSCRIPTIONS", "id": 2}))
            await ws.send(json.dumps({"method": "NOPE", "id": 3}))
            replies = []
            while len(replies) < 3:
                msg = json.loads(await ws.recv())
                if "id" in msg:
                    replies.append(msg)
        return seen, refused.value.response.status_code, replies

    seen, status, replies = asyncio.run(scenario())
    shutdown = [m for m in seen if isinstance(m, dict) and m.get("stream") == "!serverShutdown"]
    assert len(shutdown) == 1 and list(shutdown[0]["data"]) == ["e", "E"]
    assert shutdown[0]["data"]["e"] == "serverShutdown"
    closes = [m for m in seen if isinstance(m, tuple)]
    assert closes[0] == ("closed", 1001)  # shutdown: closed after the grace period (we did not leave)
    assert closes[1] == ("closed", 1001)  # the 24 h-style close
    assert closes[2] == ("closed", None)  # TCP reset: no close frame
    assert status == 503
    assert replies[0] == {"result": None, "id": 1}
    assert replies[1] == {"result": ["btcusdt@kline_1m", "btcusdt@kline_1h"], "id": 2}
    assert "error" in replies[2]


def test_replay_clock(monkeypatch):
    import types

    import S1.local.stream as stream_mod

    wall = [100.0]  # an injected wall clock (the module's monotonic source); steps exact in binary
    monkeypatch.setattr(stream_mod, "time", types.SimpleNamespace(monotonic=lambda: wall[0], time=time.time))
    c = ReplayClock(1_000, speed=8, end_ms=6_000, paused=True)
    wall[0] += 0.25
    assert c.now_ms() == 1_000 and c.wall_seconds_until(2_000) is None
    c.resume()
    wall[0] += 0.25
    assert c.now_ms() == 1_000 + 2_000                  # 2 s of replay in 250 ms
    assert c.wall_seconds_until(4_000) == 0.125
    assert c.wall_seconds_until(9_000) is None          # beyond the end
    c.pause()
    frozen = c.now_ms()
    wall[0] += 0.25
    assert c.now_ms() == frozen == 3_000
    c.resume()
    wall[0] += 0.5
    assert c.now_ms() == 6_000 and c.finished
    with pytest.raises(ValueError):
        ReplayClock(0, speed=0)


def test_in_progress_events_are_what_rest_serves_at_that_instant(btc_1h):
    """The stream renders the candle in progress with a float copy of the REST
    server's formula: both must give the very same numbers."""
    rows = candles_to_rows(btc_1h.iloc[:300])
    rng = np.random.default_rng(3)
    for row in rows:
        for t in (row[0], row[0] + 1, row[6], *rng.integers(int(row[0]), int(row[6]), 3)):
            ours = partial_row(row.tolist(), float(3_600_000), int(t))
            rest = LocalBinance.partial_candle(row, "1h", int(t))
            assert ours == rest.tolist()
            assert kline_event("BTCUSDT", "1h", ours, 1, False, 5) == kline_event("BTCUSDT", "1h", rest, 1, False, 5)
