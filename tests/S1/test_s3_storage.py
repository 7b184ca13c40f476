"""DATA_DIR on S3-compatible storage (issue 20), against moto's S3 server on a free port
(a real S3 REST server in a thread: the toolkit's s3fs client and DuckDB's httpfs speak HTTP to it).

Round trips of every dataset kind the sprints write (candles from the local exchange through
S1/historical.py, ``_ta`` through S2, ``_signals`` through S4, ``_equity``/``_trades``/``_backtest``
through S5, lake partitions through S1.lake_store), a writer killed mid-upload, and DuckDB
(S1/query.py) reading what the toolkit wrote.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("s3fs", reason="s3fs is not installed (pip install -r requirements.txt)")
moto_server = pytest.importorskip("moto.server", reason="moto[server] is not installed (pip install -r requirements.txt)")

from tests.real_servers import free_port, wait_for  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
BUCKET = "toolkit-test"
KEYS = {"S3_ACCESS_KEY_ID": "testing-key", "S3_SECRET_ACCESS_KEY": "testing-secret-xyz", "S3_REGION": "us-east-1"}


@pytest.fixture(scope="module")
def s3_server():
    """moto's S3 server on 127.0.0.1:<free port> with one bucket; yields its endpoint URL."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    import boto3

    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="k",
                 aws_secret_access_key="s").create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


def _point_at(monkeypatch, endpoint: str, data_dir: str, local_state: Path) -> None:
    from S1 import storage
    from S1.settings import get_settings

    monkeypatch.setenv("S3_ENDPOINT_URL", endpoint)
    for k, v in KEYS.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("DATA_DIR", data_dir)
    monkeypatch.setenv("LOCAL_STATE_DIR", str(local_state))
    get_settings.cache_clear()
    storage.clear_cache()


@pytest.fixture
def s3_data(s3_server, settings_env, monkeypatch, tmp_path):
    """DATA_DIR=s3://<bucket>/<fresh prefix>, the S3 settings pointed at the moto server."""
    from S1 import storage
    from S1.settings import get_settings

    url = f"s3://{BUCKET}/run-{uuid.uuid4().hex[:10]}"
    _point_at(monkeypatch, s3_server, url, tmp_path / "local")
    yield storage.as_path(url)
    get_settings.cache_clear()
    storage.clear_cache()


def _keys(prefix) -> list[str]:
    return sorted(k.split("/", 1)[1] for k in prefix.fs.find(prefix.key))


# ------------------------------------------------------------------------- the path object
def test_s3_path_operations(s3_data):
    from S1.datasets import atomic_write_text, data_dir
    from S1.storage import S3Path

    d = data_dir()
    assert isinstance(d, S3Path) and str(d).startswith(f"s3://{BUCKET}/run-")
    p = d / "sub" / "a.json"
    assert not p.exists() and not d.is_dir()
    atomic_write_text(p, '{"x": 1}')
    assert p.exists() and p.is_file() and not p.is_dir() and p.parent.is_dir()
    assert p.read_text() == '{"x": 1}' and p.stat().st_size == 8
    atomic_write_text(d / "b.parquet", "not parquet")
    assert [x.name for x in d.iterdir()] == ["b.parquet", "sub"]
    assert [x.name for x in d.glob("*.parquet")] == ["b.parquet"]
    assert [str(x) for x in d.glob("*/*.json")] == [str(p)]
    assert p.parents[1] == d and p.parts[-3:] == (d.name, "sub", "a.json")
    with pytest.raises(TypeError):
        Path(p)      # no __fspath__: never silently a local path named s3:/...
    p.unlink()
    assert not p.exists()
    p.unlink(missing_ok=True)


