"""Prometheus rules and Grafana files pass their own tools (promtool: config, rules and the rule unit
tests -- series in, alerts out); the dashboards are valid, complete and provisioned from the repo."""

from __future__ import annotations

import doctest
import shutil
import subprocess

import pytest
import yaml

from tests.S9 import promql
from tests.S9.promql import GRAFANA, PROM, REPO


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.skip("promtool is not installed (Debian package prometheus; .ci/run installs it)")
    return path


@pytest.mark.parametrize("args", [["check", "config", "prometheus.yml"], ["check", "rules", "alerts.yml"],
                                  ["test", "rules", "alerts_test.yml"]], ids=" ".join)
def test_promtool(args):
    r = subprocess.run([_promtool(), *args], cwd=PROM, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout + r.stderr


def test_every_alert_the_issue_asks_for_is_unit_tested():
    rules = {name for name, _ in promql.rule_exprs()}
    wanted = {"ToolkitServiceDown", "ToolkitStreamStale", "ToolkitKillSwitchTripped", "ToolkitWorkerRestartLoop",
              "ToolkitOrderRejections", "ToolkitDecisionLatencyHigh"}
    assert wanted <= rules
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    firing = {c["alertname"] for t in tests for c in t.get("alert_rule_test", []) if c.get("exp_alerts")}
    quiet = {c["alertname"] for t in tests for c in t.get("alert_rule_test", []) if not c.get("exp_alerts")}
    assert wanted <= firing, f"no test where these fire: {wanted - firing}"
    assert wanted <= quiet, f"no test where these stay quiet: {wanted - quiet}"


def test_a_broken_rule_fails_the_unit_tests(tmp_path):
    """The unit tests can fail: a stale-stream threshold of 2 intervals instead of 3 is caught."""
    promtool = _promtool()
    text = (PROM / "alerts.yml").read_text()
    assert "> 3 * market:toolkit_candle_interval_seconds:estimate" in text
    (tmp_path / "alerts.yml").write_text(text.replace("> 3 * market:", "> 2 * market:"))
    shutil.copy(PROM / "alerts_test.yml", tmp_path)
    r = subprocess.run([promtool, "test", "rules", "alerts_test.yml"], cwd=tmp_path, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode != 0 and "ToolkitStreamStale" in r.stdout + r.stderr


def test_promql_name_parser():
    assert doctest.testmod(promql).failed == 0
    assert promql.metric_names("histogram_quantile(0.99, sum by (le) (rate(x_bucket[$__rate_interval])))") == {
        "x_bucket"}
    assert promql.metric_names("time() - a{market=~\"$market\"} > 3 * b:c:d") == {"a", "b:c:d"}
    assert promql.metric_names("a / max_over_time(a[$__range]) - 1e3") == {"a"}


def test_dashboards_are_complete():
    boards = promql.dashboards()
    assert {"toolkit_service.json", "toolkit_prices.json"} <= set(boards)
    uids = set()
    for name, d in boards.items():
        assert d["uid"] not in uids
        uids.add(d["uid"])
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids)), f"{name}: duplicate panel ids"
        for p in d["panels"]:
            if p["type"] == "row":
                continue
            assert p.get("datasource", {}).get("uid") in ("prometheus", "influxdb"), f"{name}: {p['title']}"
            assert p["targets"], f"{name}: {p['title']} has no query"
            for t in p["targets"]:
                key = "expr" if p["datasource"]["type"] == "prometheus" else "query"
                assert t.get(key, "").strip(), f"{name}: {p['title']} has an empty {key}"
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24, f"{name}: {p['title']} is wider than the grid"
    # what the issue asks the service dashboard to show
    text = (GRAFANA / "dashboards" / "toolkit_service.json").read_text()
    for metric in ("toolkit_worker_up", "toolkit_worker_restarts_total", "up{", "toolkit_up",
                   "toolkit_last_candle_close_timestamp_seconds", "toolkit_candles_total", "toolkit_orders_total",
                   "toolkit_position_quantity", "toolkit_equity_quote", "toolkit_kill_switch_tripped",
                   "toolkit_decision_latency_seconds_bucket"):
        assert metric in text, metric
    assert "max_over_time(toolkit_equity_quote" in text        # drawdown


def test_provisioning_points_at_the_files_compose_mounts():
    ds = yaml.safe_load((GRAFANA / "provisioning/datasources/datasources.yml").read_text())
    by_uid = {d["uid"]: d for d in ds["datasources"]}
    assert by_uid["prometheus"]["type"] == "prometheus" and by_uid["prometheus"]["url"] == "http://prometheus:9090"
    assert by_uid["influxdb"]["url"] == "http://influxdb:8086"
    used = {p["datasource"]["uid"] for d in promql.dashboards().values() for p in d["panels"] if "datasource" in p}
    assert used <= set(by_uid)
    prov = yaml.safe_load((GRAFANA / "provisioning/dashboards/dashboards.yml").read_text())
    path = prov["providers"][0]["options"]["path"]
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./S9/grafana/dashboards:{path}:ro" in mounts
    assert "./S9/grafana/provisioning:/etc/grafana/provisioning:ro" in mounts
    home = compose["services"]["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert home.startswith(path + "/") and (GRAFANA / "dashboards" / home.rsplit("/", 1)[1]).is_file()
    # Prometheus: the rule file it loads is the one tested, the target is the compose service
    cfg = yaml.safe_load((PROM / "prometheus.yml").read_text())
    assert cfg["rule_files"] == ["alerts.yml"]
    assert cfg["scrape_configs"][0]["static_configs"][0]["targets"] == ["toolkit:8008"]
    assert "./S9/prometheus:/etc/prometheus:ro" in compose["services"]["prometheus"]["volumes"]

