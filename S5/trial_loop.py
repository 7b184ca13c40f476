"""Running one Optuna study from many workers: an exact trial budget, heartbeats, local worker processes.

Optuna's own ``study.optimize(..., callbacks=[MaxTrialsCallback(n)])`` lets several workers share a
study, but each worker checks the count only after its trial, so two workers can overshoot ``n``.
Here a worker *claims* each trial under a lock that every worker of the study takes (a PostgreSQL
advisory lock, so it holds across machines; an ``flock`` beside a SQLite file; a thread lock in
memory): inside the lock it fails stale trials, counts the trials that are finished or still running,
and asks for a new one only while that count is below the budget. So the study ends with exactly
``n`` finished (complete + pruned) trials whatever the number of workers, trial numbers are unique
(Optuna numbers them in the storage), and a killed worker's running trial stops sending heartbeats,
is marked FAIL by the next claim after the grace period, and its place in the budget is taken again.

Samplers: ``tpe`` (default; seeded, but several workers interleave their history, so a parallel run
is not repeatable) and ``random``, where every parameter of trial ``k`` is drawn from a generator
seeded with ``(seed, k, name)``: the same trials whatever the number of workers, so one worker and
two workers find the same best value.

>>> import optuna
>>> optuna.logging.set_verbosity(optuna.logging.WARNING)
>>> s1 = optuna.create_study(sampler=TrialSeededSampler(7))
>>> s2 = optuna.create_study(sampler=TrialSeededSampler(7))
>>> f = lambda t: t.suggest_float("x", -1, 1)
>>> n = run_trials(s1, f, 5, lock=trial_lock(None, "a"), progress=False)
>>> _ = [run_trials(s2, f, k, lock=trial_lock(None, "b"), progress=False) for k in (2, 5)]  # resumed
>>> [t.params for t in s1.trials] == [t.params for t in s2.trials], n, len(s1.trials)
(True, 5, 5)
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import logging
import os
import subprocess
import sys
import threading
import warnings
import zlib
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import optuna

log = logging.getLogger(__name__)

SAMPLERS = ("tpe", "random")
#: seconds between a running trial's heartbeats (``--heartbeat``); a trial silent for twice that is stale
DEFAULT_HEARTBEAT = 30


def make_sampler(kind: str, seed: int, *, offset: int = 0):
    """The Optuna sampler for ``--sampler kind``. ``offset`` shifts TPE's seed (finished trials, worker
    index) so a resumed study or a second worker does not replay the same draws."""
    if kind == "tpe":
        return optuna.samplers.TPESampler(seed=seed + offset, multivariate=True)
    if kind == "random":
        return TrialSeededSampler(seed)
    from S1.errors import UserError

    raise UserError(f"unknown sampler {kind!r}", f"use one of {', '.join(SAMPLERS)}")


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """Random search where trial ``k``'s parameters depend only on ``(seed, k, name)``."""

    def __init__(self, seed: int):
        self.seed = int(seed)

    def infer_relative_search_space(self, study, trial):
        return {}

    def sample_relative(self, study, trial, search_space):
        return {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        key = zlib.crc32(f"{self.seed}:{trial.number}:{param_name}".encode())
        return optuna.samplers.RandomSampler(seed=key).sample_independent(study, trial, param_name,
                                                                          param_distribution)

    def reseed_rng(self) -> None:  # draws depend on the trial, not on a generator's state
        pass


# --------------------------------------------------------------------------- storage
def open_storage(url: str | None, *, heartbeat: int | None = DEFAULT_HEARTBEAT):
    """An Optuna storage for ``url`` (None: in memory). RDB URLs get heartbeats (a killed worker's
    trial becomes FAIL after ``2 * heartbeat`` s). SQLite files also get WAL journaling with
    ``synchronous=NORMAL``: commits stop waiting for the disk (3x faster trials here); a crash of the
    program loses nothing, a power cut at most the last trials."""
    if url is None:
        return None
    import optuna

    if not url.startswith(("sqlite", "postgresql", "mysql")):
        return url  # journal storages etc.: Optuna's defaults
    kw = {"heartbeat_interval": heartbeat, "grace_period": 2 * heartbeat} if heartbeat else {}
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 4 (stable since 2.9 in practice)
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs, **kw)
    if url.startswith("sqlite"):
        from sqlalchemy import event

        @event.listens_for(storage.engine, "connect")
        def _pragmas(dbapi_conn, _record):  # pragma: no cover - exercised through the storage
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        storage.engine.dispose()
    return storage


