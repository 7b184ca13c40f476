"""Run independent jobs in this process, in local worker processes, or on a Dask cluster.

One function, :func:`fan_out`, for every command that maps the same work over many items (the
batch runner's datasets, the portfolio's symbols, walk-forward folds, parity checks over symbols):
results come back in the order of the items, whatever ran them, so a parallel run gives the same
output as a sequential one.
Each job writes only its own files (one writer per output, atomically), and the caller writes any
combined output itself, once, after all jobs are back.

- ``scheduler=None, workers=1`` (the default): a plain loop in this process.
- ``workers=N``: N local processes (``concurrent.futures`` with the ``spawn`` start method).
- ``scheduler="tcp://host:8786"``: a Dask distributed cluster. Start one with
  ``dask scheduler`` on one machine and ``dask worker tcp://host:8786 --nworkers 2 --nthreads 1``
  on each machine that has this repository installed (same ``.venv``) and sees the same
  ``DATA_DIR`` (a shared filesystem or ``s3://...``: jobs that read or write data do it there;
  the walk-forward ships each fold its data instead).

>>> fan_out(abs, [-2, 3, -4])
[2, 3, 4]
>>> fan_out(abs, [-2, 3, -4], workers=2)
[2, 3, 4]
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from S1.errors import UserError

T = TypeVar("T")


def check_scheduler(scheduler: str | None, workers: int) -> None:
    """Validate ``--scheduler`` / ``--workers`` up front (one clear error)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= 256:
        raise UserError(f"--workers must be a whole number from 1 to 256, got {workers!r}", "e.g. --workers 2")
    if scheduler is not None:
        if not scheduler.startswith(("tcp://", "tls://", "inproc://")):
            raise UserError(f"--scheduler {scheduler!r} is not a Dask scheduler address",
                            "e.g. --scheduler tcp://10.0.0.5:8786 (start one with `dask scheduler`)")
        if workers != 1:
            raise UserError("--workers and --scheduler exclude each other",
                            "the cluster decides how many workers run: drop --workers")


def fan_out(fn: Callable[[Any], T], items: Iterable[Any], *, scheduler: str | None = None, workers: int = 1,
            env: dict[str, str] | None = None) -> list[T]:
    """``[fn(x) for x in items]``, possibly in parallel (see the module docstring). ``fn`` must be a
    module-level function (it is pickled); ``env``: extra environment for local worker processes."""
    items = list(items)
    check_scheduler(scheduler, workers)
    if scheduler is not None:
        return _dask(fn, items, scheduler)
    if workers == 1 or len(items) <= 1:
        return [fn(x) for x in items]
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=min(workers, len(items)), mp_context=ctx,
                                initializer=_set_env, initargs=(env or {},)) as pool:
        return list(pool.map(fn, items))


def _set_env(env: dict[str, str]) -> None:
    os.environ.update(env)


def _dask(fn, items: list, scheduler: str) -> list:
    try:
        from distributed import Client
    except ImportError:  # pragma: no cover - distributed is in requirements.txt
        raise UserError("--scheduler needs the Dask distributed package", "pip install distributed") from None
    try:
        client = Client(scheduler, timeout="20s")
    except OSError as exc:
        raise UserError(f"cannot reach the Dask scheduler at {scheduler}: {exc}",
                        "start it with `dask scheduler` and workers with `dask worker <address>`, or drop "
                        "--scheduler to run here") from None
    with client:
        futures = client.map(fn, items, pure=False)
        return client.gather(futures)


__all__ = ["check_scheduler", "fan_out"]
