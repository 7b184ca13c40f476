"""``python S8/service.py --offline --offline-candle-seconds 1`` as a real process, over real HTTP:
the token, the counters, ``kill -9`` of workers (restart, no lost candle, no duplicate order),
reload, pause, panic at the local exchange, a real Prometheus scrape, and SIGTERM.

The tests share one service (module fixture) and run in file order; each waits on conditions with
generous timeouts (no timing asserts)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import time
import urllib.parse
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from tests.S8.conftest import ACTIVE, KEY, SECRET, TOKEN, free_port, wait_for

SYMBOLS = ("BTCUSDT", "ETHUSDT")

pytestmark = pytest.mark.slow


def signed_get(base: str, path: str, **params):
    params["timestamp"] = int(time.time() * 1000)
    qs = urllib.parse.urlencode(params)
    sig = hmac.new(SECRET.encode(), qs.encode(), hashlib.sha256).hexdigest()
    r = httpx.get(f"{base}/v3/{path}?{qs}&signature={sig}", headers={"X-MBX-APIKEY": KEY}, timeout=30)
    r.raise_for_status()
    return r.json()


@pytest.fixture(scope="module")
def svc(tmp_path_factory, start_service):
    from tests.S7.helpers import Receiver

    tmp = tmp_path_factory.mktemp("s8")
    rules = tmp / "active.yaml"
    rules.write_text(ACTIVE)
    cfg = tmp / "service.yaml"
    cfg.write_text("markets:\n" + "".join(f"  - {{symbol: {s}, interval: 1m, rules: {rules}}}\n" for s in SYMBOLS)
                   + "supervision: {heartbeat_timeout: 20, startup_grace: 120, backoff_initial: 0.5, "
                     "backoff_max: 2, backoff_jitter: 0.2}\n")
    hook = Receiver().start()
    try:
        with start_service(tmp, cfg, "--offline", "--offline-candle-seconds", "1", rules=rules, hook=hook,
                           ALERT_WEBHOOK_URL=hook.url) as s:
            yield s
    finally:
        hook.stop()


# ------------------------------------------------------------------------------------------ tests
def test_token_is_required_everywhere_but_metrics(svc):
    assert httpx.get(svc.url + "/status", timeout=30).status_code == 401
    assert httpx.get(svc.url + "/status", headers={"Authorization": "Bearer " + "y" * 34},
                     timeout=30).status_code == 401
    assert httpx.post(svc.url + "/panic", timeout=30).status_code == 401
    assert httpx.get(svc.url + "/docs", timeout=30).status_code == 401
    assert svc.get("/docs").status_code == 200
    assert "/panic" in svc.get("/openapi.json").json()["paths"]
    st = svc.status()
    assert {w["kind"] for w in st["workers"]} == {"streamer", "executor"}
    assert {m["market"] for m in st["markets"]} == set(SYMBOLS)
    body = svc.get("/status").text
    assert SECRET not in body and TOKEN not in body and KEY not in body
    r = httpx.get(svc.url + "/metrics", timeout=30)
    assert r.status_code == 200 and "toolkit_up 1.0" in r.text


def test_candle_and_order_counters_grow(svc):
    first = wait_for(lambda: svc.metrics().get('toolkit_candles_total{market="BTCUSDT"}'), what="candles")
    wait_for(lambda: svc.metrics()['toolkit_candles_total{market="BTCUSDT"}'] > first + 3, what="more candles")

    def orders():
        m = svc.metrics()
        return sum(v for k, v in m.items() if k.startswith("toolkit_orders_total{")) >= 2
    wait_for(orders, 180, what="orders")
    m = svc.metrics()
    assert m["toolkit_decision_latency_seconds_count"] >= 1
    assert m['toolkit_last_candle_close_timestamp_seconds{market="ETHUSDT"}'] > 0
    st = svc.market("BTCUSDT")
    assert st["last_closed_candle"] and st["equity"] > 0


def _closed_open_times(svc, symbol) -> list[int]:
    db = svc.tmp / "data" / "btcusdt_1m_realtime.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        return [r[0] for r in con.execute("SELECT open_time FROM kline WHERE symbol = ? AND interval = '1m' AND "
                                          "is_closed = 1 ORDER BY open_time", (symbol,))]
    finally:
        con.close()


def test_kill_9_of_the_streamer_loses_no_closed_candle(svc):
    w = wait_for(lambda: (x := svc.worker("streamer-1m"))["pid"] and x, what="streamer pid")
    before = _closed_open_times(svc, "BTCUSDT")[-1]
    os.kill(w["pid"], signal.SIGKILL)
    wait_for(lambda: svc.worker("streamer-1m")["restarts"] >= 1, what="streamer restart")
    # the market moves on while it is down; once it is back, every minute since is there
    wait_for(lambda: _closed_open_times(svc, "BTCUSDT")[-1] > before + 10 * 60_000, what="candles after restart")
    for sym in SYMBOLS:
        t = _closed_open_times(svc, sym)
        gaps = [(a, b) for a, b in zip(t, t[1:]) if b - a != 60_000]
        assert gaps == [], f"{sym}: missing closed candles {gaps[:3]}"
    assert svc.metrics()['toolkit_worker_restarts_total{worker="streamer-1m"}'] >= 1


def test_kill_9_of_an_executor_restarts_it_without_a_duplicate_order(svc):
    name = "executor-btcusdt_1m"
    old = wait_for(lambda: (x := svc.worker(name))["pid"] and x, what="executor pid")
    restarts = old["restarts"]
    os.kill(old["pid"], signal.SIGKILL)
    new = wait_for(lambda: (x := svc.worker(name))["restarts"] > restarts and x["pid"] and x["state"] == "running"
                   and x, what="executor restart")
    assert new["pid"] != old["pid"]
    assert svc.metrics()[f'toolkit_worker_restarts_total{{worker="{name}"}}'] >= 1
    # it is back: heartbeats from the new process
    wait_for(lambda: (svc.worker(name)["last_heartbeat"] or 0) > new["started_at"], 120, what="new heartbeat")
    # alerted through the S6 webhook
    wait_for(lambda: any(name in json.dumps(e) for e in svc.hook.events()), 30, what="restart alert")
    # kill it again while it trades, then compare with the exchange's own order list
    for _ in range(2):
        w = wait_for(lambda: (x := svc.worker(name))["pid"] and x["state"] == "running" and x, what="running")
        time.sleep(1.5)  # let it act on a candle or two (not a timing assert: any moment is a valid kill)
        os.kill(w["pid"], signal.SIGKILL)
        wait_for(lambda: svc.worker(name)["restarts"] > w["restarts"], what="restart")
    for sym in SYMBOLS:
        url = svc.market(sym)["exchange_url"]
        orders = signed_get(url, "allOrders", symbol=sym)
        ids = [o["clientOrderId"] for o in orders]
        assert len(ids) == len(set(ids)), f"{sym}: a client order id was sent twice"
    wait_for(lambda: "restart" in svc.log.read_text(), 5, what="restart logged")


def test_reload_refuses_a_broken_rule_file_and_keeps_the_old_rules(svc):
    before = {m["market"]: m["rules"] for m in svc.status()["markets"]}
    good = svc.rules.read_text()
    svc.rules.write_text("entry: {col: no_such_column, op: '>', value: 1}\n")
    try:
        r = svc.post("/reload")
        assert r.status_code == 422
        detail = r.json()["detail"]
        assert "no_such_column" in detail["refused"] and detail["fix"]
        assert {m["market"]: m["rules"] for m in svc.status()["markets"]} == before
        # the executors still run on the snapshot of the good file
        snap = svc.tmp / "data" / "state" / "service" / "rules" / "btcusdt_1m.rules.yaml"
        assert snap.read_text() == good
    finally:
        svc.rules.write_text(good)
    r = svc.post("/reload")
    assert r.status_code == 200 and r.json()["restarted"] == []


def test_pause_and_resume_one_market(svc):
    r = svc.post("/pause", json={"market": "ETHUSDT"})
    assert r.status_code == 200 and r.json() == {"paused": ["ETHUSDT"]}
    assert svc.market("ETHUSDT")["paused"] and not svc.market("BTCUSDT")["paused"]
    assert svc.post("/pause", json={"market": "NOPEUSDT"}).status_code == 404
    r = svc.post("/resume", json={"market": "ETHUSDT"})
    assert r.json() == {"resumed": ["ETHUSDT"]} and not svc.market("ETHUSDT")["paused"]
    r = svc.post("/pause")                    # no body: every market
    assert r.status_code == 200 and sorted(r.json()["paused"]) == sorted(SYMBOLS)
    assert all(m["paused"] for m in svc.status()["markets"])
    assert svc.post("/resume").status_code == 200 and not any(m["paused"] for m in svc.status()["markets"])


def test_a_real_prometheus_scrapes_the_metrics(svc, tmp_path):
    prom = shutil.which("prometheus")
    if prom is None:
        pytest.skip("prometheus is not installed (Debian package `prometheus`; .ci/run installs it)")
    port = free_port()
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s}\nscrape_configs:\n  - job_name: toolkit\n"
        f"    static_configs: [{{targets: ['127.0.0.1:{svc.port}']}}]\n")
    p = subprocess.Popen([prom, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                          f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    try:
        def query(q):
            r = httpx.get(f"http://127.0.0.1:{port}/api/v1/query", params={"query": q}, timeout=10).json()
            return r["data"]["result"]
        res = wait_for(lambda: query('toolkit_candles_total{market="BTCUSDT"}'), 90, what="prometheus sample")
        assert float(res[0]["value"][1]) > 0
        up = wait_for(lambda: query("toolkit_up"), 30, what="toolkit_up")
        assert up[0]["value"][1] == "1"
    finally:
        p.terminate()
        p.wait(30)


def test_panic_flattens_everything_at_the_exchange_and_is_idempotent(svc):
    r = svc.post("/panic")
    assert r.status_code == 200, r.text
    rep = r.json()
    assert {m["market"] for m in rep["markets"]} == set(SYMBOLS)
    assert all(not m["errors"] for m in rep["markets"]), rep
    for sym in SYMBOLS:
        url = svc.market(sym)["exchange_url"]
        assert signed_get(url, "openOrders", symbol=sym) == []
        base = sym[:-4]
        acct = signed_get(url, "account")
        held = sum(Decimal(b["free"]) + Decimal(b["locked"]) for b in acct["balances"] if b["asset"] == base)
        info = httpx.get(f"{url}/v3/exchangeInfo", params={"symbol": sym}, timeout=30).json()
        filt = {f["filterType"]: f for f in info["symbols"][0]["filters"]}
        step, min_qty = Decimal(filt["LOT_SIZE"]["stepSize"]), Decimal(filt["LOT_SIZE"]["minQty"])
        min_notional = Decimal(filt.get("NOTIONAL", filt.get("MIN_NOTIONAL", {})).get("minNotional", "0"))
        price = Decimal(str(svc.market(sym)["last_price"]))
        lots = (held // step) * step
        # what is left is dust: less than one lot step, or below the exchange's minimum order
        assert lots == 0 or lots < min_qty or lots * price < min_notional, f"{sym}: {held} {base} left"
    m = svc.metrics()
    assert all(m[f'toolkit_kill_switch_tripped{{market="{s}"}}'] == 1 for s in SYMBOLS) or \
        wait_for(lambda: all(svc.metrics()[f'toolkit_kill_switch_tripped{{market="{s}"}}'] == 1 for s in SYMBOLS),
                 10, what="kill-switch metric")
    for sym in SYMBOLS:
        ks = svc.market(sym)["kill_switch"]
        assert ks["tripped"] and ks["reason"] == "panic"
    # the restarted executors reconcile to a flat position and take no entry (tripped)
    wait_for(lambda: all((svc.market(s)["position"] or {}).get("qty", 1) == 0 for s in SYMBOLS), 120,
             what="flat positions")
    again = svc.post("/panic").json()
    assert all(m["cancelled"] == [] and m["sold"] == "0" and m["kill_switch"] == "already tripped"
               for m in again["markets"]), again
    assert any("PANIC" in json.dumps(e) for e in svc.hook.events())


def test_sigterm_stops_the_service_with_exit_code_0(svc):
    pids = [w["pid"] for w in svc.status()["workers"] if w["pid"]]
    svc.proc.send_signal(signal.SIGTERM)
    assert svc.proc.wait(30) == 0
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text().lower()
    out = svc.log.read_text()
    assert "S8 service stopped (SIGTERM)" in out
    assert SECRET not in out and TOKEN not in out
