"""A download killed with SIGKILL -- no exception handler, no cleanup, no ``finally`` --
leaves the previous file byte-identical (the README's claim), at several points of a
real ``python S1/historical.py`` run; a later run then equals a clean download.

The kill points are events on the local server, not moments in time: the server holds
the request of page k (an injected delay that never ends while the test runs), so the
process is known to be blocked right there when it is killed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from S1.datasets import read_candles
from S1.history import update_dataset

REPO = Path(__file__).resolve().parents[2]
END = "2023-05-01"
PAGES = 5            # 200 days of 1h candles = 4,800 rows = 5 pages of 1,000, sent one at a time
HOLD = 3600.0        # a held request: answered only when the server stops (never, for the process)

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.name != "posix", reason="needs SIGKILL")]


@pytest.fixture
def market(settings_env, monkeypatch):
    from S1.intervals import to_ms
    from S1.local.exchange import LocalBinance
    from S1.settings import get_settings

    with LocalBinance(simulate=True, simulate_days=400, now_ms=to_ms("2023-05-31 12:30")) as ex:
        monkeypatch.setenv("BINANCE_API_URL", ex.api_url)
        monkeypatch.setenv("BINANCE_ARCHIVE_URL", ex.url)
        get_settings.cache_clear()
        yield ex
    get_settings.cache_clear()


def _wait(cond, what: str, proc: subprocess.Popen, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert proc.poll() is None, f"the download ended ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"never reached: {what}"
        time.sleep(0.01)


def _start(out: Path, ex, settings) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BINANCE_")}
    env.update(BINANCE_API_URL=ex.api_url, BINANCE_ARCHIVE_URL=ex.url, DATA_DIR=str(settings.data_dir),
               REPORTS_DIR=str(settings.reports_dir), TOOLKIT_ENV_FILE=os.environ["TOOLKIT_ENV_FILE"],
               REST_MAX_IN_FLIGHT="1", HTTP_TIMEOUT="600", HTTP_MAX_RETRIES="1")
    return subprocess.Popen([sys.executable, "S1/historical.py", "--symbol", "BTCUSDT", "--interval", "1h",
                             "--days", "200", "--end", END, "--out", str(out), "--source", "rest", "--no-progress"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert proc.returncode == -signal.SIGKILL


def test_sigkill_at_every_page_leaves_the_previous_file_byte_identical(market, settings_env, tmp_path):
    out = tmp_path / "btc.parquet"
    good = update_dataset(symbol="BTCUSDT", interval="1h", days=30, end=END, out=out, source="rest",
                          progress=False)
    before, mtime = out.read_bytes(), out.stat().st_mtime_ns
    # the new run needs the 170 days before the file: pages 0 .. PAGES-1, one at a time
    for k in range(PAGES):
        market.requests.clear()
        held = market.inject("delay", path="klines", delay=HOLD, count=1, after=k)  # page k is held
        proc = _start(out, market, settings_env)
        try:
            _wait(lambda: held.count == 0, f"page {k} was requested", proc)
            answered = [r for r in market.requests_to("/api/v3/klines") if r.status == 200]
            assert len(answered) == k                       # killed with k pages fetched, page k in flight
            _kill(proc)
        finally:
            if proc.poll() is None:
                proc.kill()
            market.faults.clear()
        assert out.read_bytes() == before and out.stat().st_mtime_ns == mtime, f"killed at page {k}"
        assert read_candles(out).equals(read_candles(good.path))

    # killed once every page has been answered: the process is assembling or writing the file (or has
    # just renamed it). The file is the old one byte for byte or the complete new one -- never a mix.
    market.requests.clear()
    proc = _start(out, market, settings_env)
    try:
        _wait(lambda: len([r for r in market.requests_to("/api/v3/klines") if r.status == 200]) >= PAGES,
              "every page was answered", proc)
        if proc.poll() is None:
            _kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    clean = update_dataset(symbol="BTCUSDT", interval="1h", days=200, end=END, out=tmp_path / "clean.parquet",
                           source="rest", progress=False)
    assert out.read_bytes() == before or read_candles(out).equals(read_candles(clean.path))
    # and a run to the end afterwards gives exactly what a clean download gives
    proc = _start(out, market, settings_env)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr.decode()[-2000:]
    pd.testing.assert_frame_equal(read_candles(out), read_candles(clean.path))