def test_missing_bucket_is_one_clear_error(s3_data):
    from S1.datasets import UnwritableError, read_candles, write_parquet
    from S1.offline import simulate_candles
    from S1.storage import as_path

    target = as_path(f"s3://no-such-bucket-{s3_data.name}/btcusdt_1h_2d.parquet")
    with pytest.raises(UnwritableError, match=r"cannot write s3://no-such-bucket-.*S3_ENDPOINT_URL") as err:
        write_parquet(simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-03"), target)
    assert "\n" not in str(err.value)
    with pytest.raises(Exception, match="does not exist"):
        read_candles(s3_data / "btcusdt_1h_2d.parquet")



def test_unreachable_endpoint_is_one_clear_error(s3_data, monkeypatch, tmp_path):
    from S1.datasets import UnwritableError, atomic_write_text, data_dir, read_candles
    from S1.errors import UserError
    from S1.storage import as_path

    dead = f"http://127.0.0.1:{free_port()}"      # nothing listens there
    _point_at(monkeypatch, dead, str(s3_data), tmp_path / "local")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(UnwritableError, match=rf"cannot reach s3://.*a\.json at {dead}.*S3_ENDPOINT_URL") as err:
        atomic_write_text(data_dir() / "a.json", "{}")
    assert "\n" not in str(err.value)
    with pytest.raises(UserError, match=f"cannot reach .* at {dead}"):
        read_candles(as_path(f"{s3_data}/btcusdt_1h_2d.parquet"))


def test_local_state_stays_local(s3_data, tmp_path):
    from S1.datasets import (
        Dataset,
        dataset_path,
        executor_state_path,
        lake_path,
        optuna_storage_url,
        realtime_db_path,
        state_path,
    )
    from S1.settings import get_settings

    local = tmp_path / "local"
    assert realtime_db_path("BTCUSDT", "1m") == local / "btcusdt_1m_realtime.db"
    assert state_path("x") == local / "state" / "x"
    assert executor_state_path("t", "BTCUSDT", "1m").parent == local / "state"
    assert optuna_storage_url() == f"sqlite:///{(local / 'optuna.db').as_posix()}"
    assert str(dataset_path(Dataset("BTCUSDT", "1h", 30))) == f"{s3_data}/btcusdt_1h_30d.parquet"
    assert str(lake_path("binance", "spot", "BTCUSDT", "1m", "2024-01")).startswith(str(s3_data) + "/lake/")
    s = get_settings()
    assert KEYS["S3_SECRET_ACCESS_KEY"] not in repr(s)
    assert s.redact(f"denied for {KEYS['S3_SECRET_ACCESS_KEY']}") == "denied for ***"


def test_local_data_dir_does_not_import_fsspec(tmp_path):
    """The one-machine path is pathlib as before: writing and reading a dataset imports no s3fs/fsspec."""
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from S1.datasets import dataset_path, read_candles, write_parquet, data_dir\n"
        "from S1.offline import simulate_candles\n"
        "df = simulate_candles('BTCUSDT', '1h', '2024-01-01', '2024-01-03')\n"
        "p = write_parquet(df, dataset_path('BTCUSDT', '1h', 2))\n"
        "assert type(p) is type(Path()) and type(data_dir()) is type(Path()), (p, data_dir())\n"
        "assert len(read_candles(p)) == len(df)\n"
        "bad = [m for m in ('s3fs', 'fsspec', 'botocore', 'aiobotocore') if m in sys.modules]\n"
        "assert not bad, bad\n"
        "print('ok')\n")
    env = {**os.environ, "DATA_DIR": str(tmp_path / "data"), "TOOLKIT_ENV_FILE": str(tmp_path / "none.env")}
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# ---------------------------------------------------------------------- dataset round trips
def test_every_sprint_dataset_round_trips(s3_data, exchange, btc_1h, tmp_path, capsys):
    """S1 -> S2 -> S4 -> S5 (backtest, optimise) -> S6 stress with DATA_DIR on S3: each step reads
    the previous one's object and writes its own; only the SQLite study stays local."""
    from S1.datasets import Dataset, dataset_path, read_candles, read_metadata, read_parquet, validate_candles
    from S1.historical import main as history
    from S2.indicators import main as indicators
    from S4.decision import main as decision
    from S5.backtest import main as backtest

    args = ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "30"]
    assert history(args) == 0, capsys.readouterr()
    candles = read_candles(dataset_path(Dataset("BTCUSDT", "1h", 30)))
    assert len(candles) >= 24 * 29
    pd.testing.assert_frame_equal(candles, validate_candles(btc_1h).loc[candles.index], check_freq=False)
    assert read_metadata(dataset_path(Dataset("BTCUSDT", "1h", 30)))["symbol"] == "BTCUSDT"
    assert indicators(args) == 0, capsys.readouterr()
    from S2.ta_io import load_ta

    ta = load_ta(Dataset("BTCUSDT", "1h", 30))
    assert len(ta) == len(candles) and (ta["close"].to_numpy() == candles["close"].to_numpy()).all()
    from S1.datasets import sentiment_path, write_parquet
    from tests.S4.helpers import make_sentiment

    write_parquet(make_sentiment(candles.index), sentiment_path("1h"))     # S3's series, read by S4's rules
    assert decision([*args, "--rules", str(REPO / "S4" / "rules.yaml"), "--no-plot"]) == 0, capsys.readouterr()
    sig = read_parquet(dataset_path(Dataset("BTCUSDT", "1h", 30), "signals"))
    assert len(sig) == len(candles) and {"entry", "exit"} <= set(sig.columns)
    assert backtest([*args, "--risk", str(REPO / "S6" / "risk.yaml")]) == 0, capsys.readouterr()
    names = [k.rsplit("/", 1)[-1] for k in _keys(s3_data)]
    for kind in ("candles", "ta", "signals", "equity", "trades", "backtest"):
        assert dataset_path(Dataset("BTCUSDT", "1h", 30), kind).name in names, (kind, names)
    equity = read_parquet(dataset_path(Dataset("BTCUSDT", "1h", 30), "equity"))
    assert len(equity) > 0
    import json

    summary = json.loads(dataset_path(Dataset("BTCUSDT", "1h", 30), "backtest").read_text())
    assert isinstance(summary, dict) and summary
    from S6.stress import main as stress

    assert stress([*args, "--paths", "200", "--seed", "1"]) == 0, capsys.readouterr()
    assert json.loads(dataset_path(Dataset("BTCUSDT", "1h", 30), "stress").read_text())
    from S5.optimize import main as optimize

    assert optimize([*args, "--rules", str(REPO / "S4" / "rules_ta_only.yaml"), "--trials", "4",
                     "--min-trades", "1"]) == 0, capsys.readouterr()
    import yaml

    from S1.datasets import Dataset, best_rules_path

    best = best_rules_path(Dataset("BTCUSDT", "1h", 30), "rules_ta_only.yaml")
    assert str(best).startswith(str(s3_data)) and isinstance(yaml.safe_load(best.read_text()), dict)
    assert (tmp_path / "local" / "optuna.db").is_file()        # the study's SQLite stays on this machine
    assert not [k for k in _keys(s3_data) if k.endswith((".db", ".sqlite"))]


