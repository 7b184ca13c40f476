"""Hardening of the data files (issue 22): corrupt / truncated / empty Parquet inputs and a
read-only data folder get one line naming the file or folder and the fix (the command that
writes the file again), and temp files of killed writers are cleaned on the next write."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from S1.datasets import (
    Dataset,
    UnwritableError,
    check_writable,
    dataset_path,
    optuna_storage_url,
    read_candles,
    read_metadata,
    read_parquet,
    regenerate_command,
    write_parquet,
)
from S1.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def _damage(path: Path, how: str) -> None:
    data = path.read_bytes()
    path.write_bytes({"empty": b"", "truncated": data[: len(data) // 2], "garbage": b"PAR1 not parquet" * 20,
                      "no-footer": data[:-8]}[how])


@contextlib.contextmanager
def read_only(folder: Path):
    """``folder`` made unwritable for this process, root included (``chattr +i`` when
    permission bits do not stop us); skips when neither works here."""
    mode = folder.stat().st_mode
    folder.chmod(0o555)
    immutable = False
    try:
        try:
            with open(folder / ".probe", "w"):
                pass
            (folder / ".probe").unlink()
            writable = True
        except OSError:
            writable = False
        if writable:
            if not shutil.which("chattr") or subprocess.run(["chattr", "+i", str(folder)],
                                                            capture_output=True).returncode:
                pytest.skip("cannot make a folder read-only here (root without chattr)")
            immutable = True
        yield folder
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
        folder.chmod(mode)


def _cli(script: str, args: list[str], data_dir: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, DATA_DIR=str(data_dir), REPORTS_DIR=str(tmp_path / "reports"),
               TOOLKIT_ENV_FILE=str(tmp_path / "empty.env"), BINANCE_API_URL="http://127.0.0.1:9/api",
               HTTP_MAX_RETRIES="0")
    (tmp_path / "empty.env").write_text("")
    return subprocess.run([sys.executable, script, *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=180)


def _one_line(r: subprocess.CompletedProcess) -> str:
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
    return lines[0]


# ------------------------------------------------------------------ corrupt inputs
@pytest.mark.parametrize("how", ["empty", "truncated", "garbage", "no-footer"])
@pytest.mark.parametrize("reader", [read_parquet, read_metadata, read_candles])
def test_a_damaged_parquet_names_the_file_and_the_command(tmp_path, btc_1h, how, reader):
    path = tmp_path / "btcusdt_1h_30d.parquet"
    write_parquet(btc_1h.iloc[:200], path, metadata={"symbol": "BTCUSDT"})
    _damage(path, how)
    with pytest.raises(UserError) as ei:
        reader(path)
    e = ei.value
    assert str(path) in e.problem and ("empty (0 bytes)" if how == "empty" else "corrupt or truncated") in e.problem
    assert "python S1/historical.py --symbol BTCUSDT --interval 1h --days 30" in e.fix
    assert "Arrow" not in str(e) and "PAR1" not in str(e)


def test_a_sound_file_read_wrongly_is_not_called_corrupt(tmp_path, btc_1h):
    path = tmp_path / "btcusdt_1h_30d.parquet"
    write_parquet(btc_1h.iloc[:10], path)
    with pytest.raises(Exception) as ei:
        read_parquet(path, columns=["no_such_column"])
    assert not isinstance(ei.value, UserError)


@pytest.mark.parametrize("name, command", [
    ("ethusdc_1h_365d_ta.parquet", "python S2/indicators.py --symbol ETHUSDC --interval 1h --days 365"),
    ("ethusdc_1h_365d_signals.parquet", "python S4/decision.py --symbol ETHUSDC --interval 1h --days 365"),
    ("okx_btcusdt_1h_30d.parquet", "python S1/historical.py --exchange okx --symbol BTCUSDT --interval 1h"),
    ("sentiment_1h.parquet", "python S3/sentiment.py --interval 1h"),
    ("notes.parquet", None),
])
def test_the_regenerating_command_follows_the_file_name(name, command):
    got = regenerate_command(Path(name))
    assert (got is None) if command is None else got.startswith(command)


@pytest.mark.parametrize("script, args, damaged", [
    ("S2/indicators.py", ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "30"], "btcusdt_1h_30d.parquet"),
    ("S1/historical.py", ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "30"], "btcusdt_1h_30d.parquet"),
    ("S5/backtest.py", ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "30"],
     "btcusdt_1h_30d__rules_signals.parquet"),
])
def test_scripts_on_a_damaged_input_exit_2_with_one_line(tmp_path, btc_1h, script, args, damaged):
    data = tmp_path / "data"
    data.mkdir()
    path = data / damaged
    write_parquet(btc_1h.iloc[:300], path, metadata={"symbol": "BTCUSDT", "interval": "1h"})
    path.write_bytes(b"")
    line = _one_line(_cli(script, args, data, tmp_path))
    assert str(path) in line and "empty (0 bytes)" in line and "regenerate it" in line, line
    assert path.read_bytes() == b""        # left for the user to look at


# ------------------------------------------------------------------ read-only data folder
def test_the_atomic_writer_names_an_unwritable_folder(tmp_path, btc_1h):
    folder = tmp_path / "ro"
    folder.mkdir()
    path = folder / "btcusdt_1h_30d.parquet"
    write_parquet(btc_1h.iloc[:10], path)
    before = path.read_bytes()
    with read_only(folder):
        with pytest.raises(UnwritableError) as ei:
            write_parquet(btc_1h.iloc[:20], path)
        assert f"in {folder}" in ei.value.problem and "writable" in ei.value.fix
        assert isinstance(ei.value, OSError)
        with pytest.raises(UserError, match="optuna.db"):
            optuna_storage_url(data_dir=folder)
        with pytest.raises(UserError, match=str(folder)):
            check_writable(folder)
    assert path.read_bytes() == before


@pytest.mark.parametrize("script, args", [
    ("S2/indicators.py", ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "30"]),
    ("S5/optimize.py", ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "30", "--rules", "S4/rules.yaml",
                        "--report-only"]),
])
def test_scripts_on_a_read_only_data_dir_name_the_folder(tmp_path, btc_1h, script, args):
    data = tmp_path / "data"
    data.mkdir()
    write_parquet(btc_1h.iloc[:300], dataset_path(Dataset("BTCUSDT", "1h", 30), data_dir=data),
                  metadata={"symbol": "BTCUSDT", "interval": "1h"})
    with read_only(data):
        line = _one_line(_cli(script, args, data, tmp_path))
    assert str(data) in line and "writable" in line, line
    assert "sqlite" not in line and "URL" not in line


# ------------------------------------------------------------------ stale temp files
_WRITER = """
import sys, time
from pathlib import Path
import pyarrow.parquet as pq
from S1.datasets import write_parquet, empty_candles
marker = Path(sys.argv[2])
def slow(table, where, **kw):
    Path(where).write_bytes(b"PAR1 half a file")
    marker.write_text("writing")
    time.sleep(3600)