@contextlib.contextmanager
def _flock(path: Path) -> Iterator[None]:
    with open(path, "a+b") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class _PgLock:
    """A PostgreSQL session advisory lock keyed by the study name (held across machines)."""

    def __init__(self, url: str, name: str):
        from sqlalchemy import create_engine

        self.key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        self.engine = create_engine(url, pool_size=1, max_overflow=0, pool_pre_ping=True)

    @contextlib.contextmanager
    def __call__(self) -> Iterator[None]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            conn.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
            try:
                yield
            finally:
                conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
                conn.commit()


def trial_lock(url: str | None, study_name: str) -> Callable[[], contextlib.AbstractContextManager]:
    """The lock every worker of ``study_name`` takes to claim a trial (see the module docstring)."""
    if url is None or not isinstance(url, str):
        lock = threading.Lock()
        return lambda: lock
    if url.startswith("postgresql"):
        return _PgLock(url, study_name)
    if url.startswith("sqlite:///"):
        db = Path(url[len("sqlite:///"):])
        safe = hashlib.sha256(study_name.encode()).hexdigest()[:12]
        path = db.with_name(f"{db.name}.{safe}.lock")
        return lambda: _flock(path)
    log.warning("no cross-worker trial lock for %s: several workers may overshoot the trial budget",
                url.split(":")[0])
    return contextlib.nullcontext


def _active_trials(study) -> int:
    """Trials that count against the budget: finished (complete, pruned) or still running/waiting."""
    import optuna

    S = optuna.trial.TrialState
    states = (S.COMPLETE, S.PRUNED, S.RUNNING, S.WAITING)
    storage = study._storage
    engine = getattr(getattr(storage, "_backend", storage), "engine", None)
    if engine is not None:  # one COUNT(*) instead of loading every trial
        try:
            from sqlalchemy import text

            with engine.connect() as conn:
                return int(conn.execute(
                    text("SELECT COUNT(*) FROM trials WHERE study_id = :s AND state IN "
                         "('COMPLETE', 'PRUNED', 'RUNNING', 'WAITING')"),
                    {"s": study._study_id}).scalar())
        except Exception as exc:  # noqa: BLE001 - a future schema: fall back to Optuna's API
            log.debug("COUNT(*) on the trials table failed (%s); counting through Optuna", exc)
    return len(study.get_trials(deepcopy=False, states=states))


def _fail_stale(study) -> None:
    """Mark RUNNING trials whose heartbeat is older than the grace period as FAIL (storages with heartbeats)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


class _Heartbeat:
    """Records the current trial's heartbeat every ``interval`` s while the worker lives."""

    def __init__(self, study, interval: int | None):
        self.storage = study._storage
        self.interval = interval
        self.trial_id: int | None = None
        self._stop = threading.Event()
        self._thread = None
        if interval and hasattr(self.storage, "record_heartbeat"):
            self._thread = threading.Thread(target=self._run, name="optuna-heartbeat", daemon=True)
            self._thread.start()

    def beat(self, trial_id: int | None) -> None:
        self.trial_id = trial_id
        if trial_id is not None and self._thread is not None:
            self.storage.record_heartbeat(trial_id)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            tid = self.trial_id
            if tid is not None:
                with contextlib.suppress(Exception):
                    self.storage.record_heartbeat(tid)

    def close(self) -> None:
        self._stop.set()


