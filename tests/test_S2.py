"""The user's S2 smoke test: run the indicators command, then check that the file
exists, the key columns are present and nothing is NaN after the warm-up rows."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from S1.datasets import Dataset, dataset_path, read_parquet, write_parquet
from S2.ta import IndicatorConfig, warmup_rows

REPO = Path(__file__).resolve().parents[1]
KEY_COLUMNS = ["sma50", "ema21", "rsi14", "MACD_12_26_9", "MACDh_12_26_9", "MACDs_12_26_9",
               "BBL_20_2.0", "BBM_20_2.0", "BBU_20_2.0", "BBB_20_2.0", "BBP_20_2.0", "atr14", "natr14"]
S1_COLUMNS = ["open", "high", "low", "close", "volume", "close_time", "quote_volume", "trades",
              "taker_buy_base", "taker_buy_quote"]


def check_ta_file(path: Path) -> None:
    assert path.exists(), f"{path} is missing"
    df = read_parquet(path)
    missing = [c for c in S1_COLUMNS + KEY_COLUMNS if c not in df.columns]
    assert not missing, f"missing columns {missing}"
    assert df.index.name == "open_time" and df.index.is_monotonic_increasing
    warm = warmup_rows(IndicatorConfig())
    longest = max(warm.values())
    assert len(df) > longest
    for col in KEY_COLUMNS:
        assert df[col].iloc[warm[col]:].notna().all(), f"{col} has NaN after its {warm[col]} warm-up rows"
    assert df[KEY_COLUMNS].iloc[longest:].notna().all().all()


def test_s2_smoke(settings_env):
    from S1.local.simulated import simulate_candles

    candles = simulate_candles("ETHUSDC", "1h", "2024-01-01", "2024-02-01")
    write_parquet(candles, dataset_path(Dataset("ETHUSDC", "1h", 31)), metadata={"simulated": True})
    env = {**os.environ, "DATA_DIR": str(settings_env.data_dir)}
    proc = subprocess.run([sys.executable, "S2/indicators.py", "--symbol", "ETHUSDC", "--interval", "1h",
                           "--days", "31"], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    check_ta_file(dataset_path(Dataset("ETHUSDC", "1h", 31), "ta"))


@pytest.mark.slow
def test_users_own_ta_file(settings_env):
    """The file the sprint plan names, built the way the user builds it -- the S1 download
    (from a simulated local exchange) then ``S2/indicators.py`` -- in a temporary data folder."""
    from S1.local.exchange import LocalBinance

    env = {**os.environ, "DATA_DIR": str(settings_env.data_dir), "REPORTS_DIR": str(settings_env.reports_dir)}
    base = ["--symbol", "ETHUSDC", "--interval", "1h", "--days", "365"]
    with LocalBinance(simulate=True, simulate_days=400) as ex:
        env.update(BINANCE_API_URL=ex.api_url, BINANCE_ARCHIVE_URL=ex.url)
        for step in (["S1/historical.py", *base, "--source", "rest"], ["S2/indicators.py", *base]):
            proc = subprocess.run([sys.executable, *step], cwd=REPO, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert proc.returncode == 0, (step, proc.stderr[-2000:])
    path = dataset_path(Dataset("ETHUSDC", "1h", 365), "ta")
    assert path.parent == settings_env.data_dir or settings_env.data_dir in path.parents
    check_ta_file(path)
    assert len(read_parquet(path)) >= 365 * 24 - 24
