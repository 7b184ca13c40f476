"""The S1/historical.py command as a user runs it: both invocations, one-line errors,
non-zero exits, and the existing file untouched by a failed run."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def _run(args, env, module=False):
    cmd = [sys.executable, "-m", "S1.historical", *args] if module else [sys.executable, "S1/historical.py", *args]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def cli_env(exchange, settings_env, tmp_path):
    env = dict(os.environ)
    env.update(BINANCE_API_URL=exchange.api_url, BINANCE_ARCHIVE_URL=exchange.url,
               DATA_DIR=str(settings_env.data_dir), HTTP_MAX_RETRIES="1",
               TOOLKIT_ENV_FILE=str(tmp_path / "empty.env"))
    return env


def test_script_and_module_forms_write_the_named_file(cli_env, settings_env):
    r1 = _run(["--symbol", "BTCUSDT", "--interval", "1h", "--days", "30", "--end", "2023-04-01"], cli_env)
    assert r1.returncode == 0, r1.stderr
    path = settings_env.data_dir / "btcusdt_1h_30d.parquet"
    assert path.exists() and str(path) in r1.stdout and " candles, 2023-03-02 00:00 .. 2023-03-31 23:00" in r1.stdout
    r2 = _run(["--symbol", "btcusdt", "--interval", "1h", "--days", "30", "--end", "2023-04-01"], cli_env,
              module=True)
    assert r2.returncode == 0 and "+0 new" in r2.stdout


@pytest.mark.parametrize("args, code, needle", [
    (["--symbol", "BTCUSTD"], 2, "did you mean BTCUSDT"),
    (["--symbol", "BTCUSDT", "--interval", "1H"], 2, "did you mean '1h'"),
    (["--symbol", "BTCUSDT", "--days", "0"], 2, "--days must be a positive"),
    (["--symbol", "BTCUSDT", "--days", "-5"], 2, "--days must be a positive"),
    (["--symbol", "BTCUSDT", "--end", "2999-01-01"], 2, "is in the future"),
    (["--symbol", "BTCUSDT", "--end", "yesterday-ish"], 2, "cannot read the date"),
    (["--symbol", "BTC$USDT"], 2, "invalid symbol"),
    (["--symbol", "BTCUSDT", "--source", "ftp"], 2, "invalid choice"),
    (["--days", "3"], 2, "--symbol"),
])
def test_bad_input_gets_one_line_and_keeps_the_file(cli_env, settings_env, args, code, needle):
    good = _run(["--symbol", "BTCUSDT", "--interval", "1h", "--days", "30", "--end", "2023-04-01"], cli_env)
    assert good.returncode == 0
    path = settings_env.data_dir / "btcusdt_1h_30d.parquet"
    before = path.read_bytes()
    full = args if "--days" in args else [*args, "--days", "30"]
    r = _run(full + (["--interval", "1h"] if "--interval" not in args else []), cli_env)
    assert r.returncode == code, (r.stdout, r.stderr)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert path.read_bytes() == before


def test_unreachable_server(cli_env, settings_env):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(cli_env, BINANCE_API_URL=f"http://127.0.0.1:{port}/api")
    r = _run(["--symbol", "BTCUSDT", "--interval", "1h", "--days", "3"], env)
    assert r.returncode == 3
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "cannot reach http://127.0.0.1" in lines[0] and "BINANCE_API_URL" in lines[0]


def test_plan_prints_coverage(cli_env, settings_env):
    _run(["--symbol", "BTCUSDT", "--interval", "1h", "--days", "30", "--end", "2023-04-01"], cli_env)
    r = _run(["--symbol", "BTCUSDT", "--interval", "1h", "--days", "30", "--end", "2023-04-10", "--plan"], cli_env)
    assert r.returncode == 0
    assert " candles covering 2023-03-02 00:00 .. 2023-04-01 00:00" in r.stdout
    assert "missing: 2023-04-01 00:00 .. 2023-04-10 00:00" in r.stdout
