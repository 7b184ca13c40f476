"""Fan-out of the batch runner: local processes and a real Dask cluster give the files a plain
sequential run gives (same candles, same metadata but for the write time), each written once."""

from __future__ import annotations

import pytest

from S1.batch import main
from S1.datasets import Dataset, dataset_path, read_candles, read_metadata
from S1.errors import UserError
from S1.fanout import check_scheduler, fan_out

DATASETS = [("BTCUSDT", iv, days) for iv in ("1h", "4h") for days in (20, 10, 15)]


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "batch.yaml"
    path.write_text("""
defaults: {source: rest, end: "2023-05-01"}
jobs:
  - symbols: [BTCUSDT]
    intervals: [1h]
    days: [20, 10, 15]
""")
    return path


def _snapshot(data_dir) -> dict:
    out = {}
    for sym, iv, days in DATASETS:
        path = dataset_path(Dataset(sym, iv, days))
        assert path.parent == data_dir
        meta = {k: v for k, v in read_metadata(path).items() if k not in ("updated_at", "written_at")}
        out[(sym, iv, days)] = (read_candles(path), meta)
    leftovers = [p.name for p in data_dir.iterdir() if ".tmp" in p.name]
    assert leftovers == []
    return out


def _run_in(tmp_path, name, monkeypatch, argv):
    from S1.settings import get_settings

    data = tmp_path / name
    monkeypatch.setenv("DATA_DIR", str(data))
    get_settings.cache_clear()
    assert main(argv) == 0
    return _snapshot(data)


def _same(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k][0].equals(b[k][0]), k
        assert a[k][1] == b[k][1], k


def test_local_processes_equal_the_sequential_run(exchange, config, tmp_path, monkeypatch):
    seq = _run_in(tmp_path, "seq", monkeypatch, ["--config", str(config), "--derive", "4h"])
    par = _run_in(tmp_path, "par", monkeypatch, ["--config", str(config), "--derive", "4h", "--workers", "2"])
    _same(seq, par)
    assert all(len(df) for df, _ in seq.values())


@pytest.mark.slow
def test_a_dask_cluster_equals_the_sequential_run(exchange, config, tmp_path, monkeypatch):
    distributed = pytest.importorskip("distributed")
    seq = _run_in(tmp_path, "seq", monkeypatch, ["--config", str(config), "--derive", "4h"])
    monkeypatch.setenv("DATA_DIR", str(tmp_path / "dask"))  # the workers inherit the environment
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster:
        got = _run_in(tmp_path, "dask", monkeypatch, ["--config", str(config), "--derive", "4h",
                                                       "--scheduler", cluster.scheduler_address])
        with distributed.Client(cluster) as client:
            ran_on = client.run(lambda: __import__("os").getpid())
    _same(seq, got)
    assert len(ran_on) == 2


def test_results_keep_the_order_of_the_items():
    items = list(range(-20, 0))
    assert fan_out(abs, items, workers=3) == [abs(x) for x in items]


def test_bad_scheduler_and_worker_counts_are_one_clear_error(config, capsys):
    with pytest.raises(UserError, match="not a Dask scheduler address"):
        check_scheduler("localhost:8786", 1)
    with pytest.raises(UserError, match="exclude each other"):
        check_scheduler("tcp://127.0.0.1:8786", 2)
    with pytest.raises(UserError, match="--workers must be"):
        check_scheduler(None, 0)
    from S1.cli import run

    assert run(main, ["--config", str(config), "--scheduler", "tcp://127.0.0.1:9"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach the Dask scheduler" in err and err.count("\n") == 1
