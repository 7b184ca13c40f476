"""``python S1/streamer.py --exchange binance --market swap``: the USDⓈ-M perpetual streamed through
ccxt.pro's Binance class, end to end offline.

The local server (S1/local/futures.py on a LocalBinance) serves the perpetual over fapi REST *and*
over its ``fstream`` websocket (:class:`S1.local.futures.LocalFuturesStream`), next to the spot
klines and spot streams of the same symbol at other prices (the perpetual trades +4 bp over
spot), all on one accelerated clock: a client that reads the spot market anywhere -- REST backfill
or stream -- stores spot values and fails the comparison with the perpetual's values."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
import time

import aiohttp
import numpy as np
import pandas as pd
import pytest

from S1.ccxt_source import Venue, make_exchange
from S1.ccxt_stream import CcxtStreamer
from S1.intervals import to_ms
from S1.local.exchange import LocalBinance
from S1.local.futures import FSTREAM_PREFIX, LocalFutures
from S1.local.simulated import simulate_candles
from S1.rest_client import run
from S1.settings import Settings, get_settings
from S1.stream_store import read_klines
from tests.S1.stream_harness import (
    capture,
    closed_rows,
    ctrl_c_when,
    db_rows,
    fast,
    local_futures_market,
    published,
    replay,
    streamer_cli,
)

pytest.importorskip("ccxt.pro")

SWAP = Venue("binance", "swap")


def _point(monkeypatch, server: LocalBinance, ws_url: str, retries: int = 2) -> None:
    monkeypatch.setenv("BINANCE_API_URL", server.api_url)
    monkeypatch.setenv("BINANCE_WS_URL", ws_url)
    monkeypatch.setenv("HTTP_MAX_RETRIES", str(retries))
    get_settings.cache_clear()


def _window(df: pd.DataFrame, start_ms: int, end_ms: int) -> pd.DataFrame:
    return df.loc[pd.Timestamp(start_ms, unit="ms", tz="UTC"):pd.Timestamp(end_ms - 1, unit="ms", tz="UTC")]


# ------------------------------------------------------------------------- URLs
def test_futures_streams_follow_a_local_ws_url_and_stay_on_binance_hosts(settings_env):
    local = Settings(binance_api_url="http://127.0.0.1:9/api", binance_ws_url="ws://127.0.0.1:9")
    ex = make_exchange(SWAP, local, pro=True)
    ws = ex.urls["api"]["ws"]
    assert ws["spot"] == "ws://127.0.0.1:9/ws"
    assert ws["linear"] == "ws://127.0.0.1:9/fstream/ws"
    assert ws["inverse"] == "ws://127.0.0.1:9/dstream/ws"  # not spot's /ws: COIN-M stays apart
    assert ws["ws-api"]["spot"] == "ws://127.0.0.1:9/ws-api/v3"  # as S7's local user stream
    # what ccxt.pro opens for USDⓈ-M klines (its category route), and nothing left on a Binance host
    assert ex.get_ws_url("linear", "market") == f"ws://127.0.0.1:9{FSTREAM_PREFIX}/market/ws"
    assert not [u for u in _leaves(ws) if "binance" in u]
    # real Binance hosts (live, data-stream, testnet) keep CCXT's futures URLs untouched
    for host in ("wss://stream.binance.com:9443", "wss://data-stream.binance.vision",
                 "wss://stream.testnet.binance.vision"):
        ws = make_exchange(SWAP, Settings(binance_ws_url=host), pro=True).urls["api"]["ws"]
        assert ws["linear"] == "wss://fstream.binance.com/ws" and ws["spot"] == host + "/ws", host
    # a relay with a path: everything under it; CCXT_WS_URLS=binance=... still overrides all of it
    ws = make_exchange(SWAP, Settings(binance_ws_url="wss://relay.example/bn"), pro=True).urls["api"]["ws"]
    assert ws["linear"] == "wss://relay.example/bn/fstream/ws"
    over = Settings(binance_ws_url="ws://127.0.0.1:9", ccxt_ws_urls="binance=ws://10.0.0.1:7")
    assert make_exchange(SWAP, over, pro=True).urls["api"]["ws"]["linear"] == "ws://10.0.0.1:7/fstream/ws"


def _leaves(tree):
    if isinstance(tree, dict):
        for v in tree.values():
            yield from _leaves(v)
    elif isinstance(tree, str):
        yield tree


# -------------------------------------------------------------- the wire protocol
def test_fstream_replays_the_perpetual_rest_serves(settings_env):
    """SUBSCRIBE on CCXT's path: every event is the fapi candle at the event time (in progress:
    the partial values REST serves at that instant; closed: the REST row); spot-only symbols
    have no futures stream; the spot stream on the same server keeps spot prices."""
    src = simulate_candles("BTCUSDT", "1m", "2024-03-01", "2024-03-01 01:00")
    eth = simulate_candles("ETHUSDT", "1m", "2024-03-01", "2024-03-01 01:00")
    start = to_ms("2024-03-01 00:10")
    with local_futures_market(src, start=start, end=to_ms("2024-03-01 00:14"), wall_per_candle=0.1,
                              interval="1m", updates_per_candle=2) as (server, fut, fst, spot, clock):
        server.add_candles("ETHUSDT", "1m", eth)  # spot only
        base = fst.ws_url

        async def collect(path: str, params: list[str]) -> tuple[dict, list[dict]]:
            async with aiohttp.ClientSession() as http, http.ws_connect(base + path) as ws:
                await ws.send_str(json.dumps({"method": "SUBSCRIBE", "params": params, "id": 7}))
                ack = json.loads((await asyncio.wait_for(ws.receive(), 5)).data)
                clock.resume()
                events: list[dict] = []
                deadline = time.monotonic() + 10  # (ws.receive's own timeout restarts at each ping)
                while time.monotonic() < deadline and sum(e["k"]["x"] for e in events) < 4:
                    try:
                        msg = await asyncio.wait_for(ws.receive(), 0.5)
                    except asyncio.TimeoutError:
                        continue
                    if msg.type != aiohttp.WSMsgType.TEXT:
                        break
                    events.append(json.loads(msg.data))
                drain = time.monotonic() + 0.3  # anything else (ETHUSDT, a 5th minute) would arrive now
                while (left := drain - time.monotonic()) > 0:
                    try:
                        msg = await asyncio.wait_for(ws.receive(), left)
                    except asyncio.TimeoutError:
                        break
                    if msg.type == aiohttp.WSMsgType.TEXT:
                        events.append(json.loads(msg.data))
                return ack, events

        ack, events = run(collect(f"{FSTREAM_PREFIX}/market/ws/0", ["btcusdt@kline_1m", "ethusdt@kline_1m"]))
        clock.pause()
    assert ack == {"result": None, "id": 7}
    assert {e["s"] for e in events} == {"BTCUSDT"}, "ETHUSDT is not listed on futures: no stream"
    perp = fut.series[("last", "BTCUSDT", "1m")]
    closed = [e for e in events if e["k"]["x"]]
    assert [e["k"]["t"] for e in closed] == [to_ms(f"2024-03-01 00:{m}") for m in (10, 11, 12, 13)]
    assert len(events) == 3 * len(closed)  # 2 updates in progress + the closed candle, per minute
    fields = [("o", 1), ("h", 2), ("l", 3), ("c", 4), ("v", 5), ("q", 7), ("V", 9), ("Q", 10)]
    spot_close = src["close"].to_numpy()
    for e in events:
        k = e["k"]
        i = int(np.searchsorted(perp[:, 0], k["t"]))
        row = perp[i] if k["x"] else LocalBinance.partial_candle(perp[i], "1m", e["E"])
        rest = json.loads(LocalFutures._json_row("last", row))  # what /fapi/v1/klines answers at E
        assert [k[f] for f, _ in fields] == [rest[j] for _, j in fields], e
        assert (k["T"], k["n"], k["i"], k["s"]) == (rest[6], rest[8], "1m", "BTCUSDT")
        assert k["x"] == (e["E"] == k["T"] + 1)
        if k["x"]:
            assert float(k["c"]) != spot_close[i], "perpetual prices, not spot"
    assert spot is not None and spot.connections == [] and len(fst.connections) == 1


# ----------------------------------------------------------------- the streamer
def test_perpetual_candles_once_through_drops_with_fapi_values_not_spot(settings_env, monkeypatch, tmp_path):
    start, end = to_ms("2024-03-01 01:00"), to_ms("2024-03-01 02:00")
    src = simulate_candles("BTCUSDT", "1m", "2024-02-29 23:00", "2024-03-01 03:00")
    with local_futures_market(src, start=start, end=end, wall_per_candle=0.05, interval="1m", updates_per_candle=2,
                              drop_every=0.6, drop_kinds=("abort", "close")) as (server, fut, fst, spot, clock):
        _point(monkeypatch, server, fst.ws_url)
        fst.refuse(1)
        db = tmp_path / "swap.db"
        s = CcxtStreamer(fast(symbols=("BTCUSDT",), db_path=db, backfill_minutes=30), venue=SWAP,
                         markets={"BTCUSDT": "BTC/USDT"})
        summary = run(replay(s, clock, done=lambda: s.watermarks.get("BTCUSDT", 0) >= end
                             and fst.drops >= 5 and s.stats.reconnects >= 5, timeout=120))  # 5+ disconnects
        drops, refused = fst.drops, [r for r in server.requests_to(FSTREAM_PREFIX) if r.status == 503]
        spot_rest, fapi = server.requests_to("/api/v3/klines"), server.requests_to("/fapi/v1/klines")
        spot_conns, fut_conns = list(spot.connections), list(fst.connections)
    window = _window(fut.frames[("last", "BTCUSDT")], start - 30 * 60_000, end)
    got = read_klines(db, "BTCUSDT", "1m")
    assert len(window) == 90
    pd.testing.assert_frame_equal(got, published(window))  # every column: the perpetual's fapi values
    spot_window = _window(src, start - 30 * 60_000, end)
    assert (got["close"].to_numpy() != spot_window["close"].to_numpy()).all(), "spot prices were stored"
    rows = db_rows(db)
    assert len(rows) == len({r[:3] for r in rows}) == 90 and all(r[3] == 1 for r in rows)
    con = sqlite3.connect(db)
    assert dict(con.execute("SELECT symbol, complete_until FROM kline_watermark")) == {"BTCUSDT": end}
    con.close()
    # both halves worked: closed candles from the fstream and from fapi backfills, through drops
    assert summary.closed_stream > 0 and summary.closed_rest >= 30 and summary.in_progress_rows > 0, summary
    assert summary.closed_stream + summary.closed_rest >= len(rows), summary  # the split: where drops fell
    assert drops >= 5 and summary.reconnects >= 5 and len(refused) == 1, (drops, summary, refused)
    assert len(fut_conns) >= 6 and spot_conns == [] and spot_rest == [] and fapi


def test_cli_market_swap_writes_binance_swap_file(settings_env, monkeypatch, capsys):
    src = simulate_candles("BTCUSDT", "1m", "2024-04-30 22:00", "2024-05-01 03:00")
    with local_futures_market(src, start=to_ms("2024-05-01"), end=None, wall_per_candle=0.05,
                              interval="1m") as (server, fut, fst, spot, clock):
        server.add_candles("ETHUSDT", "1m", simulate_candles("ETHUSDT", "1m", "2024-04-30 22:00", "2024-05-01"))
        _point(monkeypatch, server, fst.ws_url, retries=0)
        clock.resume()
        db = settings_env.data_dir / "binance-swap_btcusdt_1m_realtime.db"
        made = capture(monkeypatch, CcxtStreamer)
        # ends on the events (20 candles in the table, one of them closed by the stream) with Ctrl-C;
        # --duration is only the bound
        with ctrl_c_when(lambda: made[-1].stats.closed_stream >= 1 and closed_rows(db, "BTCUSDT") >= 20):
            code, out, err = streamer_cli(["--exchange", "binance", "--market", "swap", "--symbol", "BTC/USDT",
                                           "--duration", "300", "--backfill-minutes", "20"], capsys)
        assert code == 0, err
        assert out.startswith(f"{db}: ") and not (settings_env.data_dir / "btcusdt_1m_realtime.db").exists()
        got = read_klines(db, "BTCUSDT", "1m")
        assert len(got) >= 20 and got.index.is_unique
        assert (np.diff(got.index.asi8) == 60_000_000_000).all(), "gap-free"
        pd.testing.assert_frame_equal(got, published(fut.frames[("last", "BTCUSDT")].loc[got.index]))
        assert fst.connections and spot.connections == []
        assert int(re.search(r"(\d+) candles closed on the stream", out).group(1)) > 0, out
        # a symbol listed on spot only: one line naming the market that has it, exit 2
        code, out, err = streamer_cli(["--exchange", "binance", "--market", "swap", "--symbol", "ETH/USDT",
                                       "--duration", "1"], capsys)
        assert code == 2 and err.count("\n") == 1 and "unknown symbol 'ETH/USDT' on binance (swap)" in err, err