def test_funding_history_grows_on_s3(s3_data, monkeypatch):
    """S1's incremental funding file on S3: a re-run reads the object, fetches only what is new and
    writes it back whole."""
    from S1.datasets import funding_path, read_parquet
    from S1.funding_history import update_funding
    from S1.intervals import to_ms
    from S1.local.exchange import LocalBinance
    from S1.local.futures import LocalFutures
    from S1.settings import get_settings

    server = LocalBinance(now_ms=to_ms("2023-05-31 12:30"))
    fut = LocalFutures(server)
    fut.sim = fut.funding.simulate("BTCUSDT", "2023-03-01", "2023-07-01")
    with server:
        monkeypatch.setenv("BINANCE_API_URL", server.api_url)
        get_settings.cache_clear()
        first = update_funding("BTCUSDT", 30)
        server.set_now(to_ms("2023-06-03 09:15"))
        again = update_funding("BTCUSDT", 30)
    assert str(again.path) == str(funding_path("BTCUSDT")) and str(again.path).startswith(str(s3_data))
    got = read_parquet(again.path)
    want = fut.sim[(fut.sim.index >= pd.Timestamp("2023-05-01 12:30", tz="UTC"))
                   & (fut.sim.index <= pd.Timestamp("2023-06-03 09:15", tz="UTC"))]
    pd.testing.assert_frame_equal(got, want, check_freq=False)
    assert again.rows == first.rows + 9 == len(got)


