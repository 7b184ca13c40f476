"""Several optimiser workers on one study: a real PostgreSQL server (Debian's package, started here
in a temp dir on a free port) and SQLite, real worker processes, a real kill -9.

What must hold: the study ends with exactly the requested number of finished trials, trial numbers
are unique, every trial saw the same training split, two workers find the same best value as one
worker with the trial-seeded sampler, and a killed worker's running trial is marked FAIL while the
study still reaches its budget.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import optuna
import pytest

from S1.datasets import Dataset, dataset_path, write_parquet
from tests.real_servers import start_postgres, wait_for

RULES = "S4/rules_ta_only.yaml"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def postgres(tmp_path_factory):
    server, why = start_postgres(tmp_path_factory.mktemp("pg"))
    if server is None:
        pytest.skip(why)
    yield server
    server.stop()


@pytest.fixture
def market(settings_env, sim_ta):
    write_parquet(sim_ta, dataset_path(Dataset("ETHUSDC", "1h", 90), "ta"), metadata={"simulated": True})
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO)
    return env


def _args(storage: str, study: str, trials: int, *extra: str) -> list[str]:
    return ["--symbol", "ETHUSDC", "--interval", "1h", "--days", "90", "--rules", RULES, "--trials", str(trials),
            "--min-trades", "3", "--storage", storage, "--study", study, "--no-html", *extra]


def _cli(env, args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "S5.optimize", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=600, **kw)


_STORAGES: dict[str, object] = {}


def _study(storage: str, name: str):
    """The study through one storage object per URL (a new RDBStorage per call would open a new
    connection pool each time and exhaust the server's connections in the polling loops below)."""
    from S5.trial_loop import open_storage

    if storage not in _STORAGES:
        _STORAGES[storage] = open_storage(storage, heartbeat=1)
    return optuna.load_study(study_name=name, storage=_STORAGES[storage])


def _check_budget(study, n: int) -> list:
    trials = study.get_trials(deepcopy=False)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == n, [t.state.name for t in trials]
    numbers = [t.number for t in trials]
    assert len(set(numbers)) == len(numbers) == len(trials)
    assert sorted(numbers) == list(range(len(trials)))
    return finished


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["postgresql", "sqlite"])
def test_two_workers_give_exactly_the_budget_and_the_single_worker_best(backend, market, tmp_path, request):
    if backend == "postgresql":
        storage = request.getfixturevalue("postgres").url
    else:
        storage = f"sqlite:///{tmp_path / 'w.db'}"
    n = 24
    one = _cli(market, _args(storage, f"{backend}-one", n, "--sampler", "random", "--seed", "5"))
    assert one.returncode == 0, one.stderr[-2000:]
    two = _cli(market, _args(storage, f"{backend}-two", n, "--sampler", "random", "--seed", "5", "--workers", "2"))
    assert two.returncode == 0, two.stderr[-2000:]
    assert "2 workers finished" in two.stdout
    s1, s2 = _study(storage, f"{backend}-one"), _study(storage, f"{backend}-two")
    f1, f2 = _check_budget(s1, n), _check_budget(s2, n)
    # the same trials, each evaluated on the same training bars with the same result (value and the
    # train metrics the optimiser records per trial), whichever worker ran it
    by_params_1 = {tuple(sorted(t.params.items())): (t.value, t.user_attrs["train"]) for t in f1}
    by_params_2 = {tuple(sorted(t.params.items())): (t.value, t.user_attrs["train"]) for t in f2}
    assert by_params_1 == by_params_2, "the trial-seeded sampler must evaluate the same trials in both runs"
    assert len(by_params_1) == n
    assert s1.best_value == s2.best_value
    assert s1.user_attrs["fingerprint"] == s2.user_attrs["fingerprint"]


