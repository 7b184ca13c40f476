"""Against a running S8 service (offline, free port, a token): every PromQL expression of the alert
rules and dashboards names only metrics the service exports, and the image's HEALTHCHECK command
tells a healthy service from a wrong token and from a stopped service."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys

import pytest
import requests
import yaml

from tests.S9 import promql
from tests.S9.servers import REPO, free_port, need, spawn, stop_proc, wait_for

TOKEN = "s9-test-token-0123456789abcdef"
#: series Prometheus makes itself (not the service's): ``up`` per scrape target
PROMETHEUS_OWN = {"up"}


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    if not (REPO / "S8" / "service.py").is_file():
        pytest.skip("S8/service.py is not in this checkout yet")
    tmp = tmp_path_factory.mktemp("s8")
    (tmp / "empty.env").write_text("")
    cfg = tmp / "service.yaml"
    cfg.write_text("markets:\n  - {symbol: BTCUSDT, interval: 1m, rules: S4/rules_ta_only.yaml, mode: dry-run}\n"
                   "streamer: {backfill_minutes: 300}\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "CONTROL_API", "BUS_URL"))}
    env.update(TOOLKIT_ENV_FILE=str(tmp / "empty.env"), DATA_DIR=str(tmp / "data"), REPORTS_DIR=str(tmp / "reports"),
               CONTROL_API_HOST="127.0.0.1", CONTROL_API_PORT=str(port), CONTROL_API_TOKEN=TOKEN)
    proc = spawn(["S8/service.py", "--config", str(cfg), "--offline", "--offline-candle-seconds", "1"], env,
                 tmp / "service.log")
    base = f"http://127.0.0.1:{port}"

    def candles_flowing():
        assert proc.poll() is None, (tmp / "service.log").read_text()[-2000:]
        text = requests.get(f"{base}/metrics", timeout=5).text
        m = re.search(r'^toolkit_candles_total\{market="BTCUSDT"\} (\S+)$', text, re.M)
        return text if m and float(m.group(1)) > 0 else None

    try:
        text = wait_for(candles_flowing, "the S8 service to serve /metrics with candles", timeout=180, every=0.2)
        yield {"base": base, "env": env, "proc": proc, "metrics": text, "log": tmp / "service.log"}
    finally:
        stop_proc(proc, signal.SIGTERM)


@pytest.fixture(scope="module")
def prometheus(service, tmp_path_factory):
    """A real Prometheus scraping the service every second and evaluating S9/prometheus/alerts.yml."""
    binary = need("prometheus")
    tmp = tmp_path_factory.mktemp("prometheus")
    shutil.copy(promql.PROM / "alerts.yml", tmp / "alerts.yml")
    cfg = yaml.safe_load((promql.PROM / "prometheus.yml").read_text())
    cfg["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    cfg["scrape_configs"][0]["static_configs"][0]["targets"] = [service["base"].split("//")[1]]
    (tmp / "prometheus.yml").write_text(yaml.safe_dump(cfg))
    port = free_port()
    proc = subprocess.Popen([binary, f"--config.file={tmp / 'prometheus.yml'}", f"--storage.tsdb.path={tmp / 'data'}",
                             f"--web.listen-address=127.0.0.1:{port}"], stdout=subprocess.DEVNULL,
                            stderr=open(tmp / "prometheus.log", "ab"))
    api = f"http://127.0.0.1:{port}/api/v1"

    def query(q: str) -> list:
        body = requests.get(f"{api}/query", params={"query": q}, timeout=10).json()
        assert body["status"] == "success", (q, body)
        return body["data"]["result"]

    try:
        wait_for(lambda: query('up{job="toolkit"} == 1') and query("toolkit_candles_total > 0"),
                 "Prometheus to scrape the service", timeout=120, every=0.5)
        yield {"api": api, "query": query, "proc": proc}
    finally:
        stop_proc(proc)


def _substitute(expr: str) -> str:
    """Grafana's variables as Grafana would fill them."""
    return (expr.replace("$__rate_interval", "1m").replace("$__range", "1h").replace("$market", ".*"))


def test_every_dashboard_query_and_rule_runs_on_a_real_prometheus(prometheus):
    """The PromQL parses and evaluates on Prometheus itself against the service's series; the rules load
    and evaluate without error; the panels that must show something do."""
    for where, expr in promql.dashboard_promql():
        prometheus["query"](_substitute(expr))           # asserts status success
    for name, expr in promql.rule_exprs():
        prometheus["query"](expr)

    def evaluated():
        groups = requests.get(f"{prometheus['api']}/rules", timeout=10).json()["data"]["groups"]
        rules = [r for g in groups for r in g["rules"]]
        return rules if rules and all(r.get("lastEvaluation", "").startswith("2") and
                                      not r["lastEvaluation"].startswith("0001") for r in rules) else None

    rules = wait_for(evaluated, "every rule evaluated once", timeout=60, every=0.5)
    assert {r["name"] for r in rules} >= {n for n, _ in promql.rule_exprs()}
    assert all(r["health"] == "ok" for r in rules), [(r["name"], r.get("lastError")) for r in rules]
    for expr in ("toolkit_up", "time() - toolkit_last_candle_close_timestamp_seconds",
                 "sum(toolkit_worker_up)", "toolkit_equity_quote", "toolkit_kill_switch_tripped"):
        assert prometheus["query"](expr), f"{expr}: no series"
    firing = requests.get(f"{prometheus['api']}/alerts", timeout=10).json()["data"]["alerts"]
    assert not [a for a in firing if a["labels"]["alertname"] in ("ToolkitServiceDown", "ToolkitKillSwitchTripped")]


