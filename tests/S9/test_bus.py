"""The Redis bus against a real ``redis-server``: two executor hosts (two subscriber processes, one
consumer group each) receive every closed candle exactly once each, across a kill -9 of a consumer,
a kill -9 + restart of Redis and a kill -9 of the publisher."""

from __future__ import annotations

import json
import os
import signal
import sqlite3

import numpy as np
import pytest

from S1.stream_store import KlineStore, read_klines
from tests.S9.servers import RedisServer, spawn, stop_proc, wait_for

MIN = 60_000


def _row(i: int, *, closed: bool = True, symbol: str = "BTCUSDT") -> tuple:
    o = 100.0 + i * 0.37
    return (symbol, "1m", i * MIN, i * MIN + MIN - 1, o, o + 1.25, o - 0.5, o + 0.125, 10.0 + i, 1000.0 + i,
            5.0, 500.0, 7 + i, int(closed))


def _write(store: KlineStore, first: int, last: int) -> None:
    """The streamer's writes: closed candles first..last-1, then the candle in progress."""
    for i in range(first, last):
        store.write([_row(i, closed=False)])                 # in progress ...
        store.write([_row(i), _row(i, symbol="ETHUSDC")])    # ... then closed (two markets)
    store.write([_row(last, closed=False)])


def _applied(db) -> list[tuple]:
    if not os.path.exists(db):
        return []
    con = sqlite3.connect(db, timeout=10)
    try:
        return con.execute("SELECT symbol, open_time FROM bus_applied ORDER BY seq").fetchall()
    except sqlite3.OperationalError:
        return []
    finally:
        con.close()


def _has(db, n: int):
    return lambda: len(_applied(db)) >= n


@pytest.mark.slow
def test_two_hosts_get_every_candle_exactly_once_across_restarts(tmp_path, settings_env):
    redis = RedisServer(tmp_path).start()
    env = {**os.environ, "BUS_URL": redis.url, "TOOLKIT_ENV_FILE": str(tmp_path / "empty.env")}
    src = tmp_path / "stream.db"
    a_db, b_db = tmp_path / "host_a.db", tmp_path / "host_b.db"
    store = KlineStore(src)
    store.write([_row(0, closed=False)])
    pub_cmd = ["S9/bus_bridge.py", "publish", "--db", str(src), "--backlog", "100", "--poll", "0.02"]
    sub = {h: ["S9/bus_bridge.py", "subscribe", "--db", str(db), "--group", f"host-{h}", "--consumer", h]
           for h, db in (("a", a_db), ("b", b_db))}
    procs = {}
    try:
        procs["pub"] = spawn(pub_cmd, env, tmp_path / "pub.log")
        procs["a"] = spawn(sub["a"], env, tmp_path / "a.log")
        procs["b"] = spawn(sub["b"], env, tmp_path / "b.log")

        _write(store, 0, 10)
        for db in (a_db, b_db):
            wait_for(_has(db, 20), f"20 candles in {db.name}")

        # a consumer dies hard; candles keep closing
        stop_proc(procs["a"], signal.SIGKILL)
        _write(store, 10, 20)
        wait_for(_has(b_db, 40), "host b to keep up while host a is down")

        # Redis dies hard (AOF, appendfsync always) while candles close; then it comes back
        redis.kill()
        _write(store, 20, 25)
        redis.start()
        procs["a"] = spawn(sub["a"], env, tmp_path / "a.log")   # the consumer comes back too
        _write(store, 25, 30)
        for db in (a_db, b_db):
            wait_for(_has(db, 60), f"60 candles in {db.name}")

        # the publisher dies hard and restarts: it resumes from its cursor in Redis
        stop_proc(procs["pub"], signal.SIGKILL)
        _write(store, 30, 35)
        procs["pub"] = spawn(pub_cmd, env, tmp_path / "pub.log")
        for db in (a_db, b_db):
            wait_for(_has(db, 70), f"70 candles in {db.name}")
    finally:
        for p in procs.values():
            stop_proc(p)
        store.close()
        redis.stop()

    expected = sorted((s, i * MIN) for i in range(35) for s in ("BTCUSDT", "ETHUSDC"))
    for db in (a_db, b_db):
        got = _applied(db)
        assert len(got) == len(set(got)), f"{db.name}: a candle was applied twice"
        assert sorted(got) == expected, f"{db.name}: missing or extra candles"
        for sym in ("BTCUSDT", "ETHUSDC"):
            opens = [t for s, t in got if s == sym]
            assert opens == sorted(opens), f"{db.name}: {sym} out of order"
            # the local table is what an unmodified S7 --source db reads: equal to the source's
            mine = read_klines(db, sym, "1m")
            theirs = read_klines(src, sym, "1m")
            assert len(mine) == 35
            assert mine.equals(theirs)
        con = sqlite3.connect(db)
        assert con.execute("SELECT COUNT(*) FROM kline WHERE is_closed = 0").fetchone()[0] == 0
        con.close()


