"""Hardening of the S1 tools and the chain (issue 22): query results never silently replace
datasets, the local archive serves stable bytes, the streamer leaves no empty database for
a run that never started, the chain checks its arguments before running anything."""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from S1.datasets import Dataset, dataset_path, read_parquet, write_parquet
from S1.errors import UserError

REPO = Path(__file__).resolve().parents[2]


def _env(tmp_path: Path, **extra) -> dict:
    (tmp_path / "empty.env").write_text("")
    env = dict(os.environ, DATA_DIR=str(tmp_path / "data"), REPORTS_DIR=str(tmp_path / "reports"),
               TOOLKIT_ENV_FILE=str(tmp_path / "empty.env"), **extra)
    for k in [k for k in env if k.startswith(("BINANCE_", "OPENAI_"))]:
        if k not in extra:
            env.pop(k)
    return env


def _one_line(r: subprocess.CompletedProcess) -> str:
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, (r.returncode, r.stderr)
    return lines[0]


# ------------------------------------------------------------------ S1/query.py
@pytest.fixture
def lake(tmp_path, btc_1h):
    data = tmp_path / "data"
    path = dataset_path(Dataset("BTCUSDT", "1h", 30), data_dir=data)
    write_parquet(btc_1h.iloc[:100], path, metadata={"symbol": "BTCUSDT", "interval": "1h"})
    return data, path


def _query(tmp_path, *args):
    return subprocess.run([sys.executable, "S1/query.py", "--no-sqlite", *args], cwd=REPO, env=_env(tmp_path),
                          capture_output=True, text=True, timeout=180)


def test_query_out_refuses_to_replace_a_dataset_without_force(tmp_path, lake):
    data, path = lake
    before = path.read_bytes()
    r = _query(tmp_path, "SELECT 1 AS x", "--out", str(path))
    line = _one_line(r)
    assert "would replace an existing file in the data directory" in line and "--force" in line
    assert path.read_bytes() == before
    # a new file, or a file outside the data directory, is written as before
    assert _query(tmp_path, "SELECT 1 AS x", "--out", str(data / "new.parquet")).returncode == 0
    other = tmp_path / "reports" / "r.csv"
    other.parent.mkdir()
    other.write_text("old\n")
    assert _query(tmp_path, "SELECT 1 AS x", "--out", str(other)).returncode == 0 and other.read_text() != "old\n"
    # --force replaces it
    r = _query(tmp_path, "SELECT 1 AS x", "--out", str(path), "--force")
    assert r.returncode == 0, r.stderr
    assert list(read_parquet(path).columns) == ["x"]


@pytest.mark.parametrize("stmt", [
    "COPY (SELECT 1 AS x) TO '{path}' (FORMAT parquet)",
    "copy (select 42 as y) to '{path}'",
    "SELECT 1; COPY (SELECT 2 AS z) TO '{path}' (FORMAT parquet)",
])
def test_copy_to_in_the_query_is_refused_on_a_dataset(tmp_path, lake, stmt):
    data, path = lake
    before = path.read_bytes()
    line = _one_line(_query(tmp_path, stmt.format(path=path)))
    assert "COPY ... TO" in line and str(path) in line
    assert path.read_bytes() == before


def test_check_statements_lets_copy_elsewhere_through(tmp_path, lake):
    import duckdb

    from S1.query import check_statements

    data, path = lake
    con = duckdb.connect()
    check_statements(con, f"COPY (SELECT 1) TO '{tmp_path / 'out.csv'}'", data, force=False)
    check_statements(con, f"COPY (SELECT 1) TO '{path}'", data, force=True)
    with pytest.raises(UserError):
        check_statements(con, f"EXPORT DATABASE '{data / 'dump'}'", data, force=False)


# ------------------------------------------------------------------ local archive zips
def test_archive_zips_have_the_same_bytes_whatever_the_time(monkeypatch, btc_1h):
    import hashlib
    import time as time_mod

    from S1.local.exchange import LocalBinance

    server = LocalBinance()
    server.add_candles("BTCUSDT", "1h", btc_1h)
    real = time_mod.time
    blobs = []
    for shift in (0, 3 * 3600 + 7):                # the server's zips at two different times of day
        monkeypatch.setattr(time_mod, "time", lambda s=shift: real() + s)
        blobs.append(server.archive_bytes("BTCUSDT", "1h", "monthly", "2023-02"))
    monkeypatch.setattr(time_mod, "time", real)
    assert blobs[0] is not None and blobs[0] == blobs[1]
    assert hashlib.sha256(blobs[0]).hexdigest() == hashlib.sha256(blobs[1]).hexdigest()
    with zipfile.ZipFile(__import__("io").BytesIO(blobs[0])) as zf:
        (info,) = zf.infolist()
        assert info.filename == "BTCUSDT-1h-2023-02.csv" and zf.read(info).count(b"\n") == 28 * 24