@pytest.mark.slow
def test_a_killed_workers_running_trial_is_failed_and_the_study_continues(postgres, market):
    storage, name, n = postgres.url, "killed", 40
    args = _args(storage, name, n, "--heartbeat", "1")
    for _attempt in range(10):  # kill while a trial of this worker is RUNNING (trials are short: retry)
        proc = subprocess.Popen([sys.executable, "-m", "S5.optimize", *args], cwd=REPO, env=market,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            def running():
                try:
                    s = _study(storage, name)
                except KeyError:
                    return None
                return [t.number for t in s.get_trials(deepcopy=False) if t.state.name == "RUNNING"]

            wait_for(lambda: running() or proc.poll() is not None, timeout=120, what="a running trial")
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
        left = running()
        if left:
            break
    else:
        pytest.fail("never caught the worker inside a trial in 10 attempts")
    (killed,) = left
    done = _cli(market, args)  # a second worker on the same study
    assert done.returncode == 0, done.stderr[-2000:]
    study = _study(storage, name)

    def killed_state():
        optuna.storages.fail_stale_trials(study)  # grace period: 2 x --heartbeat after the last beat
        return study.trials[killed].state.name != "RUNNING" and study.trials[killed].state.name

    assert wait_for(killed_state, timeout=60, what="the killed trial to be failed") == "FAIL"
    _check_budget(study, n)


@pytest.mark.slow
def test_report_only_and_bad_worker_counts(postgres, market):
    name = "report-only"
    empty = _cli(market, _args(postgres.url, name, 5, "--report-only"))
    assert empty.returncode == 2 and "holds no trial yet" in empty.stderr and empty.stderr.count("\n") == 1
    assert _cli(market, _args(postgres.url, name, 6)).returncode == 0
    rep = _cli(market, _args(postgres.url, name, 50, "--report-only"))   # adds no trial, whatever --trials says
    assert rep.returncode == 0, rep.stderr[-2000:]
    assert len(_study(postgres.url, name).trials) == 6
    bad = _cli(market, _args(postgres.url, name, 6, "--workers", "0"))
    assert bad.returncode == 2 and "--workers must be from 1 to 64" in bad.stderr


@pytest.mark.slow
def test_add_trials_and_fresh_with_two_workers_on_sqlite(market, tmp_path):
    storage, name = f"sqlite:///{tmp_path / 'add.db'}", "add"
    assert _cli(market, _args(storage, name, 5)).returncode == 0
    more = _cli(market, _args(storage, name, 5, "--add-trials", "4", "--workers", "2"))
    assert more.returncode == 0, more.stderr[-2000:]
    assert "budget becomes 9 trials" in more.stdout
    _check_budget(_study(storage, name), 9)
    fresh = _cli(market, _args(storage, name, 3, "--fresh", "--workers", "2"))
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    _check_budget(_study(storage, name), 3)


@pytest.mark.parametrize("direction", ["maximize", "minimize"])
def test_the_best_of_tied_trials_is_the_first_on_postgresql_and_sqlite(postgres, tmp_path, direction):
    """Trials that score the same (a parameter that moves no trade) must not let the storage's row
    order pick the best: both storages name the lowest-numbered of the tied best trials."""
    from optuna.distributions import FloatDistribution

    from S5.trial_loop import best_trial, open_storage

    values = [0.5, 2.0, 1.0, 2.0, 2.0, 0.1] if direction == "maximize" else [0.5, -2.0, 1.0, -2.0, -2.0, 3.0]
    dist = {"band": FloatDistribution(0.9, 1.1)}
    picked = {}
    for name, url in (("postgresql", postgres.url), ("sqlite", f"sqlite:///{tmp_path / 'ties.db'}")):
        study = optuna.create_study(study_name=f"ties_{direction}", storage=open_storage(url, heartbeat=None),
                                    direction=direction)
        # three trials tie for the best value: trial 1 is the first of them
        for i, v in enumerate(values):
            study.add_trial(optuna.trial.create_trial(value=v, params={"band": 0.9 + 0.01 * i}, distributions=dist))
        best = best_trial(study)
        picked[name] = (best.number, best.params["band"], best.value)
    assert picked["postgresql"] == picked["sqlite"] == (1, pytest.approx(0.91), values[1])
