"""S2/indicators.py, the thin CLI: both ways of running it, lengths from flags and
YAML, one-line errors with exit codes and nothing written on failure."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from S1.cli import run
from S1.datasets import Dataset, dataset_path, read_metadata, read_parquet, write_parquet
from S1.local.simulated import simulate_candles
from S2 import indicators

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def eth(settings_env):
    df = simulate_candles("ETHUSDC", "1h", "2024-01-01", "2024-01-11")
    write_parquet(df, dataset_path(Dataset("ETHUSDC", "1h", 10)), metadata={"simulated": True})
    return df


def _env(settings_env) -> dict:
    env = dict(os.environ)
    env.update(DATA_DIR=str(settings_env.data_dir), REPORTS_DIR=str(settings_env.reports_dir),
               TOOLKIT_ENV_FILE=os.environ["TOOLKIT_ENV_FILE"])
    return env


@pytest.mark.parametrize("how", [["S2/indicators.py"], ["-m", "S2.indicators"]])
def test_script_and_module_both_work(eth, settings_env, how):
    out = dataset_path(Dataset("ETHUSDC", "1h", 10), "ta")
    proc = subprocess.run([sys.executable, *how, "--symbol", "ethusdc", "--interval", "1h", "--days", "10"],
                          cwd=REPO, env=_env(settings_env), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert f"wrote {out}: 240 rows, 13 indicator columns" in proc.stdout and "simulated" in proc.stdout
    assert "BBP_20_2.0" in read_parquet(out).columns


def test_flags_override_yaml(eth, tmp_path, capsys):
    cfg = tmp_path / "lengths.yaml"
    cfg.write_text("sma: [10, 30]\nrsi: [9]\nbbands: {length: 14, std: 1.5}\n")
    assert run(indicators.main, ["--symbol", "ETHUSDC", "--interval", "1h", "--days", "10", "--config", str(cfg),
                                 "--rsi", "5,21", "--macd", "6,13,4", "--atr", "7"]) == 0
    df = read_parquet(dataset_path(Dataset("ETHUSDC", "1h", 10), "ta"))
    want = ["sma10", "sma30", "ema21", "rsi5", "rsi21", "MACD_6_13_4", "MACDh_6_13_4", "MACDs_6_13_4",
            "BBL_14_1.5", "BBM_14_1.5", "BBU_14_1.5", "BBB_14_1.5", "BBP_14_1.5", "atr7", "natr7"]
    assert df.columns.tolist()[-len(want):] == want and "rsi9" not in df
    meta = read_metadata(dataset_path(Dataset("ETHUSDC", "1h", 10), "ta"))
    assert meta["indicators"]["config"]["rsi"] == [5, 21] and meta["simulated"] is True


@pytest.mark.parametrize("argv, message, code", [
    (["--days", "30"], "error: " + "{data}/ethusdc_1h_30d.parquet does not exist -- create it first with: "
                       "python S1/historical.py --symbol ETHUSDC --interval 1h --days 30", 2),
    (["--days", "10", "--sma", "300"], "240 rows, fewer than the 300 that sma300 needs", 2),
    (["--days", "10", "--macd", "26,12,9"], "fast length 26 must be below slow length 12", 2),
    (["--days", "10", "--bb", "20"], "bbands: expected length,std", 2),
    (["--days", "10", "--config", "nope.yaml"], "config file nope.yaml does not exist", 2),
    (["--days", "x"], "argument --days: invalid int value", 2),
])
def test_bad_input_one_line_nonzero_nothing_written(eth, settings_env, capsys, argv, message, code):
    try:
        rc = run(indicators.main, ["--symbol", "ETHUSDC", "--interval", "1h", *argv])
    except SystemExit as exc:  # argparse errors exit directly (one line, code 2)
        rc = exc.code
    err = capsys.readouterr().err
    assert rc == code
    assert message.format(data=settings_env.data_dir) in err and err.count("\n") == 1, err
    assert not any(p.name.endswith("_ta.parquet") or ".tmp" in p.name for p in settings_env.data_dir.iterdir())


def test_unsorted_source_is_rejected(settings_env, capsys):
    df = simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-11")
    # write a file whose open times go backwards (validate_candles refuses it)
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = dataset_path(Dataset("BTCUSDT", "1h", 10))
    path.parent.mkdir(parents=True)
    pq.write_table(pa.Table.from_pandas(df.iloc[::-1], preserve_index=True), path)
    rc = run(indicators.main, ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "10"])
    assert rc == 2 and "open times are not increasing" in capsys.readouterr().err
    assert not dataset_path(Dataset("BTCUSDT", "1h", 10), "ta").exists()
