"""S4/decision.py: the command a user runs (both invocation forms), its output and its
one-line errors with exit code 2."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from S1.cli import run
from S1.datasets import Dataset, dataset_path, read_parquet, sentiment_path, write_parquet
from S4 import decision
from tests.S4.helpers import RULE_FILES, make_sentiment, write_market

REPO = Path(__file__).resolve().parents[2]


def _env(settings_env) -> dict:
    env = dict(os.environ)
    env.update(DATA_DIR=str(settings_env.data_dir), REPORTS_DIR=str(settings_env.reports_dir))
    return env


@pytest.mark.parametrize("form", ["script", "module"])
def test_decision_command_writes_signals_and_chart(form, settings_env, btc_1h):
    write_market(settings_env.data_dir, btc_1h, simulated=True)
    write_parquet(make_sentiment(btc_1h.index), sentiment_path("1h"))
    cmd = ([sys.executable, "S4/decision.py"] if form == "script" else [sys.executable, "-m", "S4.decision"])
    cmd += ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "150", "--rules", "S4/rules.yaml",
            "--set", "rsi_buy=35"]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(settings_env), capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert f"btcusdt_1h_150d__rules_signals.parquet: {len(btc_1h):,} rows" in out and "(simulated market data)" in out
    assert "rsi_buy=35" in out and "sentiment_score known on 99.3% of the bars" in out
    df = read_parquet(dataset_path(Dataset("BTCUSDT", "1h", 150), "signals"))
    assert {"entry", "exit", "signal", "rule", "sentiment_score", "rsi14"} <= set(df.columns)
    assert (settings_env.reports_dir / "btcusdt_1h_150d__rules_signals.png").stat().st_size > 10_000


def test_decision_main_in_process(settings_env, btc_1h, capsys):
    write_market(settings_env.data_dir, btc_1h)
    assert run(decision.main, ["--symbol", "btcusdt", "--interval", "1h", "--days", "150",
                               "--rules", str(RULE_FILES[2]), "--no-plot"]) == 0
    out = capsys.readouterr().out
    assert "entries" in out and "fired: " in out and f"last bar {btc_1h.index[-1]}" in out
    assert not (settings_env.reports_dir / "btcusdt_1h_150d_signals.png").exists()


@pytest.mark.parametrize("argv,fragment", [
    (["--symbol", "BTCUSDT", "--interval", "1h", "--days", "150", "--rules", str(RULE_FILES[2])],
     "create it first with: python S2/indicators.py --symbol BTCUSDT --interval 1h --days 150"),
    (["--symbol", "BTCUSDT", "--interval", "1hour", "--days", "150"], "unsupported interval '1hour'"),
    (["--symbol", "BTCUSDT", "--interval", "1h", "--days", "150", "--rules", "nope.yaml"],
     "rule file nope.yaml does not exist"),
    (["--symbol", "BTCUSDT", "--interval", "1h", "--days", "150", "--set", "rsi_buy"], "is not NAME=VALUE"),
    (["--symbol", "BTCUSDT", "--interval", "1h", "--days", "150", "--sentiment-max-age", "soon"],
     "is not a duration"),
    (["--symbol", "BTCUSDT", "--interval", "1h", "--days", "x"], "argument --days: invalid int value"),
])
def test_decision_bad_input_is_one_line_and_exit_2(argv, fragment, settings_env, capsys):
    try:
        code = run(decision.main, argv)
    except SystemExit as exc:  # argparse errors exit from inside parse_args
        code = exc.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert fragment in err and len(err.splitlines()) == 1, err


def test_bad_override_names_the_param(settings_env, btc_1h, capsys):
    write_market(settings_env.data_dir, btc_1h)
    code = run(decision.main, ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "150", "--rules",
                               str(RULE_FILES[2]), "--set", "rsi_buy=99"])
    err = capsys.readouterr().err
    assert code == 2 and "param rsi_buy" in err and "99 is above its high 50" in err
