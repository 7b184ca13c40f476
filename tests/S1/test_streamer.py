"""S1/streamer.py + S1/stream_client.py end to end, against the local exchange
(REST) and its WebSocket replay (S1/local/stream.py) sharing one accelerated clock.

The acceptance test of issue 3: real BTCUSDT 1h candles (simulated without
../shared) and a simulated second market are replayed with a few in-progress
updates per candle; the connection is dropped on a schedule (TCP reset, close
frame, serverShutdown) and refused; afterwards the ``kline`` table holds exactly
the exchange's closed candles of the window -- none missing, none duplicated,
values identical."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from S1.errors import NetworkError
from S1.intervals import to_ms
from S1.local.simulated import simulate_candles
from S1.settings import get_settings
from S1.stream_client import KlineStreamer
from S1.stream_store import read_klines

REPO = Path(__file__).resolve().parents[2]


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


# ----------------------------------------------------------------- the acceptance test
def test_no_closed_candle_lost_through_forced_disconnects(btc_1h, settings_env, monkeypatch, tmp_path):
    start, end = to_ms("2023-03-24 06:00"), to_ms("2023-03-25 12:00")
    lookback = 6 * 60
    btc = btc_1h.loc["2023-03-20":"2023-03-27"]
    eth = simulate_candles("ETHUSDT", "1h", "2023-03-20", "2023-03-27")
    with local_market({("BTCUSDT", "1h"): btc, ("ETHUSDT", "1h"): eth}, start=start, end=end,
                      wall_per_candle=0.04, interval="1h", updates_per_candle=3, drop_every=0.12,
                      drop_kinds=("abort", "close", "shutdown"), shutdown_grace=1.0) as (ex, st, clock):
        point_at(monkeypatch, ex, st)
        st.refuse(2)  # the first two handshakes get HTTP 503: backoff, then in
        db = tmp_path / "live.db"
        s = KlineStreamer(fast(symbols=("BTCUSDT", "ETHUSDT"), interval="1h", db_path=db,
                               backfill_minutes=lookback))
        # done: every candle in, and 5 forced disconnects each followed by a reconnect (waited for, so the
        # count does not depend on how fast this machine replays)
        summary = asyncio.run(replay(s, clock, done=lambda: all(w >= end for w in s.watermarks.values())
                                     and st.drops >= 5 and s.stats.reconnects >= 5))
        drops, connections = st.drops, list(st.connections)

    window = slice(pd.Timestamp(start - lookback * 60_000, unit="ms", tz="UTC"),
                   pd.Timestamp(end - 1, unit="ms", tz="UTC"))
    for symbol, source in (("BTCUSDT", btc), ("ETHUSDT", eth)):
        got = read_klines(db, symbol, "1h")
        expected = published(source.loc[window])
        pd.testing.assert_frame_equal(got, expected)                 # none missing, values identical
        if symbol == "BTCUSDT" and "2023-03-24 12:00" in source.index and \
                source.loc["2023-03-24 12:00", "trades"] == 0:       # the real file: its halt is kept as is
            pd.testing.assert_frame_equal(got, source.loc[window])
            assert pd.Timestamp("2023-03-24 13:00", tz="UTC") not in got.index
    rows = db_rows(db)
    keys = [(r[0], r[1], r[2]) for r in rows]
    assert len(keys) == len(set(keys)) == len(btc.loc[window]) + len(eth.loc[window])  # none duplicated
    assert all(r[3] == 1 for r in rows)                              # nothing left in progress
    assert drops >= 5 and summary.reconnects >= 5, (drops, summary)
    assert summary.failed_connects >= 2                              # the refused handshakes
    assert summary.in_progress_rows > 0 and summary.closed_stream > 0 and summary.closed_rest > 0
    kinds = {c.ended_by for c in connections}
    assert {"abort", "close", "shutdown"} <= kinds
    # on serverShutdown the client leaves at once instead of waiting to be cut off
    assert all(c.client_left_after_shutdown for c in connections if c.ended_by == "shutdown")
    assert sum(c.pongs for c in connections) >= 1                    # the server's pings were answered
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert dict(con.execute("SELECT symbol, complete_until FROM kline_watermark")) == {"BTCUSDT": end,
                                                                                      "ETHUSDT": end}
    con.close()


def test_restart_resumes_from_the_watermark(settings_env, monkeypatch, tmp_path):
    """A second run after a pause fills exactly what closed in between (no hole, no duplicate)."""
    start, mid, end = to_ms("2024-05-01 00:00"), to_ms("2024-05-01 00:40"), to_ms("2024-05-01 01:30")
    df = simulate_candles("SOLUSDT", "1m", "2024-04-30 23:00", "2024-05-01 03:00")
    db = tmp_path / "sol.db"
    with local_market({("SOLUSDT", "1m"): df}, start=start, end=mid, wall_per_candle=0.02, interval="1m",
                      updates_per_candle=2) as (ex, st, clock):
        point_at(monkeypatch, ex, st)
        s1 = KlineStreamer(fast(symbols=("SOLUSDT",), db_path=db, backfill_minutes=10))
        asyncio.run(replay(s1, clock, done=lambda: s1.watermarks["SOLUSDT"] >= mid))
        assert s1.watermarks["SOLUSDT"] == mid
        # the streamer is down while the market goes on (and the table holds an in-progress row or not)
        clock.end_ms = end
        clock.resume()
        deadline = time.monotonic() + 60  # wait for the market to move on by 20+ candles (not a fixed sleep)
        while clock.now_ms() < mid + 20 * 60_000 and time.monotonic() < deadline:
            time.sleep(0.01)
        clock.pause()
        assert clock.now_ms() >= mid + 20 * 60_000
        s2 = KlineStreamer(fast(symbols=("SOLUSDT",), db_path=db, backfill_minutes=0))
        summary = asyncio.run(replay(s2, clock, done=lambda: s2.watermarks["SOLUSDT"] >= end))
    got = read_klines(db, "SOLUSDT", "1m")
    expected = published(df.loc[pd.Timestamp(start - 10 * 60_000, unit="ms", tz="UTC"):
                                pd.Timestamp(end - 1, unit="ms", tz="UTC")])
    pd.testing.assert_frame_equal(got, expected)
    assert summary.closed_rest > 0  # the pause was filled over REST


def test_a_silent_connection_is_noticed_by_keepalive(settings_env, monkeypatch, tmp_path):
    """A half-open connection (no data, no pongs) is dropped by the client's own pings."""
    start, end = to_ms("2024-05-01 00:00"), to_ms("2024-05-01 00:30")
    df = simulate_candles("BTCUSDT", "1m", "2024-04-30 23:00", "2024-05-01 02:00")
    with local_market({("BTCUSDT", "1m"): df}, start=start, end=end, wall_per_candle=0.03, interval="1m",
                      updates_per_candle=2, drop_every=0.15, drop_kinds=("stall",), max_drops=2,
                      ping_interval=None) as (ex, st, clock):
        point_at(monkeypatch, ex, st)
        db = tmp_path / "k.db"
        s = KlineStreamer(fast(symbols=("BTCUSDT",), db_path=db, backfill_minutes=0, ping_interval=0.05,
                               ping_timeout=0.1))
        summary = asyncio.run(replay(s, clock, done=lambda: s.watermarks["BTCUSDT"] >= end))
        stalls = [c for c in st.connections if c.ended_by == "stall"]
    assert len(stalls) == 2 and summary.reconnects >= 2
    pd.testing.assert_frame_equal(read_klines(db, "BTCUSDT", "1m"),
                                  published(df.loc["2024-05-01 00:00":"2024-05-01 00:29"]))


