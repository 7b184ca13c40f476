"""The S8 service on the S9 bus: a publisher host (streamer + bus publisher) feeds a subscriber host
(no streamer of its own) through a real redis-server; the subscriber's executor works from the bus's
candles, which equal the publisher's closed candles row for row."""

from __future__ import annotations

import os
import signal
import sqlite3

import pytest
import requests

from tests.S9.servers import RedisServer, free_port, spawn, stop_proc, wait_for

TOKEN = "s9-bus-test-token-0123456789abcdef"


def _service(tmp, name: str, redis_url: str, bus_yaml: str) -> tuple:
    d = tmp / name
    d.mkdir()
    (d / "empty.env").write_text("")
    cfg = d / "service.yaml"
    cfg.write_text("markets:\n  - {symbol: BTCUSDT, interval: 1m, rules: S4/rules_ta_only.yaml, mode: dry-run}\n"
                   f"streamer: {{backfill_minutes: 300}}\n{bus_yaml}\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "CONTROL_API", "BUS_URL"))}
    env.update(TOOLKIT_ENV_FILE=str(d / "empty.env"), DATA_DIR=str(d / "data"), REPORTS_DIR=str(d / "reports"),
               CONTROL_API_HOST="127.0.0.1", CONTROL_API_PORT=str(port), CONTROL_API_TOKEN=TOKEN, BUS_URL=redis_url)
    proc = spawn(["S8/service.py", "--config", str(cfg), "--offline", "--offline-candle-seconds", "1"], env,
                 d / "service.log")
    return proc, f"http://127.0.0.1:{port}", d


def _closed(db) -> dict[int, tuple]:
    if not db.exists():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT open_time, open, high, low, close, volume FROM kline "
                           "WHERE symbol = 'BTCUSDT' AND interval = '1m' AND is_closed = 1").fetchall()
    except sqlite3.Error:
        return {}
    finally:
        con.close()
    return {r[0]: tuple(r[1:]) for r in rows}


def _status(base: str) -> dict:
    return requests.get(f"{base}/status", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10).json()


@pytest.mark.slow
def test_a_subscriber_host_trades_on_the_publishers_candles(tmp_path):
    import redis as redis_lib

    server = RedisServer(tmp_path).start()
    pub = sub = None
    try:
        pub, pub_base, pub_dir = _service(tmp_path, "host-a", server.url, "bus: {role: publisher, share_status: true}")
        pub_db = pub_dir / "data" / "btcusdt_1m_realtime.db"
        wait_for(lambda: pub.poll() is None and len(_closed(pub_db)) > 300, "the publisher's streamer", timeout=240)
        r = redis_lib.Redis.from_url(server.url)
        wait_for(lambda: r.xlen("toolkit:klines") > 300, "closed candles on the bus", timeout=120)
        sub, sub_base, sub_dir = _service(tmp_path, "host-b", server.url, "bus: {role: subscriber, group: host-b}")
        sub_db = sub_dir / "data" / "btcusdt_1m_realtime.db"

        def subscriber_caught_up():
            assert sub.poll() is None, (sub_dir / "service.log").read_text()[-3000:]
            got, want = _closed(sub_db), _closed(pub_db)
            return len(got) > 300 and max(got) >= max(want) - 60_000 and (got, want)

        got, want = wait_for(subscriber_caught_up, "the subscriber's table to follow the publisher", timeout=240)
        common = sorted(set(got) & set(want))
        assert len(common) > 300 and all(got[t] == want[t] for t in common)
        # the subscriber runs no streamer of its own: its workers are the bus bridge and the executor
        kinds = {w["name"]: w["kind"] for w in _status(sub_base)["workers"]}
        assert "bus-subscribe-1m" in kinds and not any(k == "streamer" for k in kinds.values())
        assert {"streamer-1m", "bus-publish-1m", "bus-orders", "bus-status"} <= {w["name"] for w in
                                                                                _status(pub_base)["workers"]}

        # the subscriber's executor acts on the bus's candles: the candle it last handled is one the
        # publisher's streamer closed, with the publisher's close price
        status_file = sub_dir / "data" / "state" / "service"

        def executor_candle():
            import json

            for f in status_file.glob("*status*.json"):
                s = json.loads(f.read_text())
                if s.get("last_candle_open_ms") in _closed(pub_db):
                    return s
            return None
        s = wait_for(executor_candle, "the subscriber's executor to handle a bus candle", timeout=240)
        assert s["last_candle_open_ms"] in _closed(sub_db)      # its --db is the table the bus fills
        # host A's status is shared on the bus (the S9 state hash)
        assert wait_for(lambda: [k for k in r.keys("toolkit:state:status:*")], "the shared status", timeout=60)
    finally:
        stop_proc(sub, signal.SIGTERM)
        stop_proc(pub, signal.SIGTERM)
        server.stop()


def test_a_bus_section_without_bus_url_is_one_clear_error(tmp_path):
    d = tmp_path
    (d / "empty.env").write_text("")
    cfg = d / "service.yaml"
    cfg.write_text("markets:\n  - {symbol: BTCUSDT, interval: 1m, rules: S4/rules_ta_only.yaml}\n"
                   "bus: {role: subscriber}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "CONTROL_API", "BUS_URL"))}
    env.update(TOOLKIT_ENV_FILE=str(d / "empty.env"), DATA_DIR=str(d / "data"), CONTROL_API_TOKEN=TOKEN)
    import subprocess
    import sys

    from tests.S9.servers import REPO

    r = subprocess.run([sys.executable, "S8/service.py", "--config", str(cfg)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "needs group" in r.stderr and r.stderr.count("\n") == 1
    cfg.write_text("markets:\n  - {symbol: BTCUSDT, interval: 1m, rules: S4/rules_ta_only.yaml}\n"
                   "bus: {role: subscriber, group: host-b}\n")
    r = subprocess.run([sys.executable, "S8/service.py", "--config", str(cfg)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "needs BUS_URL" in r.stderr and r.stderr.count("\n") == 1