pq.write_table = slow
write_parquet(empty_candles(), Path(sys.argv[1]))
"""


def _writer(path: Path, marker: Path) -> subprocess.Popen:
    p = subprocess.Popen([sys.executable, "-c", _WRITER, str(path), str(marker)], cwd=REPO,
                         env=dict(os.environ, PYTHONPATH=str(REPO)))
    t_end = time.monotonic() + 120
    while not marker.exists():
        assert p.poll() is None, "the writer exited early"
        assert time.monotonic() < t_end, "the writer never started writing"
        time.sleep(0.02)
    return p


def test_temp_files_of_killed_writers_are_cleaned_on_the_next_write(tmp_path, btc_1h):
    path = tmp_path / "btcusdt_1h_30d.parquet"
    other = tmp_path / "ethusdc_1h_30d.parquet"
    temps = lambda p: set(tmp_path.glob(f".{p.name}.*.tmp"))  # noqa: E731
    for target, marker in ((path, "m1"), (other, "m2")):     # killed -9 in the middle of writing
        w = _writer(target, tmp_path / marker)
        os.kill(w.pid, signal.SIGKILL)
        w.wait(60)
    stale, other_stale = temps(path), temps(other)
    assert len(stale) == 1 and len(other_stale) == 1
    live = _writer(path, tmp_path / "m3")          # the next writer of the same dataset cleans it
    try:
        mine = temps(path)
        assert len(mine) == 1 and not (mine & stale)
        write_parquet(btc_1h.iloc[:10], path)      # while that writer still works: its temp is kept
        assert temps(path) == mine
        assert temps(other) == other_stale          # another dataset's: not touched
        assert len(read_parquet(path)) == 10
    finally:
        live.kill()
        live.wait(60)
    write_parquet(btc_1h.iloc[:5], path)
    assert temps(path) == set() and len(read_parquet(path)) == 5