def test_status_line_every_period(settings_env, monkeypatch, tmp_path, caplog):
    start, end = to_ms("2024-05-01 00:00"), to_ms("2024-05-01 00:40")
    df = simulate_candles("BTCUSDT", "1m", "2024-04-30 23:00", "2024-05-01 02:00")
    with local_market({("BTCUSDT", "1m"): df}, start=start, end=end, wall_per_candle=0.02, interval="1m",
                      updates_per_candle=4, drop_every=0.3, max_drops=1) as (ex, st, clock):
        point_at(monkeypatch, ex, st)
        caplog.set_level(logging.INFO, logger="S1.streamer")
        s = KlineStreamer(fast(symbols=("BTCUSDT",), db_path=tmp_path / "k.db", backfill_minutes=5,
                               status_every=0.2))


        def status_lines():
            return [r.getMessage() for r in caplog.records if r.getMessage().startswith("status ")]

        def seen():  # three status lines, one of them after the reconnect (not what a 0.8 s replay happens to give)
            lines = status_lines()
            return len(lines) >= 3 and any(re.search(r"reconnects? \(total 1\)", ln) for ln in lines)

        asyncio.run(replay(s, clock, done=lambda: s.watermarks["BTCUSDT"] >= end and seen()))
    lines = status_lines()
    assert len(lines) >= 3
    pattern = re.compile(r"status BTCUSDT 1m: [\d,.]+ msg/s, \d+ candles closed \(total \d+ stream \+ \d+ REST\), "
                         r"\d+ reconnects? \(total \d+\), lag event->row p50 .+ p99 .+, write p99 .+, "
                         r"complete to \d{4}-\d\d-\d\d \d\d:\d\d UTC")
    assert all(pattern.fullmatch(line) for line in lines), lines
    rates = [float(re.search(r": ([\d,.]+) msg/s", ln).group(1).replace(",", "")) for ln in lines]
    assert max(rates) > 0  # messages were counted (the speed itself is bench/bench_streamer.py's business)
    assert any(re.search(r"reconnects? \(total 1\)", ln) for ln in lines)
    assert any(re.search(r"reconnected \(#1\)", r.getMessage()) for r in caplog.records)  # each reconnect logged


