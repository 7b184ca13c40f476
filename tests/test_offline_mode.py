"""Offline is a mode of every network command (issue 21): ``--offline`` / ``OFFLINE=1`` runs the
command against the project's local exchange / news feed on a simulated market, and the output
says so (file metadata or printed label). The real Binance URL is pointed at a closed port, so a
command that still went to the network would fail instead of passing."""

from __future__ import annotations

import os
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEAD = "http://127.0.0.1:9"


def _env(tmp_path: Path, **extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("OFFLINE", "SIMULATED_MARKET")}
    env.update({"DATA_DIR": str(tmp_path / "data"), "REPORTS_DIR": str(tmp_path / "reports"),
                "BINANCE_API_URL": f"{DEAD}/api", "BINANCE_ARCHIVE_URL": DEAD, "NEWS_FEEDS": f"{DEAD}/rss",
                "TOOLKIT_ENV_FILE": str(tmp_path / "none.env"), "PYTHONPATH": str(REPO)})
    env.update(extra)
    return env


def _run(args: list[str], env: dict[str, str], timeout: int = 240) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_unreachable_exchange_error_names_offline(tmp_path):
    proc = _run(["S1/historical.py", "--symbol", "BTCUSDT", "--days", "3", "--no-progress"], _env(tmp_path))
    assert proc.returncode == 3, proc.stderr
    assert "cannot reach" in proc.stderr and "--offline" in proc.stderr
    assert "existing file is untouched" not in proc.stderr      # there was no file
    assert not (tmp_path / "data" / "btcusdt_1h_3d.parquet").exists()


@pytest.mark.parametrize("how", ["flag", "env"])
def test_historical_offline_writes_simulated_candles(tmp_path, how):
    from S1.datasets import read_metadata, read_parquet

    args = ["S1/historical.py", "--symbol", "BTCUSDT", "--interval", "1h", "--days", "5", "--no-progress"]
    env = _env(tmp_path)
    if how == "flag":
        args.append("--offline")
    else:
        env["OFFLINE"] = "1"
    proc = _run(args, env)
    assert proc.returncode == 0, proc.stderr
    path = tmp_path / "data" / "btcusdt_1h_5d.parquet"
    assert "SIMULATED" in proc.stdout and "simulated" in proc.stderr.lower()
    assert read_metadata(path)["simulated"] is True
    assert len(read_parquet(path)) >= 24 * 4


def _kline_rows(db: Path) -> int:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return con.execute("select count(*) from kline").fetchone()[0]
    finally:
        con.close()


def test_streamer_offline_streams_the_simulated_market(tmp_path):
    import signal
    import time

    db = tmp_path / "data" / "btcusdt_1m_realtime.db"
    # the run ends on the event (rows in the table) with Ctrl-C; --duration is only a generous bound
    proc = subprocess.Popen([sys.executable, "S1/streamer.py", "--symbol", "BTCUSDT", "--offline",
                             "--offline-candle-seconds", "0.5", "--duration", "300"], cwd=REPO, env=_env(tmp_path),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if _kline_rows(db) > 0:
                    break
            except sqlite3.Error:     # not created yet
                pass
            time.sleep(0.05)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "SIMULATED" in out
    assert _kline_rows(db) > 0
    from S1.stream_store import database_simulated

    assert database_simulated(db) is True          # the file itself says so (toolkit_meta), not only the run


def test_sentiment_offline_reads_the_local_feed_and_labels_its_output(tmp_path):
    from S1.datasets import read_metadata

    proc = _run(["S3/sentiment.py", "--since", "2026-01-01", "--until", "2026-01-10", "--offline",
                 "--classifier", "lexicon"], _env(tmp_path))
    if proc.returncode != 0 and "since" in proc.stderr and "future" in proc.stderr:
        pytest.skip(proc.stderr)
    assert proc.returncode == 0, proc.stderr
    assert "SIMULATED" in proc.stdout
    out = tmp_path / "data" / "sentiment_1h.parquet"
    assert read_metadata(out).get("simulated") is True


def test_executor_replay_offline_prints_one_heartbeat_per_candle(tmp_path):
    proc = _run(["S7/executor.py", "--symbol", "BTCUSDT", "--interval", "1h", "--offline", "--replay-days", "2",
                 "--rules", "S4/rules_ta_only.yaml"], _env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    m = re.search(r"\(simulated market\): replayed (\d+) closed candles", proc.stdout)
    assert m, proc.stdout[-2000:]
    beats = re.findall(r"^\d{4}-\d\d-\d\d \d\d:\d\d BTCUSDT 1h close [\d,.]+ \| signal: .+ \| position [\d,.]+ "
                       r"\| equity [\d,.]+ USDT$", proc.stdout, flags=re.M)
    assert len(beats) == int(m.group(1)) > 0
    assert len(set(b[:16] for b in beats)) == len(beats)       # one line per candle, each candle once


def test_executor_offline_refuses_live(tmp_path):
    proc = _run(["S7/executor.py", "--symbol", "BTCUSDT", "--offline", "--live"], _env(tmp_path), timeout=60)
    assert proc.returncode == 2 and "--offline" in proc.stderr


def test_funding_offline_downloads_simulated_fundings(tmp_path):
    from S1.datasets import funding_path, read_metadata, read_parquet

    proc = _run(["S1/funding.py", "--symbol", "BTCUSDT", "--days", "20", "--offline"], _env(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "simulated market data" in proc.stdout
    path = funding_path("BTCUSDT", data_dir=tmp_path / "data")
    assert read_metadata(path).get("simulated") is True and len(read_parquet(path)) >= 20 * 3 - 3


def test_batch_offline_runs_its_history_tasks_on_the_simulated_market(tmp_path):
    from S1.datasets import read_metadata

    cfg = tmp_path / "batch.yaml"
    cfg.write_text("defaults:\n  days: [5]\ntasks:\n  - name: one\n    mode: history\n"
                   "    symbols: [BTCUSDT, ETHUSDT]\n    intervals: [1h]\n")
    proc = _run(["S1/batch.py", "--config", str(cfg), "--offline", "--workers", "2"], _env(tmp_path))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for sym in ("btcusdt", "ethusdt"):
        assert read_metadata(tmp_path / "data" / f"{sym}_1h_5d.parquet")["simulated"] is True
