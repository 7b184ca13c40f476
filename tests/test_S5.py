"""The user's S5 smoke test: S2 -> S4 -> S5 backtest and look-ahead check as a user
runs them (subprocesses on a simulated market), then the outputs' contracts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from S1.datasets import Dataset, dataset_path, read_parquet, report_path, write_parquet

REPO = Path(__file__).resolve().parents[1]
TRADE_COLUMNS = ["entry_time", "exit_time", "side", "size", "entry_price", "exit_price", "fees", "pnl", "return"]


def _run(args, env):
    return subprocess.run([sys.executable, *args], check=False, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=600)


RULES = "S4/rules_ta_only.yaml"


def check_backtest_outputs(symbol: str, interval: str, days: int, rules: str = RULES) -> dict:
    trades = read_parquet(dataset_path(Dataset(symbol, interval, days), "trades", rules=rules))
    assert list(trades.columns) == TRADE_COLUMNS
    equity = read_parquet(dataset_path(Dataset(symbol, interval, days), "equity", rules=rules))
    assert list(equity.columns) == ["equity"] and str(equity.index.tz) == "UTC"
    doc = json.loads(dataset_path(Dataset(symbol, interval, days), "backtest", rules=rules).read_text())
    assert doc["metrics"]["n_trades"] == len(trades)
    assert abs(doc["metrics"]["final_equity"] - float(equity["equity"].iloc[-1])) < 1e-6
    assert report_path(Dataset(symbol, interval, days), "backtest", "html", rules=rules).exists()
    return doc


def test_s5_smoke(settings_env):
    from S1.local.simulated import simulate_candles

    candles = simulate_candles("ETHUSDC", "1h", "2024-01-01", "2024-03-01")
    write_parquet(candles, dataset_path(Dataset("ETHUSDC", "1h", 60)), metadata={"simulated": True})
    env = {**os.environ, "DATA_DIR": str(settings_env.data_dir), "REPORTS_DIR": str(settings_env.reports_dir)}
    base = ["--symbol", "ETHUSDC", "--interval", "1h", "--days", "60"]
    proc = _run(["S5/backtest.py", *base], env)
    assert proc.returncode == 2 and "python S4/decision.py" in proc.stderr
    for step in (["S2/indicators.py", *base], ["S4/decision.py", *base, "--rules", "S4/rules_ta_only.yaml",
                                               "--no-plot"], ["S5/backtest.py", *base, "--rules", "S4/rules_ta_only.yaml",
                                                "--risk", "S6/risk.yaml"]):
        proc = _run(step, env)
        assert proc.returncode == 0, (step, proc.stderr[-2000:])
    assert "SIMULATED" in proc.stdout
    doc = check_backtest_outputs("ETHUSDC", "1h", 60)
    assert doc["simulated"] is True
    proc = _run(["S5/lookahead_check.py", *base, "--rules", "S4/rules_ta_only.yaml", "--cuts", "10"], env)
    assert proc.returncode == 0 and "PASS" in proc.stdout, proc.stderr[-2000:]


@pytest.mark.slow
def test_users_own_backtest(settings_env):
    """The files the sprint plan names, built the way the user builds them -- S1 download
    (simulated local exchange), S2, S4, S5 -- in a temporary data folder."""
    from S1.local.exchange import LocalBinance

    env = {**os.environ, "DATA_DIR": str(settings_env.data_dir), "REPORTS_DIR": str(settings_env.reports_dir)}
    base = ["--symbol", "ETHUSDC", "--interval", "1h", "--days", "365"]
    with LocalBinance(simulate=True, simulate_days=400) as ex:
        env.update(BINANCE_API_URL=ex.api_url, BINANCE_ARCHIVE_URL=ex.url)
        for step in (["S1/historical.py", *base, "--source", "rest"], ["S2/indicators.py", *base],
                     ["S4/decision.py", *base, "--rules", "S4/rules_ta_only.yaml", "--no-plot"],
                     ["S5/backtest.py", *base, "--rules", "S4/rules_ta_only.yaml"]):
            proc = _run(step, env)
            assert proc.returncode == 0, (step, proc.stderr[-2000:])
    doc = check_backtest_outputs("ETHUSDC", "1h", 365)
    trades = dataset_path(Dataset("ETHUSDC", "1h", 365), "trades", rules=RULES)
    assert settings_env.data_dir in trades.parents
    assert doc["metrics"]["n_trades"] == len(read_parquet(trades))
