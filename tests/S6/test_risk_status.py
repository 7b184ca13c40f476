"""``python S6/risk.py status`` reads the kill-switch states a real S7 session writes:
a dry-run replay, a dry-run and a testnet session, each named (the status used to
read only ``data/state/kill_switch.json``, a file S7 never writes outside live)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.S7.helpers import ALWAYS_ENTER, API_KEY, CANARY_SECRET, candles, warm_closes
from tests.S7.test_executor_cli import _env, _run, _streamer_db, testnet  # noqa: F401  (fixture)

REPO = Path(__file__).resolve().parents[2]


def _status(env, *args):
    r = subprocess.run([sys.executable, "S6/risk.py", "status", *args], cwd=REPO, env=env, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r.stdout


def test_status_finds_the_states_s7_wrote(testnet, tmp_path):  # noqa: F811
    server, ex = testnet
    rules = tmp_path / "rules.yaml"
    rules.write_text(ALWAYS_ENTER)
    env = _env(tmp_path, BINANCE_API_URL=server.api_url, BINANCE_TESTNET_API_URL=server.api_url,
               BINANCE_TESTNET_API_KEY=API_KEY, BINANCE_TESTNET_API_SECRET=CANARY_SECRET)
    assert json.loads(_status(env, "--json"))[0]["mode"] == "live"          # nothing yet: the live default
    # a dry-run replay on the simulated market
    r = _run(["--symbol", "BTCUSDT", "--interval", "1h", "--rules", str(rules), "--dry-run", "--replay-days", "2",
              "--duration", "600"], env)
    assert r.returncode == 0, r.stderr
    # a dry-run and a testnet session fed by a streamer database
    ex.set_price("BTCUSDT", "27060")
    db = tmp_path / "data" / "btcusdt_1m_realtime.db"
    _streamer_db(db, candles(np.r_[warm_closes(80, 27_000.0), 27_050.0]))
    common = ["--symbol", "BTCUSDT", "--interval", "1m", "--rules", str(rules), "--duration", "3",
              "--max-candle-age", "600"]
    for extra in (["--dry-run"], []):
        r = _run(common + extra, env)
        assert r.returncode == 0, r.stderr

    states = json.loads(_status(env, "--json"))
    by_label = {s["label"]: s for s in states}
    assert {"dry-run", "testnet", "replay BTCUSDT 1h"} <= set(by_label), by_label.keys()
    assert "live" not in by_label                                            # S7 never wrote a live state
    for label, s in by_label.items():
        assert Path(s["path"]).exists() and s["last_equity"] is not None, label   # each session recorded equity
    assert by_label["replay BTCUSDT 1h"]["mode"] == "dry-run replay"
    text = _status(env)
    for label in ("[dry-run]", "[testnet]", "[replay BTCUSDT 1h]"):
        assert label in text
    one = json.loads(_status(env, "--mode", "testnet", "--json"))
    assert one["path"] == by_label["testnet"]["path"]


def test_trip_and_reset_follow_mode(settings_env, capsys):
    from S1.datasets import kill_switch_path
    from S6.risk import main

    assert main(["trip", "--mode", "dry-run", "--reason", "holiday"]) == 0
    assert kill_switch_path("dry-run").exists() and not kill_switch_path("live").exists()
    capsys.readouterr()
    assert main(["status"]) == 0
    out = capsys.readouterr().out
    assert "[dry-run] kill-switch TRIPPED" in out and "live" not in out.split("\n")[0]
    assert main(["reset", "--mode", "dry-run", "--by", "erin"]) == 0
    assert main(["status", "--mode", "dry-run", "--json"]) == 0
    assert json.loads(capsys.readouterr().out.split("Logged in")[-1].split("\n", 1)[1])["tripped"] is False
