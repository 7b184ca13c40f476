"""The main job end to end, offline: every sprint runs, every output is labelled simulated."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from S1.datasets import Dataset, dataset_path, read_metadata, report_path, sentiment_path

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_main_job_falls_back_to_the_simulated_market(settings_env, tmp_path):
    with socket.socket() as s:  # a Binance URL nobody answers: "no internet"
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}/api"
    env = dict(os.environ, DATA_DIR=str(settings_env.data_dir), REPORTS_DIR=str(settings_env.reports_dir),
               TOOLKIT_ENV_FILE=str(tmp_path / "empty.env"), BINANCE_API_URL=dead)
    r = subprocess.run([sys.executable, "S7/pipeline.py", "--days", "60", "--dry-run-seconds", "15"],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    first = r.stdout.splitlines()[0]
    assert first.startswith("no internet") and "simulated" in first
    for step in ("S1 history", "S2 indicators", "S3 sentiment", "S4 signals", "S5 backtest", "S7 dry-run"):
        assert f"==> {step}" in r.stdout
    for kind in ("candles", "ta", "signals"):
        path = dataset_path(Dataset("BTCUSDT", "1h", 60), kind)
        assert path.exists() and read_metadata(path)["simulated"] is True, kind
    assert read_metadata(sentiment_path("1h"))["simulated"] is True
    backtest = json.loads(dataset_path(Dataset("BTCUSDT", "1h", 60), "backtest").read_text())
    assert backtest["simulated"] is True
    html = report_path(Dataset("BTCUSDT", "1h", 60), "backtest", "html").read_text()
    assert "SIMULATED" in html.upper()[:5000]
    assert "Outputs (SIMULATED market" in r.stdout
    assert "S7 dry-run BTCUSDT 1h (simulated market): replayed" in r.stdout


def test_a_failing_step_stops_the_chain_with_one_line(settings_env, tmp_path):
    env = dict(os.environ, DATA_DIR=str(settings_env.data_dir), REPORTS_DIR=str(settings_env.reports_dir),
               TOOLKIT_ENV_FILE=str(tmp_path / "empty.env"))
    rules = tmp_path / "rules.yaml"      # parses (checked before any step); S4 fails: the _ta file has no sma777
    rules.write_text("entry: {col: sma777, op: '>', value: 0}\n")
    r = subprocess.run([sys.executable, "S7/pipeline.py", "--offline", "--days", "30", "--rules", str(rules),
                        "--skip", "S3", "S5", "S7"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("error: the chain stopped at S4 signals")
