"""Candle sources: the streamer's SQLite table (read while it is written, with a
backfilled gap), REST polling around close times, and the fast replay."""

from __future__ import annotations

import asyncio
import time

import pandas as pd
import pytest

from S1.errors import UserError
from S7.sources import CandleEvent, DbSource, PriceEvent, ReplaySource, RestPollSource
from tests.S7.helpers import run

SYM = "BTCUSDT"


def _rows(df: pd.DataFrame, closed=True):
    from S1.datasets import candles_to_rows
    from S1.stream_store import rows_from_klines

    return rows_from_klines(SYM, "1m", candles_to_rows(df), closed=closed)


def test_db_source_reads_the_streamers_table_while_it_is_written(tmp_path):
    from S1.local.simulated import simulate_candles
    from S1.stream_store import KlineStore

    df = simulate_candles(SYM, "1m", "2024-01-01 00:00", "2024-01-01 01:00")   # 60 candles
    db = tmp_path / "btcusdt_1m_realtime.db"
    writer = KlineStore(db)
    writer.write(_rows(df.iloc[:50]))

    async def go():
        src = DbSource(db, SYM, "1m", poll=0.01)
        hist = await src.history(30)
        assert len(hist) == 30 and hist.index[-1] == df.index[49]
        stop = asyncio.Event()
        got: list = []

        async def consume():
            async for ev in src.events(stop):
                got.append(ev)
                if isinstance(ev, CandleEvent) and ev.open_ms == int(df.index[59].value // 1_000_000):
                    stop.set()

        task = asyncio.create_task(consume())
        await asyncio.sleep(0.05)
        writer.write(_rows(df.iloc[50:51]))                      # one closed candle
        writer.write(_rows(df.iloc[51:52], closed=False))        # the next one in progress: a price
        deadline = time.monotonic() + 30                          # ... that the poller saw (waited for)
        while not any(isinstance(e, PriceEvent) for e in got) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        writer.write(_rows(df.iloc[51:60]))                      # a backfill of 9 candles in one commit
        await asyncio.wait_for(task, 60)
        candles = [e for e in got if isinstance(e, CandleEvent)]
        assert [c.candle.index[0] for c in candles] == list(df.index[50:60])
        assert all(len(c.candle) == 1 and "is_closed" not in c.candle.columns for c in candles)
        assert (candles[3].candle["close"].iloc[0] == df["close"].iloc[53])
        prices = [e for e in got if isinstance(e, PriceEvent)]
        assert prices and prices[0].price == pytest.approx(df["close"].iloc[51])
        assert got.index(prices[0]) > got.index(candles[0])
    run(go())
    writer.close()


def test_db_source_missing_file_names_the_streamer_command(tmp_path):
    with pytest.raises(UserError, match="start the streamer first: python S1/streamer.py --symbol BTCUSDT"):
        DbSource(tmp_path / "nope.db", SYM, "1m")


def test_replay_source_splits_warmup_and_replays_in_order(settings_env, monkeypatch):
    from S1.local.exchange import LocalBinance
    from S1.settings import get_settings

    with LocalBinance(simulate=True, simulate_days=10) as server:
        monkeypatch.setenv("BINANCE_API_URL", server.api_url)
        get_settings.cache_clear()

        async def go():
            src = ReplaySource(SYM, "1h", 2, warmup=100)
            hist = await src.history(100)
            assert len(hist) == 100 and src.replay_count in (47, 48)
            evs = [e async for e in src.events(asyncio.Event())]
            cands = [e for e in evs if isinstance(e, CandleEvent)]
            assert len(cands) == src.replay_count and cands[0].candle.index[0] > hist.index[-1]
            first_price, first = evs[0], evs[1]
            assert first_price.price == first.candle["open"].iloc[0] and first_price.t_ms == first.open_ms
            assert first.now_ms == int(first.candle["close_time"].iloc[0].value // 1_000_000) + 1
            last_close = int(cands[-1].candle["close_time"].iloc[0].value // 1_000_000)
            assert last_close < server.now_ms()                  # never the candle in progress
        run(go())
        with pytest.raises(UserError, match="did you mean BTCUSDT"):
            run(ReplaySource("BTCUSTD", "1h", 2, warmup=10).history(10))
    get_settings.cache_clear()


def test_rest_poll_source_picks_up_the_next_close(settings_env, monkeypatch):
    from S1.local.exchange import LocalBinance
    from S1.settings import get_settings

    server = LocalBinance(simulate=True, simulate_days=2)
    # a server clock 1.5 s before a minute boundary (whatever the local time), *behind* the real clock:
    # the simulated market is made up to the real clock, so a server clock ahead of it (up to 58.5 s)
    # would lack the last closed candle when the real minute had not turned yet (a flake: 49 of 50)
    local = int(time.time() * 1000)
    shift = -(local % 60_000) - 1_500
    server.set_now(lambda: int(time.time() * 1000) + shift)
    with server:
        monkeypatch.setenv("BINANCE_API_URL", server.api_url)
        get_settings.cache_clear()

        async def go():
            src = RestPollSource(SYM, "1m", poll=0.2)
            hist = await src.history(50)
            assert len(hist) == 50
            stop = asyncio.Event()
            got = []
            n0 = len(server.requests_to("/klines"))
            async for ev in src.events(stop):
                got.append(ev)
                if isinstance(ev, CandleEvent):
                    break
            assert got[-1].candle.index[0] == hist.index[-1] + pd.Timedelta(minutes=1)
            # picked up at the first poll after the close, as the server's clock saw it: every
            # earlier poll arrived before the minute ended, none after it went unanswered
            close_ms = int((got[-1].candle.index[0] + pd.Timedelta(minutes=1)).value // 1_000_000)
            polls = server.requests_to("/klines")[n0:]
            after = [r for r in polls if int(r.arrived * 1000) + shift >= close_ms]
            assert polls and int(polls[-1].t * 1000) + shift >= close_ms   # the last one was answered after it
            assert after in ([], [polls[-1]])                                  # no later poll was needed
        run(go())
    get_settings.cache_clear()


def test_session_end_names_why_a_loop_ended_and_cancels_its_timer():
    from S7.sources import SessionEnd

    async def run():
        stop = asyncio.Event()
        with SessionEnd(stop, 0.01) as end:          # --duration runs out: it sets stop
            await asyncio.wait_for(stop.wait(), timeout=30)
        timed_out = end.reason
        stop = asyncio.Event()
        with SessionEnd(stop, None) as end:
            stop.set()                               # Ctrl-C / SIGTERM
        signal = end.reason
        stop = asyncio.Event()
        with SessionEnd(stop, 0.01) as end:          # the data ended first: the timer must not fire later
            pass
        await asyncio.sleep(0.05)
        return timed_out, signal, end.reason, stop.is_set()

    assert asyncio.run(run()) == ("--duration 0.01s", "stop signal", "end of data", False)