# ------------------------------------------------------------------ streamer
@pytest.mark.parametrize("case", ["unknown symbol", "unreachable API"])
def test_a_streamer_that_never_starts_leaves_no_empty_database(tmp_path, case):
    from S1.local.exchange import LocalBinance
    from S1.local.simulated import simulate_candles

    with LocalBinance() as server:
        server.add_candles("BTCUSDT", "1m", simulate_candles("BTCUSDT", "1m", "2024-01-01", "2024-01-02"))
        api = server.api_url if case == "unknown symbol" else "http://127.0.0.1:9/api"
        env = _env(tmp_path, BINANCE_API_URL=api, BINANCE_WS_URL=server.url.replace("http", "ws"),
                   HTTP_MAX_RETRIES="0")
        sym = "NOPEUSDT" if case == "unknown symbol" else "BTCUSDT"
        r = subprocess.run([sys.executable, "S1/streamer.py", "--symbol", sym, "--duration", "5",
                            "--max-failures", "1", "--backoff-max", "0.1"], cwd=REPO, env=env,
                           capture_output=True, text=True, timeout=180)
    assert r.returncode != 0, r.stdout
    data = tmp_path / "data"
    left = sorted(p.name for p in data.glob("*realtime.db*")) if data.exists() else []
    assert left == [], (left, r.stderr)


def test_remove_if_empty_keeps_a_database_with_rows(tmp_path):
    import sqlite3

    from S1.stream_store import remove_if_empty

    db = tmp_path / "x.db"
    con = sqlite3.connect(db)
    con.execute("CREATE TABLE kline (t INTEGER)")
    con.commit()
    con.execute("INSERT INTO kline VALUES (1)")
    con.commit()
    con.close()
    assert remove_if_empty(db) is False and db.exists()
    con = sqlite3.connect(db)
    con.execute("DELETE FROM kline")
    con.commit()
    con.close()
    assert remove_if_empty(db) is True and not db.exists()


# ------------------------------------------------------------------ S7/pipeline.py
@pytest.mark.parametrize("args, needle", [
    (["--rules", "no/such/rules.yaml"], "does not exist"),
    (["--skip", "S9"], "argument --skip: invalid choice: 'S9'"),
    (["--skip", "history"], "invalid choice: 'HISTORY'"),
    (["--days", "-1"], "--days must be from 1"),
    (["--days", "100000000"], "--days must be from 1"),
    (["--dry-run-seconds", "0"], "--dry-run-seconds must be from 1"),
    (["--interval", "7m"], "interval"),
])
def test_the_chain_checks_every_argument_before_any_step(tmp_path, args, needle):
    r = subprocess.run([sys.executable, "S7/pipeline.py", "--offline", *args], cwd=REPO,
                       env=_env(tmp_path, BINANCE_API_URL="http://127.0.0.1:9/api"),
                       capture_output=True, text=True, timeout=180)
    line = _one_line(r)
    assert needle in line, line
    assert "==>" not in r.stdout                      # no step ran
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").iterdir())


def test_the_chain_refuses_a_rule_file_that_does_not_parse(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("entry: {col: close, op: '>>', value: 1}\n")
    r = subprocess.run([sys.executable, "S7/pipeline.py", "--offline", "--rules", str(bad)], cwd=REPO,
                       env=_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert str(bad) in _one_line(r) and "==>" not in r.stdout


def test_lookahead_check_rejects_a_negative_tolerance(tmp_path):
    for rtol in ("-1", "nan"):
        r = subprocess.run([sys.executable, "S5/lookahead_check.py", "--symbol", "BTCUSDT", "--interval", "1h",
                            "--days", "30", "--rtol", rtol], cwd=REPO, env=_env(tmp_path),
                           capture_output=True, text=True, timeout=180)
        assert "--rtol" in _one_line(r) and "not a tolerance" in r.stderr