def test_publisher_backlog_and_market_filter(tmp_path, settings_env, monkeypatch):
    """In process: the first run starts ``backlog`` candles back; the filter keeps one market;
    the candle in progress is never published; a second publisher resumes from the cursor."""
    from S9.bus import BusConfig, KlinePublisher, KlineSubscriber

    redis = RedisServer(tmp_path).start()
    try:
        src = tmp_path / "stream.db"
        store = KlineStore(src)
        _write(store, 0, 10)
        cfg = BusConfig(url=redis.url, stream="t:k")
        pub = KlinePublisher(src, config=cfg, backlog=3, markets=["BTCUSDT:1m"])
        assert pub.publish_new() == 3
        assert pub.publish_new() == 0
        _write(store, 10, 12)
        pub.close()
        pub = KlinePublisher(src, config=cfg, backlog=3, markets=["BTCUSDT:1m"])
        assert pub.publish_new() == 2                 # resumes after candle 9, not 3 back
        pub.close()
        # backlog 0: only the candles that close from now on
        pub0 = KlinePublisher(src, config=BusConfig(url=redis.url, stream="t:new"), backlog=0)
        assert pub0.publish_new() == 0
        _write(store, 12, 13)
        assert pub0.publish_new() == 2                # candle 12 of both markets
        pub0.close()
        subscriber = KlineSubscriber(tmp_path / "b.db", group="g", consumer="c", config=cfg)
        assert subscriber.step(pending=True) == 0
        assert subscriber.step(pending=False) == 5
        got = read_klines(tmp_path / "b.db", "BTCUSDT", "1m")
        assert list(got.index.as_unit("ms").asi8) == [i * MIN for i in (7, 8, 9, 10, 11)]
        assert np.allclose(got["close"], [_row(i)[7] for i in (7, 8, 9, 10, 11)])
        # a redelivered batch (crash between commit and XACK) is not applied twice
        entries = subscriber._redis().xrange("t:k")
        assert subscriber.apply(entries) == 0
        subscriber.close()
        store.close()
    finally:
        redis.stop()


def test_bad_bus_url_is_a_user_error(settings_env, monkeypatch):
    from S1.errors import UserError
    from S1.settings import get_settings
    from S9.bus import connect

    with pytest.raises(UserError, match="BUS_URL is not set"):
        connect()
    monkeypatch.setenv("BUS_URL", "http://example:6379")
    get_settings.cache_clear()
    with pytest.raises(UserError, match="redis://"):
        connect()
    assert "example" not in get_settings().redact("cannot reach http://example:6379")


def test_order_log_publisher_resumes_without_loss_or_repeat(tmp_path, settings_env):
    from S9.bus import OrderLogPublisher

    redis = RedisServer(tmp_path).start()
    try:
        log = tmp_path / "orders.jsonl"
        lines = [json.dumps({"event": "fill", "client_id": f"s7-{i}", "price": str(100 + i)}) for i in range(5)]
        log.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:10])       # the third is half-written
        pub = OrderLogPublisher(log, source="host-b", url=redis.url, stream="t:o")
        assert pub.publish_new() == 2
        assert pub.publish_new() == 0
        pub.close()
        with open(log, "a") as fh:
            fh.write(lines[2][10:] + "\n" + lines[3] + "\n" + lines[4] + "\n")
        pub = OrderLogPublisher(log, source="host-b", url=redis.url, stream="t:o")    # a restart
        assert pub.publish_new() == 3
        got = pub._redis().xrange("t:o")
        assert [f["json"] for _, f in got] == lines and {f["source"] for _, f in got} == {"host-b"}
        pub.close()
    finally:
        redis.stop()
