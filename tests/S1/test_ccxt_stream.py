"""S1/ccxt_stream.py: closed candles from ccxt.pro's Binance ``watch_ohlcv`` against the local
exchange (REST) and its WebSocket replay (S1/local_stream.py) on one accelerated clock,
with the connection dropped on a schedule: every closed candle arrives once, in order,
with the exchange's values, from the stream or from the REST backfill."""

from __future__ import annotations

import asyncio
import socket
from contextlib import aclosing

import numpy as np
import pandas as pd
import pytest

from S1.ccxt_stream import StreamStats, _closed_from_cache, closed_candles, tap_rows
from S1.cli import NetworkError
from S1.intervals import to_ms
from S1.local_exchange import LocalBinance, candles_to_rows, kline_json_rows
from S1.local_stream import LocalStream, ReplayClock
from S1.rest_client import run
from S1.settings import get_settings
from S1.simulated import simulate_candles

pytest.importorskip("ccxt.pro")


def _published(df: pd.DataFrame) -> np.ndarray:
    """The exchange's rows for ``df`` as they go over the wire (8-decimal strings)."""
    return np.array([[float(x) for x in r[:11]] for r in kline_json_rows(candles_to_rows(df))])


async def _collect(n: int, **kw) -> list:
    out = []
    async with aclosing(closed_candles("BTC/USDT", "1m", **kw)) as gen:
        async for c in gen:
            out.append(c)
            if len(out) >= n:
                break
    return out


def test_every_closed_candle_once_through_drops(settings_env, monkeypatch):
    src = simulate_candles("BTCUSDT", "1m", "2024-03-01", "2024-03-01 04:00")
    start = to_ms("2024-03-01 00:30")
    clock = ReplayClock(start, speed=60_000 / 1000 / 0.06, paused=True)  # 0.06 s per 1m candle
    ex = LocalBinance(now_ms=clock.now_ms)
    ex.add_candles("BTCUSDT", "1m", src)
    stream = LocalStream(ex, clock, updates_per_candle=2, drop_every=0.4, ping_interval=None,
                         drop_kinds=("abort", "close", "shutdown"), shutdown_grace=0.05)
    stats = StreamStats()
    with ex:
        monkeypatch.setenv("BINANCE_API_URL", ex.api_url)
        monkeypatch.setenv("BINANCE_WS_URL", stream.ws_url)
        get_settings.cache_clear()
        clock.resume()
        got = run(asyncio.wait_for(_collect(60, start_ms=start, backoff_initial=0.01, backoff_max=0.05,
                                            stats=stats), 90))
    opens = [c.open_ms for c in got]
    assert opens == list(range(start, start + 60 * 60_000, 60_000)), "every candle once, in order, no hole"
    want = _published(src)
    want = want[np.searchsorted(want[:, 0], opens)]
    np.testing.assert_array_equal(np.array([c.row for c in got]), want)  # all 11 Binance columns, exact
    assert stats.reconnects >= 3 and stream.drops >= 3, (stats, stream.drops)
    assert {c.source for c in got} == {"stream", "backfill"} and stats.closed_stream >= 10
    assert got[0].store_row()[:4] == ("BTCUSDT", "1m", start, start + 59_999)


def test_gives_up_after_bounded_failures_with_one_line(settings_env, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with LocalBinance(now_ms=to_ms("2024-03-01")) as ex:
        ex.add_candles("BTCUSDT", "1m", simulate_candles("BTCUSDT", "1m", "2024-02-29 23:00", "2024-03-01"))
        monkeypatch.setenv("BINANCE_API_URL", ex.api_url)
        monkeypatch.setenv("BINANCE_WS_URL", f"ws://127.0.0.1:{dead}")
        get_settings.cache_clear()
        stats = StreamStats()
        with pytest.raises(NetworkError, match="websocket failed 3 times in a row") as err:
            run(asyncio.wait_for(_collect(1, max_failures=3, backoff_initial=0.01, backoff_max=0.02,
                                          stats=stats), 30))
    assert "\n" not in str(err.value) and stats.failures == 4


def test_taps_read_the_closed_flag_of_raw_messages():
    k = {"e": "kline", "k": {"t": 60_000, "T": 119_999, "o": "1.0", "h": "2.0", "l": "0.5", "c": "1.5", "v": "10",
                             "q": "15", "n": 3, "V": "4", "Q": "6", "x": True}}
    assert tap_rows("binance", k) == [[60_000.0, 1.0, 2.0, 0.5, 1.5, 10.0, 119_999.0, 15.0, 3.0, 4.0, 6.0, 1.0]]
    k["k"]["x"] = False
    assert tap_rows("binance", k)[0][11] == 0.0
    okx = {"arg": {"channel": "candle1m", "instId": "BTC-USDT"},
           "data": [["60000", "1", "2", "0.5", "1.5", "10", "15", "15", "1"]]}
    row = tap_rows("okx", okx)[0]
    assert row[:6] == [60_000.0, 1.0, 2.0, 0.5, 1.5, 10.0] and row[7] == 15.0 and row[11] == 1.0
    assert tap_rows("okx", {"event": "subscribe", "arg": {"channel": "candle1m"}}) == []
    # other exchanges: a candle is final once a newer one has started
    cache = [[0, 1, 1, 1, 1, 1], [60_000, 2, 2, 2, 2, 2], [120_000, 3, 3, 3, 3, 3]]
    assert [r[0] for r in _closed_from_cache(cache)] == [0, 60_000]
