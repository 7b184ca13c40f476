"""S5/backtest.py: files, contracts (S6 reads the trades), JSON, HTML, bad input."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from S1.cli import run
from S1.datasets import Dataset, dataset_path, read_metadata, read_parquet, report_path, write_parquet
from S5.engine import TRADE_COLUMNS

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def signals_file(settings_env, sim_signals):
    path = dataset_path(Dataset("ETHUSDC", "1h", 90), "signals")
    write_parquet(sim_signals, path, metadata={"simulated": True, "signals": {"rules_file": "S4/rules_ta_only.yaml",
                                                                             "params": {"rsi_buy": 40}}})
    return path


def _main(argv):
    from S5.backtest import main

    return run(main, argv)


def test_missing_signals_names_the_s4_command(settings_env, capsys):
    code = _main(["--symbol", "ETHUSDC", "--interval", "1h", "--days", "365"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1
    assert "python S4/decision.py --symbol ETHUSDC --interval 1h --days 365 --rules S4/rules.yaml" in err


def test_bad_arguments_are_one_line(settings_env, signals_file, capsys):
    assert _main(["--symbol", "ETHUSDC", "--interval", "1h", "--days", "90", "--fees", "0.5"]) == 2
    assert "fees" in capsys.readouterr().err
    assert _main(["--symbol", "ETHUSDC", "--interval", "1h", "--days", "90", "--risk", "nope.yaml"]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_full_run_writes_every_output(settings_env, signals_file, capsys):
    code = _main(["--symbol", "ETHUSDC", "--interval", "1h", "--days", "90", "--risk", "S6/risk.yaml"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "SIMULATED" in out and "sharpe" in out
    eq_path = dataset_path(Dataset("ETHUSDC", "1h", 90), "equity")
    tr_path = dataset_path(Dataset("ETHUSDC", "1h", 90), "trades")
    js_path = dataset_path(Dataset("ETHUSDC", "1h", 90), "backtest")
    html_path = report_path(Dataset("ETHUSDC", "1h", 90), "backtest", "html")
    for p in (eq_path, tr_path, js_path, html_path):
        assert p.exists(), p
    eq = read_parquet(eq_path)
    assert list(eq.columns) == ["equity"] and str(eq.index.tz) == "UTC" and eq.index.name == "open_time"
    assert len(eq) == len(read_parquet(signals_file))
    trades = read_parquet(tr_path)
    assert list(trades.columns) == list(TRADE_COLUMNS)
    assert str(trades["entry_time"].dt.tz) == "UTC" and str(trades["exit_time"].dt.tz) == "UTC"
    assert set(trades["side"]) <= {"long"}
    assert read_metadata(tr_path)["simulated"] is True
    doc = json.loads(js_path.read_text(), parse_constant=lambda c: pytest.fail(f"non-strict JSON {c}"))
    assert doc["simulated"] is True
    for k in ("total_return", "cagr", "sharpe", "sortino", "calmar", "max_drawdown", "max_drawdown_duration_days",
              "win_rate", "profit_factor", "expectancy", "n_trades", "exposure", "fees_paid", "buy_and_hold_cagr"):
        assert k in doc["metrics"], k
    assert doc["params"]["fees"] == 0.001 and doc["params"]["risk"]["sizing"]["method"] == "atr"
    assert doc["params"]["rules_file"] == "S4/rules_ta_only.yaml"
    assert doc["metrics"]["n_trades"] == len(trades)
    assert doc["metrics"]["final_equity"] == pytest.approx(float(eq["equity"].iloc[-1]))
    html = html_path.read_text()
    assert "SIMULATED" in html and "Monthly returns" in html
    # plotly.js is loaded once per reports folder (the page opens offline from there), not 4.8 MB per page
    assert re.findall(r"<script[^>]*\bsrc='([^']+)'", html) == ["plotly.min.js"]
    assert (html_path.parent / "plotly.min.js").exists()
    assert "Plotly.newPlot" in html and len(html) < 2_000_000


def test_s6_stress_reads_our_files(settings_env, signals_file):
    """The contract with S6/stress.py: its loader accepts the files as written."""
    from S5.backtest_files import backtest_files
    from S6.stress_analysis import load_backtest

    run_ = backtest_files(Dataset("ETHUSDC", "1h", 90), report=False)
    bt = load_backtest(Dataset("ETHUSDC", "1h", 90))
    assert len(bt.trades) == len(run_.result.trades)
    assert bt.initial_equity == pytest.approx(10_000.0)
    np.testing.assert_allclose(bt.trades["pnl"].to_numpy(), run_.result.trades.sort_values("exit_time")["pnl"])


def test_failed_run_keeps_previous_files(settings_env, signals_file):
    from S5.backtest_files import backtest_files

    backtest_files(Dataset("ETHUSDC", "1h", 90), report=False)
    before = dataset_path(Dataset("ETHUSDC", "1h", 90), "backtest").read_bytes()
    bad = read_parquet(signals_file)
    bad = bad.drop(columns=["exit"])
    write_parquet(bad, signals_file, metadata={"simulated": True})
    from S1.errors import UserError

    with pytest.raises(UserError, match="not a signals file"):
        backtest_files(Dataset("ETHUSDC", "1h", 90), report=False)
    assert dataset_path(Dataset("ETHUSDC", "1h", 90), "backtest").read_bytes() == before


def test_module_form_runs(settings_env, signals_file):
    env = {**os.environ, "DATA_DIR": str(settings_env.data_dir), "REPORTS_DIR": str(settings_env.reports_dir),
           "TOOLKIT_ENV_FILE": os.environ["TOOLKIT_ENV_FILE"]}
    proc = subprocess.run([sys.executable, "-m", "S5.backtest", "--symbol", "ETHUSDC", "--interval", "1h", "--days",
                           "90", "--no-report"], check=False, cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ethusdc_1h_90d__rules_trades.parquet" in proc.stdout