def test_gives_up_after_consecutive_failures_and_keeps_what_it_wrote(settings_env, monkeypatch, tmp_path, caplog):
    start = to_ms("2024-05-01 00:00")
    df = simulate_candles("BTCUSDT", "1m", "2024-04-30 23:00", "2024-05-01 01:00")
    with socket.socket() as sk:  # a port nobody listens on
        sk.bind(("127.0.0.1", 0))
        dead = sk.getsockname()[1]
    with local_market({("BTCUSDT", "1m"): df}, start=start, end=None, wall_per_candle=60.0,
                      interval="1m") as (ex, st, clock):
        point_at(monkeypatch, ex, st)
        monkeypatch.setenv("BINANCE_WS_URL", f"ws://127.0.0.1:{dead}")
        get_settings.cache_clear()
        db = tmp_path / "k.db"
        s = KlineStreamer(fast(symbols=("BTCUSDT",), db_path=db, backfill_minutes=30, max_failures=3))
        caplog.set_level(logging.WARNING, logger="S1")
        with pytest.raises(NetworkError, match=r"gave up after 3 consecutive failed connections to "
                                               rf"ws://127.0.0.1:{dead} \(.*refused"):
            asyncio.run(s.run())
        waits = [float(m.group(1)) for r in caplog.records
                 if (m := re.search(r"retrying in ([\d.]+)s", r.getMessage()))]
        assert len(waits) == 2 and max(waits) <= 0.05  # only the configured back-off (backoff_max), then gave up
    assert s.stats.failed_connects == 2  # attempts 1 and 2 were retried, 3 gave up
    assert len(read_klines(db, "BTCUSDT", "1m")) == 30  # the REST backfill is safe in the file


