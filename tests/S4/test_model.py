"""S4/model.py: the walk-forward command prints per-fold scores and writes ml_proba."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from S1.cli import run
from S1.datasets import Dataset, dataset_path, read_parquet
from S4 import model
from tests.S4.helpers import write_market

REPO = Path(__file__).resolve().parents[2]


def test_model_command(settings_env, btc_1h):
    write_market(settings_env.data_dir, btc_1h, simulated=False)
    env = dict(os.environ, DATA_DIR=str(settings_env.data_dir), REPORTS_DIR=str(settings_env.reports_dir))
    cmd = [sys.executable, "S4/model.py", "--symbol", "BTCUSDT", "--interval", "1h", "--days", "150",
           "--horizon", "3", "--train-bars", "800", "--test-bars", "700", "--max-iter", "30"]
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split() == ["fold", "test_from", "test_to", "n_train", "n_test", "auc", "accuracy",
                                "baseline_accuracy"]
    assert len([ln for ln in lines if ln.strip()[:1].isdigit()]) == 5  # test blocks start at 803 + k * 700 < 3623
    assert "out of sample, all folds: AUC" in proc.stdout and "vs baseline" in proc.stdout
    assert "simulated" not in proc.stdout
    df = read_parquet(dataset_path(Dataset("BTCUSDT", "1h", 150), "ml"))
    assert df["ml_proba"].iloc[:803].isna().all() and df["ml_proba"].iloc[803:].notna().all()
    assert (settings_env.reports_dir / "btcusdt_1h_150d_ml_folds.png").exists()


def test_model_bad_input(settings_env, capsys):
    code = run(model.main, ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "150"])
    err = capsys.readouterr().err
    assert code == 2 and "python S2/indicators.py --symbol BTCUSDT --interval 1h --days 150" in err
    code = run(model.main, ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "150", "--horizon", "0"])
    assert code == 2 and "horizon must be a whole number >= 1" in capsys.readouterr().err
