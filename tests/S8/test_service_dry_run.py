"""The service in its default mode (dry-run executors, no ``--offline``) with the market data URLs
pointed at a local accelerated market: once a position is open, ``/panic`` sells it in the dry-run
account file and the restarted executor is flat and blocked; ``POST /stop`` exits 0."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests.S8.conftest import ACTIVE, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def dry(tmp_path, start_service):
    from S1.offline import fast_market, stream_url

    market = fast_market(["BTCUSDT"], candle_seconds=1)
    market.start()
    rules = tmp_path / "enter_only.yaml"       # enters, never exits (and no stops): the position waits for the panic
    rules.write_text(ACTIVE.splitlines()[0] + "\n")
    cfg = tmp_path / "service.yaml"
    cfg.write_text(f"markets:\n  - {{symbol: BTCUSDT, rules: {rules}, mode: dry-run, args: [--no-stops]}}\n"
                   "supervision: {startup_grace: 120, backoff_initial: 0.5, backoff_max: 2}\n")
    try:
        with start_service(tmp_path, cfg, rules=rules, BINANCE_API_URL=market.api_url,
                           BINANCE_WS_URL=stream_url(market)) as s:
            yield s
    finally:
        market.stop()


def test_panic_in_dry_run_sells_the_simulated_position(dry):
    assert dry.market("BTCUSDT")["mode"] == "dry-run"
    wait_for(lambda: (dry.market("BTCUSDT")["position"] or {}).get("qty", 0) > 0, 240, what="an open position")
    rep = dry.post("/panic").json()
    m = rep["markets"][0]
    assert not m["errors"], rep
    assert Decimal(m["sold"]) > 0 and Decimal(m["position_before"]) > 0
    sim = json.loads((dry.tmp / "data" / "state" / "s7_dryrun_btcusdt_1m.sim.json").read_text())
    assert "BTC" in json.dumps(sim["book"])
    wait_for(lambda: (dry.market("BTCUSDT")["position"] or {}).get("qty", 1) == 0, 120, what="a flat position")
    st = dry.market("BTCUSDT")
    assert st["kill_switch"]["tripped"] and st["kill_switch"]["reason"] == "panic" and st["paused"]
    r = dry.post("/stop")                     # the clean shutdown through the API
    assert r.status_code == 200 and r.json() == {"stopping": True}
    assert dry.proc.wait(30) == 0
    assert "S8 service stopped (POST /stop)" in dry.log.read_text()