def test_stop_during_a_slow_start_is_prompt(settings_env, monkeypatch, tmp_path):
    """Ctrl-C / SIGTERM while the REST symbol check hangs: stop at once, exit cleanly."""
    df = simulate_candles("BTCUSDT", "1m", "2024-04-30 23:00", "2024-05-01 01:00")
    with local_market({("BTCUSDT", "1m"): df}, start=to_ms("2024-05-01"), end=None, wall_per_candle=60.0,
                      interval="1m") as (ex, st, clock):
        point_at(monkeypatch, ex, st)
        held = ex.inject("delay", path="exchangeInfo", delay=3600, count=5)  # held until the server stops
        s = KlineStreamer(fast(symbols=("BTCUSDT",), db_path=tmp_path / "k.db"))

        async def scenario():
            task = asyncio.create_task(s.run())
            deadline = time.monotonic() + 30
            while held.count == 5 and time.monotonic() < deadline:  # the symbol check is being held
                assert not task.done(), task
                await asyncio.sleep(0.01)
            assert held.count == 4
            s.stop("SIGTERM")
            summary = await task
            return summary, [r for r in ex.requests if "exchangeInfo" in r.path]

        summary, answered = asyncio.run(scenario())
    # stopped at once: the run ended while the server was still holding the answer
    assert answered == [] and summary.stop_reason == "SIGTERM" and summary.messages == 0


def test_sessions_that_keep_ending_early_back_off(settings_env, monkeypatch, tmp_path):
    """A server that drops every connection right after some data must not be hammered
    (Binance bans IPs opening more than 300 connections per 5 minutes)."""
    start = to_ms("2024-05-01 00:00")
    df = simulate_candles("BTCUSDT", "1m", "2024-04-30 23:00", "2024-05-01 03:00")
    with local_market({("BTCUSDT", "1m"): df}, start=start, end=None, wall_per_candle=0.05, interval="1m",
                      updates_per_candle=10, drop_every=0.03, drop_kinds=("close",)) as (ex, st, clock):
        point_at(monkeypatch, ex, st)
        clock.resume()
        # healthy_after is far above the 0.03 s sessions even on a loaded machine; the run ends on a count
        s = KlineStreamer(fast(symbols=("BTCUSDT",), db_path=tmp_path / "k.db", backfill_minutes=0,
                               backoff_initial=0.02, backoff_max=0.32, healthy_after=30.0, duration=300.0))

        async def scenario():
            task = asyncio.create_task(s.run())
            deadline = time.monotonic() + 120
            while len(st.connections) < 10 and time.monotonic() < deadline:
                assert not task.done(), task.exception() if task.done() else ""
                await asyncio.sleep(0.01)
            s.stop("test over")
            return await task

        asyncio.run(scenario())
        opened = [c.opened for c in st.connections]
    gaps = np.diff(opened)
    assert len(opened) >= 10
    # without backoff ten 0.03 s sessions would follow each other at once; with it the waits grow to the
    # cap (0.32 s + jitter, after the 0.03 s session): lower bounds, which a loaded machine only lengthens
    assert gaps[-3:].min() >= 0.3, gaps


# ------------------------------------------------------------------------------ CLI
def _cli(argv, capsys):
    return streamer_cli(argv, capsys)


