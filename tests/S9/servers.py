"""Real servers for the S9 tests, each in a tmp dir on a free port (the test skips when absent)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def need(binary: str) -> str:
    path = shutil.which(binary) or (f"/usr/sbin/{binary}" if os.path.exists(f"/usr/sbin/{binary}") else None)
    if path is None:
        pytest.skip(f"{binary} is not installed (Debian package; .ci/run installs it)")
    return path


def wait_for(check, what: str, timeout: float = 120.0, every: float = 0.05):
    """Poll ``check()`` until it returns a truthy value (generous timeout: a condition, not a speed)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except Exception as exc:  # noqa: BLE001 - not up yet
            last = exc
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class RedisServer:
    """``redis-server`` with AOF + ``appendfsync always`` in ``tmp`` (survives kill -9 without loss)."""

    def __init__(self, tmp: Path):
        self.binary = need("redis-server")
        self.dir = tmp / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
             "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        import redis

        wait_for(lambda: redis.Redis(port=self.port, socket_timeout=1).ping(), "redis-server to answer PING")
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(30)
        wait_for(lambda: not port_open(self.port), "the redis port to close")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def spawn(args: list[str], env: dict, log: Path) -> subprocess.Popen:
    fh = open(log, "ab")
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))}
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)


def stop_proc(proc: subprocess.Popen | None, sig=signal.SIGTERM) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class InfluxServer:
    """``influxd`` (1.x) with its meta/data/wal dirs in ``tmp`` and both ports free."""

    def __init__(self, tmp: Path):
        self.binary = need("influxd")
        self.dir = tmp / "influx"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port, self.rpc = free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> "InfluxServer":
        conf = self.dir / "influxdb.conf"
        conf.write_text(f"""reporting-disabled = true
bind-address = "127.0.0.1:{self.rpc}"
[meta]
  dir = "{self.dir / 'meta'}"
[data]
  dir = "{self.dir / 'data'}"
  wal-dir = "{self.dir / 'wal'}"
  query-log-enabled = false
[http]
  enabled = true
  bind-address = "127.0.0.1:{self.port}"
  auth-enabled = false
  log-enabled = false
[monitor]
  store-enabled = false
[continuous_queries]
  enabled = false
""")
        self.proc = subprocess.Popen([self.binary, "-config", str(conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.dir / "influxd.log", "ab"))
        import requests

        wait_for(lambda: requests.get(f"{self.url}/ping", timeout=1).status_code == 204, "influxd to answer /ping")
        return self

    def query(self, q: str, db: str) -> list[dict]:
        import requests

        r = requests.get(f"{self.url}/query", params={"db": db, "q": q, "epoch": "ns"}, timeout=30)
        r.raise_for_status()
        series = r.json()["results"][0].get("series", [])
        return [dict(zip(s["columns"], v), **s.get("tags", {})) for s in series for v in s["values"]]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