def _exposed_from_registry() -> set[str]:
    from S8.metrics import ServiceMetrics

    return promql.exposed_names(ServiceMetrics().render().decode())


def _check(exposed: set[str]) -> None:
    recorded = promql.recorded_names()
    exprs = promql.rule_exprs() + promql.dashboard_promql()
    assert len(exprs) >= 20
    unknown = {}
    for where, expr in exprs:
        for name in promql.metric_names(expr) - recorded - PROMETHEUS_OWN:
            if name not in exposed:
                unknown.setdefault(name, []).append(where)
    assert not unknown, f"metrics the service does not export: {unknown}"


def test_every_promql_names_only_metrics_the_running_service_exports(service):
    exposed = promql.exposed_names(service["metrics"])
    assert "toolkit_decision_latency_seconds_bucket" in exposed and "toolkit_not_a_metric" not in exposed
    _check(exposed)
    # and the service exports no metric the dashboards leave out
    read = set().union(*(promql.metric_names(e) for _, e in promql.rule_exprs() + promql.dashboard_promql()))
    from S8.metrics import METRIC_NAMES

    missing = {n for n in METRIC_NAMES if not any(r == n or r.startswith(n + "_") for r in read)}
    assert not missing, f"exported but on no dashboard or rule: {missing}"


def test_every_promql_names_only_metrics_of_the_s8_registry():
    """Without starting anything: the same check against S8/metrics.py's registry."""
    if not (REPO / "S8" / "metrics.py").is_file():
        pytest.skip("S8/metrics.py is not in this checkout yet")
    _check(_exposed_from_registry())


def test_status_and_kill_switch_shared_on_the_bus(service, tmp_path):
    """``bus_bridge.py share-status`` reads the running service's /status with its token and shares it;
    another host reads the kill-switch state of each market from Redis."""
    from tests.S9.servers import RedisServer

    redis = RedisServer(tmp_path).start()
    try:
        env = {**service["env"], "BUS_URL": redis.url}
        r = subprocess.run([sys.executable, "S9/bus_bridge.py", "share-status", "--name", "host-b", "--once",
                            "--url", f"{service['base']}/status"], cwd=REPO, env={**env, "PYTHONPATH": str(REPO)},
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        assert "shared status:host-b (1 market(s))" in r.stdout
        from S9.bus import connect, get_state

        bus = connect(redis.url)
        status = get_state("status:host-b", r=bus)
        assert [m["market"] for m in status["markets"]] == ["BTCUSDT"]
        assert {w["name"] for w in status["workers"]} >= {"streamer-1m", "executor-btcusdt_1m"}
        ks = get_state("kill_switch:BTCUSDT", r=bus)
        assert ks["tripped"] is False and ks["host"] == "host-b"
        r = subprocess.run([sys.executable, "S9/bus_bridge.py", "state", "kill_switch:BTCUSDT"], cwd=REPO,
                           env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and '"tripped": false' in r.stdout
        bus.close()
    finally:
        redis.stop()


def _dockerfile_healthcheck() -> list[str]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    m = re.search(r"^HEALTHCHECK .*?CMD (\[.*\])\s*$", text, re.M)
    assert m, "the Dockerfile has no exec-form HEALTHCHECK"
    import json

    cmd = json.loads(m.group(1))
    assert cmd[0] == "python"
    return [sys.executable, *cmd[1:]]


def test_the_images_healthcheck_command_against_the_service(service):
    cmd = _dockerfile_healthcheck()
    run = lambda env: subprocess.run(cmd, cwd=REPO, env={**env, "PYTHONPATH": str(REPO)}, capture_output=True,
                                     text=True, timeout=60)
    ok = run(service["env"])
    assert ok.returncode == 0, ok.stderr
    wrong = run({**service["env"], "CONTROL_API_TOKEN": "not-the-token-0123456789abcdef"})
    assert wrong.returncode == 1 and "401" in wrong.stderr
    assert "not-the-token" not in wrong.stderr              # the token is never printed
    none = run({**service["env"], "CONTROL_API_TOKEN": ""})
    assert none.returncode == 1 and "CONTROL_API_TOKEN" in none.stderr


def test_a_stopped_service_is_seen_by_the_healthcheck_and_prometheus(service, request):
    # Prometheus where installed (started before the stop, so it saw the service up)
    prometheus = request.getfixturevalue("prometheus") if shutil.which("prometheus") else None
    r = requests.post(f"{service['base']}/stop", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=10)
    assert r.status_code == 200
    service["proc"].wait(60)
    down = subprocess.run(_dockerfile_healthcheck(), cwd=REPO, env={**service["env"], "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60)
    assert down.returncode == 1 and "cannot reach" in down.stderr
    if prometheus is None:
        return

    def alert():
        alerts = requests.get(f"{prometheus['api']}/alerts", timeout=10).json()["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "ToolkitServiceDown"]

    got = wait_for(alert, "ToolkitServiceDown to be pending", timeout=60, every=0.5)
    assert got[0]["state"] in ("pending", "firing") and got[0]["labels"]["job"] == "toolkit"
