"""Walk-forward folds spread over workers (issue 20): ``--workers N`` (local processes) and
``--scheduler tcp://...`` (a real Dask cluster) give exactly the sequential run's folds table,
stitched equity and chosen params; the files are written once, by the command's own process."""

from __future__ import annotations

import json
import os

import pandas as pd
import pytest

from S1.cli import run
from S1.datasets import Dataset, dataset_path, read_parquet, write_parquet
from S1.errors import UserError
from S4.rules import load_rules
from S5.optimizer import OptimizeConfig
from S5.walkforward_search import WalkForwardConfig, walk_forward

RULES = "S4/rules_ta_only.yaml"
CFG = OptimizeConfig(n_trials=5, min_trades=2, seed=7)
WF = WalkForwardConfig(n_folds=3, test="200", mode="anchored", gap=2)
BASE = ["--symbol", "BTCUSDT", "--interval", "1h", "--days", "100", "--rules", RULES]


@pytest.fixture(scope="module")
def ta(btc_1h):
    from S2.ta import add_indicators

    return add_indicators(btc_1h).iloc[:1800]


@pytest.fixture(scope="module")
def sequential(ta):
    return walk_forward(ta, load_rules(RULES), interval="1h", config=CFG, wf=WF, progress=False)


def _same(a, b) -> None:
    """Exactly equal: params, objective values, trial counts, the folds table and both stitched curves."""
    assert [f.best_params for f in a.folds] == [f.best_params for f in b.folds]
    assert [f.best_value for f in a.folds] == [f.best_value for f in b.folds]
    assert [f.counts for f in a.folds] == [f.counts for f in b.folds]
    pd.testing.assert_frame_equal(a.fold_table(), b.fold_table(), check_exact=True)
    pd.testing.assert_series_equal(a.stitched.equity, b.stitched.equity, check_exact=True)
    pd.testing.assert_series_equal(a.default_stitched.equity, b.default_stitched.equity, check_exact=True)
    pd.testing.assert_frame_equal(a.stitched.trades, b.stitched.trades, check_exact=True)
    assert a.stability.drop(columns=["values"]).equals(b.stability.drop(columns=["values"]))


def test_local_processes_equal_the_sequential_run(ta, sequential, tmp_path):
    par = walk_forward(ta, load_rules(RULES), interval="1h", config=CFG, wf=WF, progress=False, workers=2)
    _same(sequential, par)
    # with a stored study per fold (one SQLite file shared by the processes): the same again
    url = f"sqlite:///{tmp_path / 'wf.db'}"
    stored = walk_forward(ta, load_rules(RULES), interval="1h", config=CFG, wf=WF, progress=False, workers=3,
                          storage=url, study_name="par")
    _same(sequential, stored)
    import optuna

    names = sorted(s.study_name for s in optuna.get_all_study_summaries(url))
    assert names == ["par_fold1of3", "par_fold2of3", "par_fold3of3"]
    assert [len(optuna.load_study(study_name=n, storage=url).trials) for n in names] == [5, 5, 5]


def test_a_failing_fold_is_named_as_in_the_sequential_run(ta):
    cfg = OptimizeConfig(n_trials=2, min_trades=100_000)
    with pytest.raises(UserError) as seq:
        walk_forward(ta, load_rules(RULES), interval="1h", config=cfg, wf=WalkForwardConfig(n_folds=2),
                     progress=False)
    with pytest.raises(UserError) as par:
        walk_forward(ta, load_rules(RULES), interval="1h", config=cfg, wf=WalkForwardConfig(n_folds=2),
                     progress=False, workers=2)
    assert str(par.value) == str(seq.value) and "fold 1/2 (train" in str(par.value)


@pytest.fixture
def market(settings_env, ta):
    write_parquet(ta, dataset_path(Dataset("BTCUSDT", "1h", 100), "ta"), metadata={"simulated": True})
    return settings_env


def _cli(argv) -> int:
    from S5.optimize import main

    return run(main, argv)


