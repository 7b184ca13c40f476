"""The streamer test harness: the local exchange (REST) and its WebSocket replay
(S1/local/stream.py) on one accelerated clock, and helpers to run a streamer against them."""

from __future__ import annotations

import asyncio
import sqlite3
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from S1.datasets import candles_from_arrays
from S1.intervals import floor_ms, interval_ms
from S1.local.exchange import LocalBinance, candles_to_rows, kline_json_rows
from S1.local.stream import LocalStream, ReplayClock
from S1.settings import get_settings
from S1.stream_client import KlineStreamer
from S1.stream_config import StreamConfig


# -------------------------------------------------------------------------- harness
@contextmanager
def local_market(frames: dict, *, start: int, end: int | None, wall_per_candle: float, interval: str,
                 **stream_kw):
    """LocalBinance + LocalStream on one paused ReplayClock (``wall_per_candle`` s per candle)."""
    clock = ReplayClock(start, speed=interval_ms(interval) / 1000.0 / wall_per_candle, end_ms=end, paused=True)
    ex = LocalBinance(now_ms=clock.now_ms)
    for (symbol, iv), df in frames.items():
        ex.add_candles(symbol, iv, df)
    stream_kw.setdefault("ping_interval", 0.05)
    stream_kw.setdefault("pong_timeout", 2.0)
    st = LocalStream(ex, clock, **stream_kw)
    with ex:
        yield ex, st, clock


@contextmanager
def local_futures_market(source: pd.DataFrame, *, start: int, end: int | None, wall_per_candle: float,
                         interval: str, pair: str = "BTCUSDT", spot_stream: bool = True, **stream_kw):
    """A LocalBinance serving ``source`` as the *spot* klines of ``pair`` (REST and, with
    ``spot_stream``, the spot ``/ws`` streams), plus the USDⓈ-M futures routes and ``/fstream``
    streams (S1.local.futures) of the perpetual derived from it (+4 bp: other prices than spot), on one
    paused ReplayClock. Yields ``(server, futures, fstream, spot_or_None, clock)``;
    ``futures.frames[("last", pair)]`` is the perpetual frame served over REST and the stream."""
    from S1.local.futures import LocalFutures, LocalFuturesStream

    clock = ReplayClock(start, speed=interval_ms(interval) / 1000.0 / wall_per_candle, end_ms=end, paused=True)
    ex = LocalBinance(now_ms=clock.now_ms)
    ex.add_candles(pair, interval, source)
    fut = LocalFutures(ex)
    fut.frames = fut.add_pair(pair, interval, source)
    stream_kw.setdefault("ping_interval", 0.05)
    stream_kw.setdefault("pong_timeout", 2.0)
    spot = LocalStream(ex, clock, ping_interval=stream_kw["ping_interval"]) if spot_stream else None
    fst = LocalFuturesStream(fut, clock, **stream_kw)
    with ex:
        yield ex, fut, fst, spot, clock


def point_at(monkeypatch, ex: LocalBinance, st: LocalStream, retries: int = 2) -> None:
    monkeypatch.setenv("BINANCE_API_URL", ex.api_url)
    monkeypatch.setenv("BINANCE_WS_URL", st.ws_url)
    monkeypatch.setenv("HTTP_MAX_RETRIES", str(retries))
    get_settings.cache_clear()


def published(df: pd.DataFrame) -> pd.DataFrame:
    """What the exchange publishes for ``df``: its values through Binance's 8-decimal JSON."""
    rows = np.array([[float(x) for x in r[:11]] for r in kline_json_rows(candles_to_rows(df))])
    return candles_from_arrays(rows)


def fast(**kw) -> StreamConfig:
    base = dict(backoff_initial=0.01, backoff_max=0.05, max_failures=6, status_every=0.25,
                commit_interval=0.01, healthy_after=5.0)
    base.update(kw)
    return StreamConfig(**base)


async def replay(streamer_: KlineStreamer, clock: ReplayClock, *, done, timeout: float = 120.0):
    """Run ``streamer_`` while the clock replays: start the clock once the first
    backfill and connection are done, stop when ``done()`` holds (or time is up)."""
    task = asyncio.create_task(streamer_.run())
    start = floor_ms(clock.now_ms(), streamer_.config.interval)
    t_end = time.monotonic() + timeout
    while not (streamer_.stats.connections and streamer_.watermarks
               and all(w >= start for w in streamer_.watermarks.values())):
        assert not task.done(), task.exception()
        assert time.monotonic() < t_end, "the streamer never got going"
        await asyncio.sleep(0.01)
    clock.resume()
    while not (clock.finished and done()):
        assert not task.done(), task.exception() if task.done() else ""
        if time.monotonic() > t_end:
            streamer_.stop("timed out")
            await task
            raise AssertionError(f"timed out: clock finished {clock.finished}, watermarks {streamer_.watermarks}")
        await asyncio.sleep(0.02)
    streamer_.stop("test over")
    return await task


def db_rows(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        return con.execute("SELECT symbol, interval, open_time, is_closed FROM kline").fetchall()
    finally:
        con.close()


@contextmanager
def ctrl_c_when(cond, *, timeout: float = 120.0, poll: float = 0.02):
    """While the block runs an in-process streamer CLI (``streamer_cli``), press its Ctrl-C -- SIGINT to
    this process -- once ``cond()`` holds, so the run ends on an event, not after a wall-clock
    ``--duration`` (pass a generous one as the bound). ``cond()`` raising (the database not created yet)
    counts as not yet. Yields an Event set when the signal was sent."""
    import os
    import signal
    import threading

    done, sent, lock = threading.Event(), threading.Event(), threading.Lock()

    def watch():
        deadline = time.monotonic() + timeout
        while not done.is_set() and time.monotonic() < deadline:
            try:
                ok = bool(cond())
            except Exception:  # noqa: BLE001 -- e.g. the database not created yet: not yet
                ok = False
            if ok:
                with lock:
                    if not done.is_set():
                        os.kill(os.getpid(), signal.SIGINT)
                        sent.set()
                return
            done.wait(poll)

    watcher = threading.Thread(target=watch, name="ctrl-c-when", daemon=True)
    watcher.start()
    try:
        yield sent
    finally:
        with lock:
            done.set()
        watcher.join()


def capture(monkeypatch, cls) -> list:
    """Every ``cls`` built from now on (the streamer a CLI builds), so a condition can read its stats."""
    made: list = []
    init = cls.__init__

    def spy(self, *args, **kwargs):
        init(self, *args, **kwargs)
        made.append(self)

    monkeypatch.setattr(cls, "__init__", spy)
    return made


def closed_rows(db: Path, symbol: str, interval: str = "1m") -> int:
    """Closed candles of ``symbol`` in a streamer database (read-only; raises while it does not exist)."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("SELECT count(*) FROM kline WHERE symbol = ? AND interval = ? AND is_closed = 1",
                           (symbol, interval)).fetchone()[0]
    finally:
        con.close()


def streamer_cli(argv, capsys) -> tuple[int, str, str]:
    """``python S1/streamer.py ARGV`` in-process: (exit code, stdout, stderr)."""
    from S1 import streamer
    from S1.cli import run

    try:
        code = run(streamer.main, argv)
    except SystemExit as exc:  # argparse errors exit directly, with one line
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err