def test_exports_on_s3(s3_data, tmp_path):
    """CSV (plain and gzip) and Feather exports beside the dataset in the bucket; SQLite locally."""
    from S1.datasets import Dataset, dataset_path, validate_candles, write_parquet
    from S1.formats import export_dataset, read_export
    from S1.offline import simulate_candles

    df = validate_candles(simulate_candles("BTCUSDT", "1h", "2024-01-01", "2024-01-04"))
    src = write_parquet(df, dataset_path(Dataset("BTCUSDT", "1h", 3)),
                        metadata={"symbol": "BTCUSDT", "interval": "1h", "exchange": "binance"})
    for fmt, gz in (("csv", False), ("csv", True), ("feather", False)):
        out = export_dataset(src, fmt, gzip=gz)
        assert str(out).startswith(str(s3_data)) and out.exists()
        pd.testing.assert_frame_equal(read_export(out), df, check_freq=False)
    db = export_dataset(src, "sqlite")
    assert db == tmp_path / "local" / "btcusdt_1h_3d.sqlite"
    pd.testing.assert_frame_equal(read_export(db), df, check_freq=False)


def test_lake_round_trip_matches_local(s3_data, tmp_path):
    from S1.datasets import data_dir
    from S1.lake_store import derive_lake, describe, markets, read_lake, write_partition
    from S1.offline import simulate_candles

    df = simulate_candles("BTCUSDT", "1m", "2024-01-01", "2024-02-03")
    local = tmp_path / "localdata"
    for d in (s3_data, local):
        for month, part in df.groupby(df.index.strftime("%Y-%m")):
            write_partition(part, exchange="binance", market="spot", symbol="BTCUSDT", month=month, data_dir=d)
        derive_lake(symbol="BTCUSDT", targets=["1h", "1d"], data_dir=d)
    assert markets() == [("binance", "spot", "BTCUSDT")] == markets(local)
    assert describe() == describe(local)
    for iv in ("1m", "1h", "1d"):
        pd.testing.assert_frame_equal(read_lake("BTCUSDT", iv), read_lake("BTCUSDT", iv, data_dir=local))
    lake = data_dir() / "lake" / "binance" / "spot" / "BTCUSDT"
    for iv in ("1m", "1h", "1d"):
        for month in ("2024-01", "2024-02"):
            assert (lake / iv / f"{month}.parquet").read_bytes() == \
                (local / "lake/binance/spot/BTCUSDT" / iv / f"{month}.parquet").read_bytes()
    before = {k: s3_data.fs.info(k)["ETag"] for k in s3_data.fs.find(s3_data.key)}
    assert derive_lake(symbol="BTCUSDT", targets=["1h", "1d"]) == []    # idempotent: nothing rewritten
    assert {k: s3_data.fs.info(k)["ETag"] for k in s3_data.fs.find(s3_data.key)} == before


# ------------------------------------------------------------------------------ DuckDB
def test_duckdb_reads_what_the_toolkit_wrote(s3_data, capsys):
    from S1.datasets import Dataset, dataset_path, sentiment_path, write_parquet
    from S1.errors import UserError
    from S1.lake import connect, query, scan
    from S1.lake_store import write_partition
    from S1.offline import simulate_candles
    from S1.query import main as query_main

    h = simulate_candles("ETHUSDT", "1h", "2024-01-01", "2024-01-11")
    write_parquet(h, dataset_path(Dataset("ETHUSDT", "1h", 10)), metadata={"symbol": "ETHUSDT", "simulated": True})
    write_parquet(pd.DataFrame({"sentiment_score": [0.1, -0.2]},
                               index=pd.DatetimeIndex(h.index[:2], name="open_time")), sentiment_path("1h"))
    m = simulate_candles("BTCUSDT", "1m", "2024-03-01", "2024-03-02")
    write_partition(m, exchange="binance", market="spot", symbol="BTCUSDT", month="2024-03")
    assert {e.name for e in scan()} == {"ethusdt_1h_10d", "sentiment_1h"}
    got = query("SELECT symbol, count(*) AS n, sum(close) AS s FROM candles GROUP BY symbol")
    assert got["symbol"].tolist() == ["ETHUSDT"] and int(got["n"][0]) == len(h)
    assert float(got["s"][0]) == pytest.approx(float(h["close"].sum()))
    lake = query("SELECT exchange, market, symbol, interval, month, count(*) AS n, max(high) AS hi "
                 "FROM lake GROUP BY ALL")
    assert lake.iloc[0][["exchange", "market", "symbol", "interval", "month"]].tolist() == \
        ["binance", "spot", "BTCUSDT", "1m", "2024-03"]
    assert int(lake["n"][0]) == len(m) and float(lake["hi"][0]) == pytest.approx(float(m["high"].max()))
    con = connect()
    try:
        ds = con.sql("SELECT name, rows, simulated, path FROM datasets ORDER BY name").fetchall()
    finally:
        con.close()
    assert ds[0][:3] == ("ethusdt_1h_10d", len(h), True) and ds[0][3].startswith("s3://")
    assert query_main(["SELECT count(*) AS n FROM sentiment_1h"]) == 0
    assert "2" in capsys.readouterr().out
    assert query_main(["--data-dir", str(s3_data), "--no-sqlite", "--tables"]) == 0
    listed = capsys.readouterr().out
    assert "ethusdt_1h_10d" in listed and "sentiment_1h" in listed and "lake" in listed
    with pytest.raises(UserError, match="results are written to this machine only"):
        query_main(["SELECT 1", "--out", f"{s3_data}/r.parquet"])
    with pytest.raises(UserError, match="would replace"):
        query_main([f"COPY (SELECT 1) TO '{dataset_path(Dataset('ETHUSDT', '1h', 10))}' (FORMAT parquet)"])