def test_cli_bad_input_one_line_and_nonzero_exit(settings_env, monkeypatch, tmp_path, capsys):
    df = simulate_candles("BTCUSDT", "1m", "2024-04-30 23:00", "2024-05-01 01:00")
    afile = tmp_path / "plain.txt"
    afile.write_text("keep me")
    with local_market({("BTCUSDT", "1m"): df, ("ETHUSDC", "1m"): df}, start=to_ms("2024-05-01"), end=None,
                      wall_per_candle=60.0, interval="1m") as (ex, st, clock):
        point_at(monkeypatch, ex, st, retries=0)
        cases = [
            (["--symbol", "BTCUSDX"], 2, r"error: unknown symbol 'BTCUSDX' on .* -- did you mean BTCUSDT\?"),
            (["--symbols", "BTCUSDT,ETHUSDX"], 2, r"unknown symbol 'ETHUSDX'.*did you mean ETHUSDC"),
            (["--interval", "1H"], 2, r"error: unsupported interval '1H' -- did you mean '1h'\?"),
            (["--db", str(afile / "x.db")], 2, r"cannot create the folder of --db .* -- pass --db a file path"),
            (["--db", str(tmp_path)], 2, r"is a folder"),
            (["--db", str(afile)], 2, r"exists and is not a SQLite database"),
            (["--symbol", "BTC$USDT"], 2, r"invalid symbol 'BTC\$USDT'"),
            (["--aggregate", "1m"], 2, r"--aggregate only applies to --stream trades"),
            (["--stream", "trades", "--interval", "5m"], 2, r"--stream trades builds 1m candles, not 5m"),
            (["--stream", "trades", "--aggregate", "1m", "--interval", "1h"], 2,
             r"--interval 1h conflicts with --aggregate 1m -- drop --interval"),
            (["--duration", "0"], 2, r"--duration must be a positive number"),
            (["--max-failures", "0"], 2, r"--max-failures must be a whole number >= 1"),
            (["--stream", "bars"], 2, r"error: argument --stream: invalid choice"),
        ]
        for argv, want_code, pattern in cases:
            code, out, err = _cli(argv + ["--db", str(tmp_path / "ok.db")] if "--db" not in argv else argv, capsys)
            assert code == want_code, (argv, code, err)
            assert err.count("\n") == 1 and re.search(pattern, err), (argv, err)
        assert afile.read_text() == "keep me"
        monkeypatch.setenv("BINANCE_API_URL", "http://127.0.0.1:9/api")  # nothing listens on port 9
        get_settings.cache_clear()
        code, out, err = _cli(["--db", str(tmp_path / "ok2.db")], capsys)
        assert code == 3 and err.count("\n") == 1 and "cannot reach http://127.0.0.1:9/api" in err
        monkeypatch.setenv("BINANCE_WS_URL", "http://not-a-websocket")
        get_settings.cache_clear()
        code, out, err = _cli(["--db", str(tmp_path / "ok3.db")], capsys)
        assert code == 2 and "is not a WebSocket URL" in err


def test_cli_runs_for_a_duration_and_writes_stats(settings_env, monkeypatch, tmp_path, capsys):
    start = to_ms("2024-05-01 00:00")
    df = simulate_candles("ETHUSDC", "1m", "2024-04-30 22:00", "2024-05-01 06:00")
    with local_market({("ETHUSDC", "1m"): df}, start=start, end=None, wall_per_candle=0.05,
                      interval="1m", updates_per_candle=3) as (ex, st, clock):
        point_at(monkeypatch, ex, st)
        clock.resume()
        stats = tmp_path / "stats.json"
        db = settings_env.data_dir / "ethusdc_1m_realtime.db"  # the default name
        # the run ends on an event -- 15 backfilled + 20 streamed candles in the table -- with Ctrl-C;
        # --duration is only the bound (how many candles a fixed time gives depends on the machine's load)
        with ctrl_c_when(lambda: closed_rows(db, "ETHUSDC") >= 15 + 20) as pressed:
            code, out, err = _cli(["--symbol", "ethusdc", "--duration", "300", "--status-every", "0.5",
                                   "--backfill-minutes", "15", "--stats-json", str(stats)], capsys)
        assert pressed.is_set(), err
        # --duration ends a run by itself (what it streamed in that time is not checked)
        code2, out2, err2 = _cli(["--symbol", "ethusdc", "--duration", "0.5", "--db", str(tmp_path / "d.db")],
                                 capsys)
    assert code2 == 0 and "duration reached" in out2, err2
    assert code == 0, err
    assert out.startswith(f"{db}: ") and "(Ctrl-C)" in out, out
    figures = json.loads(stats.read_text())
    got = read_klines(db, "ETHUSDC", "1m")
    assert figures["closed_rows_in_db"] == len(got) >= 15 + 20
    assert figures["closed_rest"] >= 15 and figures["messages"] > 0
    t = got.index.as_unit("ms").asi8
    assert (np.diff(t) == 60_000).all()  # no hole


