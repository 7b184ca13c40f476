"""S8 fixtures: the service as a real process (``python S8/service.py``) on a free port,
with its own data folder and no keys but the testnet test keys; helpers the S8 tests share."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-token-" + "x" * 24
KEY, SECRET = "s8-test-key-000000000001", "s8-canary-SECRET-5e1d0c9b"
ACTIVE = "entry: {col: rsi14, op: crosses_above, value: 50}\nexit: {col: rsi14, op: crosses_below, value: 50}\n"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(fn, timeout: float = 120.0, every: float = 0.5, what: str = "condition"):
    end = time.monotonic() + timeout
    last = None
    while time.monotonic() < end:
        try:
            last = fn()
            if last:
                return last
        except (httpx.HTTPError, OSError, KeyError, ValueError) as exc:
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def service_env(tmp: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("BINANCE_", "OPENAI_", "ALERT_WEBHOOK", "CONTROL_API", "CRYPTOPANIC", "X_BEARER"))}
    (tmp / "empty.env").write_text("")
    env.update(DATA_DIR=str(tmp / "data"), REPORTS_DIR=str(tmp / "reports"), TOOLKIT_ENV_FILE=str(tmp / "empty.env"),
               HTTP_MAX_RETRIES="2", HTTP_TIMEOUT="5", BINANCE_TESTNET_API_KEY=KEY, BINANCE_TESTNET_API_SECRET=SECRET)
    env.update({k: str(v) for k, v in extra.items()})
    return env


class Svc:
    def __init__(self, proc, port, tmp, rules, log, hook):
        self.proc, self.port, self.tmp, self.rules, self.log, self.hook = proc, port, tmp, rules, log, hook
        self.url = f"http://127.0.0.1:{port}"
        self.auth = {"Authorization": f"Bearer {TOKEN}"}

    def get(self, path, **kw):
        return httpx.get(self.url + path, headers=self.auth, timeout=30, **kw)

    def post(self, path, **kw):
        return httpx.post(self.url + path, headers=self.auth, timeout=120, **kw)

    def status(self) -> dict:
        r = self.get("/status")
        r.raise_for_status()
        return r.json()

    def metrics(self) -> dict[str, float]:
        out = {}
        for line in httpx.get(self.url + "/metrics", timeout=30).text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out

    def worker(self, name) -> dict:
        return next(w for w in self.status()["workers"] if w["name"] == name)

    def market(self, symbol) -> dict:
        return next(m for m in self.status()["markets"] if m["market"] == symbol)


@contextmanager
def running_service(tmp: Path, config: Path, *args: str, rules: Path, hook=None, **env):
    """``python S8/service.py --config <config> <args>`` in ``tmp`` (log in ``tmp/service.log``,
    settings from :func:`service_env` plus ``env``, the control API on a free port); yields a
    :class:`Svc` once ``/status`` answers, and stops the process with SIGTERM (then kill) after."""
    port = free_port()
    full_env = service_env(tmp, CONTROL_API_TOKEN=TOKEN, CONTROL_API_PORT=port, **env)
    log = open(tmp / "service.log", "w")
    proc = subprocess.Popen([sys.executable, "S8/service.py", "--config", str(config), *args], cwd=REPO,
                            env=full_env, stdout=log, stderr=subprocess.STDOUT)
    s = Svc(proc, port, tmp, rules, tmp / "service.log", hook)
    try:
        wait_for(lambda: proc.poll() is None and s.get("/status").status_code == 200, 90, what="the control API")
        yield s
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


@pytest.fixture(scope="session")
def start_service():
    """:func:`running_service`: ``with start_service(tmp, config, *args, rules=..., **env) as svc``
    (usable from module- and function-scoped fixtures)."""
    return running_service
