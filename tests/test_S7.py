"""The user's S7 check: the exact dry-run command the main pipeline runs works offline
against the local simulated market and prints the session summary."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
PIPELINE_ARGS = ["--symbol", "BTCUSDT", "--interval", "1h", "--rules", "S4/rules.yaml", "--dry-run",
                 "--replay-days", "7", "--duration", "20"]


def test_pipeline_dry_run_offline(settings_env, tmp_path):
    from S1.datasets import read_parquet, sentiment_path, write_parquet
    from S1.local.exchange import LocalBinance

    # S4/rules.yaml reads S3's sentiment: the pipeline has written it by then (a stand-in here)
    end = pd.Timestamp.now(tz="UTC").floor("h")
    idx = pd.date_range(end - pd.Timedelta(days=30), end, freq="h", tz="UTC", name="open_time")
    score = np.clip(np.sin(np.arange(len(idx)) / 9.0), -1, 1)
    write_parquet(pd.DataFrame({"sentiment_score": score, "n_items": 3}, index=idx), sentiment_path("1h"))
    assert len(read_parquet(sentiment_path("1h"))) == len(idx)
    with LocalBinance(simulate=True, simulate_days=60) as server:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BINANCE_")}
        env.update(BINANCE_API_URL=server.api_url, SIMULATED_MARKET="1", DATA_DIR=str(settings_env.data_dir),
                   TOOLKIT_ENV_FILE=str(tmp_path / "empty.env"))
        r = subprocess.run([sys.executable, "S7/executor.py", *PIPELINE_ARGS], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    beat = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d BTCUSDT 1h close [\d,.]+ \| signal: .+ \| position [\d,.]+ \| equity ")
    lines = [ln for ln in r.stdout.splitlines() if not beat.match(ln)]
    assert len(r.stdout.splitlines()) - len(lines) == 168      # the heartbeat: one line per closed candle
    assert lines[0] == "S7 dry-run BTCUSDT 1h (simulated market): replayed 168 closed candles (end of data)"
    labels = [ln.split()[0] for ln in lines[1:] if not ln.startswith("  latency")]
    assert labels == ["orders", "fills", "position", "pnl", "kill-switch", "order", "state"]
    assert f"order log   {settings_env.data_dir / 'orders.jsonl'}" in r.stdout
    assert "reconcile (start)" in r.stderr