def test_both_entry_points_and_sigterm_exits_zero_with_a_readable_db(settings_env, monkeypatch, tmp_path):
    start = to_ms("2024-05-01 00:00")
    df = simulate_candles("BTCUSDT", "1m", "2024-04-30 22:00", "2024-05-01 12:00")
    for entry in (["-m", "S1.streamer"], ["S1/streamer.py"]):
        help_ = subprocess.run([sys.executable, *entry, "--help"], cwd=REPO, capture_output=True, text=True)
        assert help_.returncode == 0 and "--symbols" in help_.stdout and "--stream" in help_.stdout
    with local_market({("BTCUSDT", "1m"): df}, start=start, end=None, wall_per_candle=0.05,
                      interval="1m", updates_per_candle=5) as (ex, st, clock):
        clock.resume()
        db = tmp_path / "sig.db"
        env = {**os.environ, "BINANCE_API_URL": ex.api_url, "BINANCE_WS_URL": st.ws_url,
               "DATA_DIR": str(tmp_path), "TOOLKIT_ENV_FILE": str(tmp_path / "none.env")}
        proc = subprocess.Popen([sys.executable, "S1/streamer.py", "--symbol", "BTCUSDT", "--db", str(db),
                                 "--status-every", "0.3", "--backfill-minutes", "20"],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    if len(read_klines(db, "BTCUSDT", "1m")) >= 30:
                        break
                except Exception:  # noqa: BLE001 - not created yet
                    pass
                assert proc.poll() is None, proc.communicate()
                time.sleep(0.1)
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert "SIGTERM" in out and "closed candles" in out
    assert re.search(r"status BTCUSDT 1m: .* msg/s", err)
    con = sqlite3.connect(db)
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    got = read_klines(db, "BTCUSDT", "1m")
    assert len(got) >= 30 and (np.diff(got.index.as_unit("ms").asi8) == 60_000).all()
    pd.testing.assert_frame_equal(got, published(df.loc[got.index]))


# ------------------------------------------------------------------------- writer
def _k(t, closed=1, close=1.0):
    return ("BTCUSDT", "1m", t * 60_000, t * 60_000 + 59_999, 1.0, 1.0, 1.0, close, 1.0, 1.0, 0.0, 0.0, 1, closed)


def test_writer_batches_and_shutdown_commits_everything(tmp_path):
    from S1.stream_stats import StreamStats
    from S1.stream_writer import BatchWriter

    async def scenario():
        stats = StreamStats()
        w = BatchWriter(tmp_path / "k.db", commit_interval=0.05, commit_rows=1000, stats=stats)
        w.open()
        task = asyncio.create_task(w.run())
        for t in range(5):
            w.put(_k(t, 0), time.monotonic(), 0)
            w.put(_k(t, 1, close=2.0), time.monotonic(), 0)
            w.put(_k(t, 0, close=3.0), time.monotonic(), 0)  # late in-progress update: ignored
        deadline = time.monotonic() + 30                     # wait for the commit (not a fixed sleep)
        while stats.commits == 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)                              # two more commit intervals: nothing more is due
        assert stats.commits == 1 and stats.rows_committed == 5 and stats.write_ms.n == 15
        w.put(_k(5), time.monotonic(), 0)
        task.cancel()                                         # shutdown before the next commit is due
        await asyncio.gather(task, return_exceptions=True)
        w.close()

    asyncio.run(scenario())
    got = read_klines(tmp_path / "k.db", "BTCUSDT", "1m")
    assert len(got) == 6 and got["close"].tolist() == [2.0] * 5 + [1.0]


def test_writer_keeps_rows_while_another_program_locks_the_file(tmp_path, caplog):
    from S1.stream_stats import StreamStats
    from S1.stream_writer import BatchWriter

    db = tmp_path / "k.db"
    w = BatchWriter(db, commit_interval=0.01, commit_rows=1000, stats=StreamStats())
    w.open()
    other = sqlite3.connect(db, timeout=0.1)
    other.execute("BEGIN IMMEDIATE")                          # another writer holds the lock
    w.put(_k(0))
    w.mark("BTCUSDT", "1m", 60_000)
    with caplog.at_level(logging.WARNING, logger="S1.streamer"):
        w.flush()
    assert "is locked by another program; keeping 1 rows" in caplog.text
    w.put(_k(1))
    w.flush()                                                 # still locked: both kept
    other.rollback()
    other.close()
    w.flush()
    assert len(read_klines(db, "BTCUSDT", "1m")) == 2 and w.store.watermark("BTCUSDT", "1m") == 60_000
    w.close()