def best_trial(study):
    """The best COMPLETE trial of ``study``, a tie broken by the lowest trial number -- the same
    answer on every storage. (Optuna's ``study.best_trial`` leaves a tie to the database's row order,
    which PostgreSQL does not fix, so a SQLite and a PostgreSQL study of the same trials could name
    different parameters when several score the same -- common with parameters that do not move a
    trade.)

    >>> import optuna
    >>> optuna.logging.set_verbosity(optuna.logging.WARNING)
    >>> st = optuna.create_study(direction="maximize")
    >>> for v in (1.0, 3.0, 2.0, 3.0):
    ...     st.add_trial(optuna.trial.create_trial(value=v, params={}, distributions={}))
    >>> best_trial(st).number
    1
    """
    import optuna

    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        raise ValueError(f"study {study.study_name!r} holds no complete trial")
    sign = -1.0 if study.direction == optuna.study.StudyDirection.MAXIMIZE else 1.0
    return min(done, key=lambda t: (sign * float(t.value), t.number))


def run_trials(study, objective: Callable, n_total: int, *, lock, progress: bool = True,
               heartbeat: int | None = None) -> int:
    """Claim and run trials until ``study`` holds ``n_total`` finished-or-running trials; return how
    many this worker ran. ``objective(trial)`` returns a value or raises ``optuna.TrialPruned``; any
    other exception marks the trial FAIL and propagates."""
    import optuna

    S = optuna.trial.TrialState
    ran = 0
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=n_total, initial=_active_trials(study), desc="trials", unit="trial")
    hb = _Heartbeat(study, heartbeat)
    try:
        while True:
            with lock():
                _fail_stale(study)
                if _active_trials(study) >= n_total:
                    break
                with warnings.catch_warnings():  # we send the heartbeats ourselves (see _Heartbeat)
                    warnings.filterwarnings("ignore", "Heartbeat of storage is supposed to be used")
                    trial = study.ask()
                hb.beat(trial._trial_id)
            try:
                value = objective(trial)
            except optuna.TrialPruned:
                study.tell(trial, state=S.PRUNED)
            except BaseException:
                study.tell(trial, state=S.FAIL)
                raise
            else:
                study.tell(trial, value)
            finally:
                hb.beat(None)
            ran += 1
            if bar is not None:
                bar.update(1)
    finally:
        hb.close()
        if bar is not None:
            bar.close()
    return ran


# --------------------------------------------------------------------------- local worker processes
def spawn_workers(module: str, argv: Sequence[str], n: int) -> list[subprocess.Popen]:
    """Start ``n`` local worker processes running ``python -m module *argv --worker-only --worker-index i``."""
    procs = []
    for i in range(1, n + 1):
        cmd = [sys.executable, "-m", module, *argv, "--worker-only", "--worker-index", str(i)]
        procs.append(subprocess.Popen(cmd, stdin=subprocess.DEVNULL, env=dict(os.environ)))
    return procs


def wait_workers(procs: Sequence[subprocess.Popen]) -> list[int]:
    """Wait for every worker; return the exit codes (a failed worker does not stop the study)."""
    codes = [p.wait() for p in procs]
    for p, code in zip(procs, codes, strict=True):
        if code != 0:
            log.warning("optimiser worker pid %s exited with %s; its running trial (if any) is marked FAIL "
                        "once its heartbeat is stale", p.pid, code)
    return codes


def without_option(argv: Sequence[str], option: str, *, takes_value: bool = True) -> list[str]:
    """``argv`` without ``option`` (and its value): ``--workers 2`` must not recurse into the workers.

    >>> without_option(["--trials", "9", "--workers", "2", "--seed=1"], "--workers")
    ['--trials', '9', '--seed=1']
    >>> without_option(["--workers=3", "--x"], "--workers")
    ['--x']
    """
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == option:
            skip = takes_value
            continue
        if a.startswith(option + "="):
            continue
        out.append(a)
    return out


__all__ = ["DEFAULT_HEARTBEAT", "SAMPLERS", "TrialSeededSampler", "best_trial", "make_sampler", "open_storage",
           "run_trials",
           "spawn_workers", "trial_lock", "wait_workers", "without_option"]