def _outputs(reports) -> dict:
    """The walk-forward's files in ``reports``: JSON (without the write time / study storage), folds, equity."""
    files = {p.name: p for p in reports.iterdir()}
    assert not [n for n in files if ".tmp" in n], files
    js = [p for n, p in files.items() if "walkforward" in n and n.endswith(".json")]
    folds = [p for n, p in files.items() if n.endswith("_folds.parquet")]
    equity = [p for n, p in files.items() if n.endswith("_equity.parquet")]
    assert len(js) == len(folds) == len(equity) == 1, sorted(files)
    doc = json.loads(js[0].read_text())
    for volatile in ("created_at", "storage"):
        doc.pop(volatile)
    return {"json": doc, "folds": read_parquet(folds[0]), "equity": read_parquet(equity[0])}


def _run_in(market, monkeypatch, tmp_path, name, extra) -> dict:
    from S1.settings import get_settings

    reports = tmp_path / f"reports-{name}"
    monkeypatch.setenv("REPORTS_DIR", str(reports))
    get_settings.cache_clear()
    argv = [*BASE, "--walk-forward", "3", "--wf-test", "200", "--wf-mode", "anchored", "--wf-gap", "2",
            "--trials", "5", "--min-trades", "2", "--seed", "7", "--no-report",
            "--storage", f"sqlite:///{tmp_path / (name + '.db')}", *extra]
    assert _cli(argv) == 0
    return _outputs(reports)


def _same_files(a: dict, b: dict) -> None:
    assert a["json"] == b["json"]
    pd.testing.assert_frame_equal(a["folds"], b["folds"], check_exact=True)
    pd.testing.assert_frame_equal(a["equity"], b["equity"], check_exact=True)


def test_cli_workers_write_the_sequential_files_once(market, monkeypatch, tmp_path):
    import S1.datasets

    writes: list[str] = []
    for fn, at in (("write_parquet", 1), ("atomic_write_text", 0)):     # the target path's position
        real = getattr(S1.datasets, fn)

        def counted(*a, _real=real, _at=at, **kw):
            writes.append(str(a[_at]))
            return _real(*a, **kw)

        monkeypatch.setattr(S1.datasets, fn, counted)
    seq = _run_in(market, monkeypatch, tmp_path, "seq", [])
    par = _run_in(market, monkeypatch, tmp_path, "par", ["--workers", "2"])
    _same_files(seq, par)
    for name in ("seq", "par"):     # the JSON and the two Parquet files, each written once, by this process
        mine = [w for w in writes if f"reports-{name}" in w]
        assert len(mine) == len(set(mine)) == 3, writes
    assert par["json"]["folds"][0]["study_name"].endswith("_fold1of3")


@pytest.mark.parametrize("extra,needle", [
    (["--walk-forward", "3", "--workers", "0"], "--workers must be a whole number from 1 to 256"),
    (["--walk-forward", "3", "--scheduler", "localhost:8786"], "is not a Dask scheduler address"),
    (["--walk-forward", "3", "--workers", "2", "--scheduler", "tcp://127.0.0.1:9"], "exclude each other"),
    (["--scheduler", "tcp://127.0.0.1:9"], "--scheduler spreads walk-forward folds"),
])
def test_bad_fan_out_options_are_one_line(market, capsys, extra, needle):
    assert _cli([*BASE, "--trials", "2", *extra]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1, err


@pytest.mark.slow
def test_a_dask_cluster_equals_the_sequential_run(market, monkeypatch, tmp_path):
    distributed = pytest.importorskip("distributed")
    seq = _run_in(market, monkeypatch, tmp_path, "seq", [])
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                                  host="127.0.0.1") as cluster:
        got = _run_in(market, monkeypatch, tmp_path, "dask", ["--scheduler", cluster.scheduler_address])
        with distributed.Client(cluster) as client:
            pids = client.run(os.getpid)
    _same_files(seq, got)
    assert len(pids) == 2 and os.getpid() not in pids.values()