# ----------------------------------------------------------------- a killed writer
class HoldingProxy:
    """A TCP proxy in front of the S3 server that forwards a request until ``hold_after`` bytes of
    it have passed, then holds it (reads no more) and sets :attr:`holding` -- a writer caught
    mid-upload. :meth:`close` then drops both ends (the server sees a truncated body)."""

    def __init__(self, target_port: int, hold_after: int):
        self.target_port, self.hold_after = target_port, hold_after
        self.holding = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            self.conns += [client, upstream]
            threading.Thread(target=self._pipe, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, False), daemon=True).start()

    def _pipe(self, src, dst, up: bool):
        seen = 0
        while True:
            try:
                data = src.recv(65536)
            except OSError:
                return
            if not data:
                return
            if up and seen + len(data) > self.hold_after and len(data) > 1000:
                dst.sendall(data[: max(0, self.hold_after - seen)])
                self.holding.set()
                return            # holds: the rest of the body is never read nor forwarded
            seen += len(data)
            try:
                dst.sendall(data)
            except OSError:
                return

    def close(self):
        self.sock.close()
        for c in self.conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            c.close()


def test_killed_writer_leaves_the_previous_object(s3_data, s3_server, tmp_path):
    from S1.datasets import Dataset, dataset_path, read_candles, validate_candles, write_parquet
    from S1.offline import simulate_candles

    path = dataset_path(Dataset("BTCUSDT", "1m", 60))
    old = simulate_candles("BTCUSDT", "1m", "2024-01-01", "2024-01-02")
    write_parquet(old, path)
    before = _keys(s3_data)
    proxy = HoldingProxy(int(s3_server.rsplit(":", 1)[1]), hold_after=256 * 1024)
    code = (
        "from S1.datasets import dataset_path, write_parquet\n"
        "from S1.offline import simulate_candles\n"
        "df = simulate_candles('BTCUSDT', '1m', '2024-01-01', '2024-03-01')\n"
        "print('writing', flush=True)\n"
        "write_parquet(df, dataset_path('BTCUSDT', '1m', 60))\n"
        "print('done', flush=True)\n")
    env = {**os.environ, "S3_ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}", "HTTP_TIMEOUT": "600"}
    writer = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: proxy.holding.is_set() or writer.poll() is not None, timeout=120,
                 what="the writer's upload to reach the proxy")
        assert proxy.holding.is_set(), writer.communicate()
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
        proxy.close()
    out = writer.stdout.read()
    assert writer.returncode == -signal.SIGKILL and "writing" in out and "done" not in out
    # the server has dropped the truncated request: the previous object is intact and alone
    wait_for(lambda: _keys(s3_data) == before, timeout=60, what="the object listing to settle")
    pd.testing.assert_frame_equal(read_candles(path), validate_candles(old))
    uploads = s3_data.fs.call_s3("list_multipart_uploads", Bucket=BUCKET).get("Uploads", [])
    assert not [u for u in uploads if u["Key"].endswith(path.name)]
