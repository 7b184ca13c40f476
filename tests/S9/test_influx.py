"""The InfluxDB sink against a real ``influxd`` (Debian's 1.x) through its HTTP write and query API:
closed candles, fills of an S7 order log and equity from a real Prometheus exposition land once each,
and a restarted sink rewrites its backlog without doubling a point."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from S1.stream_store import KlineStore
from tests.S9.servers import REPO, InfluxServer, free_port

MIN = 60_000


def _row(i, closed=True, symbol="BTCUSDT"):
    o = 100.0 + i * 0.37
    return (symbol, "1m", i * MIN, i * MIN + MIN - 1, o, o + 1.25, o - 0.5, o + 0.125, 10.0 + i, 1000.0 + i,
            5.0, 500.0, 7 + i, int(closed))


@pytest.fixture
def influx(tmp_path):
    server = InfluxServer(tmp_path).start()
    yield server
    server.stop()


def _fill(i, t_ms):
    return {"time": "2026-01-01T00:00:00+00:00", "mode": "dry-run", "symbol": "BTCUSDT", "side": "BUY" if i % 2 == 0
            else "SELL", "type": "MARKET", "quantity": "0.001", "price": str(100 + i), "client_id": f"s7-{i}",
            "exchange_id": None, "status": "FILL", "reason": "entry", "event": "fill", "t_ms": t_ms,
            "trade_id": str(i), "commission": "0.0001"}


def test_candles_fills_and_equity_land_once(tmp_path, settings_env, monkeypatch, influx):
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    from S1.settings import get_settings
    from S9.influx import InfluxSink, InfluxWriter

    monkeypatch.setenv("INFLUX_URL", influx.url)
    monkeypatch.setenv("INFLUX_DATABASE", "toolkit_test")
    get_settings.cache_clear()

    db = tmp_path / "stream.db"
    store = KlineStore(db)
    store.write([_row(i) for i in range(5)] + [_row(5, closed=False)])
    orders = tmp_path / "orders.jsonl"
    # two fills in the same millisecond, an intent (not a fill) and a half-written last line
    orders.write_text("\n".join([json.dumps(_fill(0, 1_000)), json.dumps(_fill(1, 1_000)),
                                 json.dumps({**_fill(2, 2_000), "event": "intent", "status": "INTENT"})]) + "\n"
                      + json.dumps(_fill(3, 3_000))[:40])
    reg = CollectorRegistry()
    Gauge("toolkit_equity_quote", "equity", ["market"], registry=reg).labels(market="BTCUSDT").set(1234.5)
    Gauge("toolkit_position_quantity", "position", ["market"], registry=reg).labels(market="BTCUSDT").set(0.25)
    port = free_port()
    server, thread = start_http_server(port, addr="127.0.0.1", registry=reg)
    try:
        writer = InfluxWriter()
        writer.ensure_database()
        sink = InfluxSink(writer, db=db, orders=orders, metrics_url=f"http://127.0.0.1:{port}/metrics", backlog=100)
        assert sink.run_once() == 5 + 2 + 1
        # more candles close, the half-written fill line is completed
        store.write([_row(5), _row(6)])
        with open(orders, "a") as fh:
            fh.write(json.dumps(_fill(3, 3_000))[40:] + "\n")
        assert sink.run_once() == 2 + 1 + 1
    finally:
        server.shutdown()
        store.close()

    candles = influx.query('SELECT * FROM "candle" GROUP BY "symbol", "interval"', "toolkit_test")
    assert [c["time"] for c in candles] == [i * MIN * 1_000_000 for i in range(7)]
    for i, c in enumerate(candles):
        r = _row(i)
        assert (c["open"], c["high"], c["low"], c["close"], c["volume"], c["trades"]) == (r[4], r[5], r[6], r[7],
                                                                                         r[8], r[12])
        assert (c["symbol"], c["interval"]) == ("BTCUSDT", "1m")
    fills = influx.query('SELECT * FROM "fill" GROUP BY *', "toolkit_test")
    assert sorted(f["client_id"] for f in fills) == ["s7-0", "s7-1", "s7-3"]
    assert sorted(f["price"] for f in fills) == [100.0, 101.0, 103.0]
    equity = influx.query('SELECT * FROM "equity" GROUP BY "symbol"', "toolkit_test")
    assert len(equity) == 2 and {e["equity"] for e in equity} == {1234.5} and {e["position"] for e in equity} == {0.25}

    # a restarted sink (the script, --once) rewrites its backlog: the same points, none doubled
    env = {**os.environ, "INFLUX_URL": influx.url, "INFLUX_DATABASE": "toolkit_test",
           "PYTHONPATH": str(REPO), "TOOLKIT_ENV_FILE": str(tmp_path / "empty.env")}
    r = subprocess.run([sys.executable, "S9/influx_sink.py", "--db", str(db), "--orders", str(orders), "--once"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "wrote 10 points" in r.stdout
    assert len(influx.query('SELECT * FROM "candle"', "toolkit_test")) == 7
    assert len(influx.query('SELECT * FROM "fill"', "toolkit_test")) == 3


def test_unreachable_influx_keeps_the_cursor(tmp_path, settings_env, monkeypatch):
    """A failed write moves nothing: the next round writes the same candles."""
    from S1.errors import NetworkError
    from S9.influx import InfluxSink, InfluxWriter

    db = tmp_path / "stream.db"
    store = KlineStore(db)
    store.write([_row(i) for i in range(3)])
    store.close()
    writer = InfluxWriter(url=f"http://127.0.0.1:{free_port()}", database="x", timeout=2)
    sink = InfluxSink(writer, db=db, backlog=100)
    with pytest.raises(NetworkError):
        sink.run_once()
    sent = []
    writer.write = lambda lines: sent.extend(lines) or len(lines)
    assert sink.run_once() == 3 and len(sent) == 3


def test_no_influx_url_is_a_user_error(settings_env):
    from S1.errors import UserError
    from S9.influx import InfluxWriter

    with pytest.raises(UserError, match="INFLUX_URL"):
        InfluxWriter()
