"""Process supervision on asyncio: each worker is an OS process, restarted when it dies or hangs.

Why processes (``asyncio.create_subprocess_exec``) and not tasks in one interpreter: a worker that
crashes, leaks or blocks its event loop cannot take the others down; ``kill -9`` of one is a real
crash whose recovery is S7's crash-safe store + reconciliation and S1's backfill, the code that runs
anyway; the OS gives exact RSS/CPU per worker. asyncio does what it does well here: waiting on many
processes, pipes and timers at once in one thread, with no polling threads.

- **crash**: the process exits (any code, any signal) while the service runs -> restarted after an
  exponential backoff with jitter (``initial * 2**(n-1)``, capped, ``+ uniform(0, jitter)``); the
  count starts over once a worker has stayed up ``stable_after`` seconds;
- **hang**: ``heartbeat()`` (the worker's last sign of life, Unix seconds) older than
  ``heartbeat_timeout`` (``startup_grace`` for a new process) -> SIGKILL, then as a crash;
- every restart is logged, counted (``on_restart``: metrics, alerts) and visible in :meth:`Worker.info`;
- :meth:`Supervisor.stop`: SIGTERM to every worker, SIGKILL after ``stop_timeout``;
- :meth:`Worker.hold` stops a worker and keeps it stopped (the panic button), :meth:`Worker.release`
  lets it run again.

Workers run in their own session (a Ctrl-C in the terminal reaches the supervisor only, which stops
them in order) and, on Linux, get SIGTERM if the supervisor itself dies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import sys
import time
from dataclasses import dataclass, field
from typing import Awaitable, Callable

from S1.settings import REPO_ROOT

log = logging.getLogger("S8.supervisor")


def backoff_delay(failures: int, *, initial: float, maximum: float, jitter: float,
                  rng: random.Random | None = None) -> float:
    """Seconds to wait before restart number ``failures`` (1, 2, ...).

    >>> [backoff_delay(n, initial=1, maximum=8, jitter=0) for n in range(1, 6)]
    [1.0, 2.0, 4.0, 8.0, 8.0]
    """
    base = min(float(maximum), float(initial) * 2 ** max(0, failures - 1))
    return base + (rng or random).uniform(0, jitter) if jitter else base


def _parent_death_signal() -> None:  # runs in the child before exec (Linux): die with the supervisor
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 -- best effort (not Linux)
        pass


@dataclass
class WorkerSpec:
    name: str                                   #: e.g. executor-btcusdt_1m
    kind: str                                   #: streamer | executor | job | bus
    argv: list[str]                             #: script and options (run with this Python)
    env: dict[str, str]
    heartbeat: Callable[[], float | None] | None = None
    markets: tuple[str, ...] = ()               #: symbols it serves
    on_line: Callable[[str], None] | None = None


@dataclass
class Worker:
    spec: WorkerSpec
    state: str = "starting"                     #: starting | running | backoff | held | stopped
    restarts: int = 0
    failures: int = 0
    pid: int | None = None
    started_at: float | None = None
    last_exit: str | None = None
    last_output: float | None = None            #: time.time() of its last output line
    runs: int = 0                               #: completed scheduled runs (jobs)
    proc: asyncio.subprocess.Process | None = None
    _held: bool = False
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _wake: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return self.spec.name

    def last_heartbeat(self) -> float | None:
        if self.spec.heartbeat is None:
            return None
        try:
            return self.spec.heartbeat()
        except Exception:  # noqa: BLE001
            return None

    def info(self) -> dict:
        hb = self.last_heartbeat()
        return {"name": self.name, "kind": self.spec.kind, "pid": self.pid, "state": self.state,
                "restarts": self.restarts, "last_heartbeat": hb,
                "heartbeat_age_s": None if hb is None else round(time.time() - hb, 3),
                "started_at": self.started_at, "last_exit": self.last_exit, "markets": list(self.spec.markets)}

    def signal(self, sig: int) -> bool:
        p = self.proc
        if p is None or p.returncode is not None:
            return False
        with contextlib.suppress(ProcessLookupError):
            p.send_signal(sig)
            return True
        return False

    async def hold(self, *, timeout: float = 10.0) -> None:
        """Stop the worker (SIGTERM, SIGKILL after ``timeout``) and keep it stopped until :meth:`release`."""
        self._held = True
        self._release.clear()
        await self._terminate(timeout)
        for _ in range(200):  # the keeper notices the exit (pid cleared) within a few loop turns
            if self.pid is None:
                break
            await asyncio.sleep(0.01)
        self.state = "held"

    def release(self) -> None:
        self._held = False
        self._release.set()

    async def _terminate(self, timeout: float) -> None:
        p = self.proc
        if p is None or p.returncode is not None:
            return
        self.signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(p.wait(), timeout)
        except asyncio.TimeoutError:
            log.warning("%s did not exit %gs after SIGTERM: SIGKILL", self.name, timeout)
            self.signal(signal.SIGKILL)
            await p.wait()


class Supervisor:
    """Run and watch workers until :meth:`stop` (see the module docstring)."""

    def __init__(self, *, heartbeat_timeout: float = 30.0, startup_grace: float = 90.0, backoff_initial: float = 1.0,
                 backoff_max: float = 60.0, backoff_jitter: float = 1.0, stable_after: float = 60.0,
                 stop_timeout: float = 8.0, check_every: float = 0.5,
                 on_restart: Callable[[Worker, str], Awaitable[None] | None] | None = None):
        self.heartbeat_timeout, self.startup_grace = heartbeat_timeout, startup_grace
        self.backoff = dict(initial=backoff_initial, maximum=backoff_max, jitter=backoff_jitter)
        self.stable_after, self.stop_timeout, self.check_every = stable_after, stop_timeout, check_every
        self.on_restart = on_restart
        self.workers: dict[str, Worker] = {}
        self.stopping = asyncio.Event()
        self._tasks: list[asyncio.Task] = []

    def add(self, spec: WorkerSpec) -> Worker:
        if spec.name in self.workers:
            raise ValueError(f"two workers named {spec.name}")
        w = Worker(spec)
        self.workers[spec.name] = w
        if self._tasks:  # already running
            self._tasks.append(asyncio.get_running_loop().create_task(self._keep(w), name=f"keep-{w.name}"))
        return w

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._keep(w), name=f"keep-{w.name}") for w in self.workers.values()]

    async def _spawn(self, w: Worker) -> asyncio.subprocess.Process:
        env = {**os.environ, **w.spec.env, "PYTHONUNBUFFERED": "1"}
        spawned = time.time()  # before the exec: a heartbeat the child writes at once is newer than this
        proc = await asyncio.create_subprocess_exec(
            sys.executable, *w.spec.argv, cwd=str(REPO_ROOT), env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            preexec_fn=_parent_death_signal if sys.platform.startswith("linux") else None)
        w.proc, w.pid, w.started_at, w.state = proc, proc.pid, spawned, "running"
        log.info("%s started (pid %d): %s", w.name, proc.pid, " ".join(w.spec.argv))
        return proc

    async def _pump(self, w: Worker, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdout is not None
        wlog = logging.getLogger(f"S8.worker.{w.name}")
        while True:
            line = await proc.stdout.readline()
            if not line:
                return
            text = line.decode("utf-8", "replace").rstrip()
            w.last_output = time.time()
            wlog.info("%s", text)
            if w.spec.on_line is not None:
                try:
                    w.spec.on_line(text)
                except Exception:  # noqa: BLE001
                    pass

    async def _watch(self, w: Worker, proc: asyncio.subprocess.Process) -> str | None:
        """Return why the process was killed as hung (None: it exited by itself)."""
        while proc.returncode is None:
            try:
                await asyncio.wait_for(asyncio.shield(proc.wait()), self.check_every)
                return None
            except asyncio.TimeoutError:
                pass
            if w.spec.heartbeat is None or self.stopping.is_set() or w._held:
                continue
            now = time.time()
            hb = w.last_heartbeat()
            started = w.started_at or now
            if hb is None or hb < started:
                late = now - started > self.startup_grace
                why = f"no heartbeat {self.startup_grace:g}s after start"
            else:
                late = now - hb > self.heartbeat_timeout
                why = f"no heartbeat for {now - hb:.1f}s (limit {self.heartbeat_timeout:g}s)"
            if late:
                log.error("%s (pid %s) looks hung: %s -- killing it", w.name, proc.pid, why)
                w.signal(signal.SIGKILL)
                await proc.wait()
                return why
        return None

    async def _keep(self, w: Worker) -> None:
        while not self.stopping.is_set():
            if w._held:
                w.state = "held"
                await self._wait_any(w._release)
                continue
            try:
                proc = await self._spawn(w)
            except OSError as exc:
                w.last_exit = f"could not start: {exc}"
                log.error("%s: %s", w.name, w.last_exit)
                proc = None
            if proc is not None:
                pump = asyncio.get_running_loop().create_task(self._pump(w, proc))
                hung = await self._watch(w, proc)
                w.pid = None
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(pump, 2.0)
                rc = proc.returncode
                w.last_exit = hung or (f"killed by {signal.Signals(-rc).name}" if rc is not None and rc < 0
                                       else f"exit code {rc}")
                up = time.time() - (w.started_at or time.time())
                w.pid = None
                if self.stopping.is_set() or w._held:
                    continue
                if w.spec.kind == "job":  # a job runs once per release (its schedule), never restarted
                    (log.info if rc == 0 else log.error)("%s finished (%s)", w.name, w.last_exit)
                    w._held = True
                    w._release.clear()
                    continue
                if up >= self.stable_after:
                    w.failures = 0
            w.failures += 1
            w.restarts += 1
            delay = backoff_delay(w.failures, **self.backoff)
            w.state = "backoff"
            log.error("%s stopped (%s): restart #%d in %.1fs", w.name, w.last_exit, w.restarts, delay)
            if self.on_restart is not None:
                try:
                    res = self.on_restart(w, w.last_exit or "")
                    if asyncio.iscoroutine(res):
                        await res
                except Exception as exc:  # noqa: BLE001 -- an alert failure never stops supervision
                    log.warning("restart hook failed: %s", exc)
            w._wake.clear()
            await self._wait_any(w._wake, timeout=delay)
        w.state = "stopped"

    async def schedule(self, w: Worker, *, every: float, timeout: float, run_at_start: bool = False) -> None:
        """Run a ``job`` worker every ``every`` s (a run still going is not doubled; one longer than
        ``timeout`` is stopped). Until cancelled."""
        first = True
        while not self.stopping.is_set():
            if not (first and run_at_start):
                await self._wait_any(asyncio.Event(), timeout=every)
                if self.stopping.is_set():
                    return
            first = False
            if w.pid is not None:
                log.warning("%s: the previous run is still going: this run skipped", w.name)
                continue
            w.release()
            t0 = time.monotonic()
            while w.pid is None and w._release.is_set() and time.monotonic() - t0 < 10:
                await asyncio.sleep(0.05)
            while w.pid is not None and time.monotonic() - t0 < timeout:
                await asyncio.sleep(0.1)
            if w.pid is not None:
                log.error("%s ran longer than %gs: stopped", w.name, timeout)
                await w.hold(timeout=self.stop_timeout)
            w.runs += 1

    async def _wait_any(self, ev: asyncio.Event, timeout: float | None = None) -> None:
        waits = [asyncio.ensure_future(ev.wait()), asyncio.ensure_future(self.stopping.wait())]
        try:
            await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in waits:
                t.cancel()

    async def stop(self) -> None:
        """SIGTERM every worker, SIGKILL what is still there after ``stop_timeout``; wait for them."""
        self.stopping.set()
        await asyncio.gather(*(w._terminate(self.stop_timeout) for w in self.workers.values()),
                             return_exceptions=True)
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=self.stop_timeout + 2)
        for w in self.workers.values():
            w.state = "stopped"


__all__ = ["Supervisor", "Worker", "WorkerSpec", "backoff_delay"]
