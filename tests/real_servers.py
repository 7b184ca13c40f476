"""Real servers from Debian's packages, started for one test session on a free port in a temp dir.

Each ``start_*`` returns ``None`` with a reason when the server's binaries are absent, so a fixture
can ``pytest.skip`` cleanly. ``.ci/run`` installs them (postgresql, redis-server, prometheus, influxdb).
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(cond, *, timeout: float = 60.0, every: float = 0.05, what: str = "condition"):
    """Poll ``cond()`` until it returns a truthy value (returned) or ``timeout`` s pass (AssertionError)."""
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found and os.path.exists(found):
        return found
    cands = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return cands[-1] if cands else None


@dataclass
class Postgres:
    url: str
    datadir: Path
    port: int
    _as_user: str | None

    def stop(self) -> None:
        cmd = [_pg_bin("pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "stop"]
        subprocess.run(cmd, user=self._as_user, capture_output=True, check=False)
        if self._as_user:
            shutil.rmtree(self.datadir.parent, ignore_errors=True)


def start_postgres(tmp: Path) -> tuple[Postgres | None, str]:
    """initdb + pg_ctl start on a free port (as the ``postgres`` user when we are root: initdb refuses root)."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        return None, "PostgreSQL is not installed (Debian package postgresql; .ci/run installs it)"
    as_user = None
    if os.geteuid() == 0:
        try:
            import pwd

            pw = pwd.getpwnam("postgres")
        except KeyError:
            return None, "running as root and there is no 'postgres' user for initdb"
        as_user = "postgres"
        # pytest's temp dirs are 0700 root-only: the server gets its own dir the postgres user can reach
        tmp = Path(tempfile.mkdtemp(prefix="toolkit-pg-"))
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
    datadir, sock = tmp / "pgdata", tmp
    r = subprocess.run([initdb, "-D", str(datadir), "-U", "toolkit", "--auth=trust", "-E", "UTF8"],
                       user=as_user, capture_output=True, text=True)
    if r.returncode != 0:
        return None, f"initdb failed: {r.stderr.strip()[:200]}"
    port = free_port()
    opts = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    r = subprocess.run([pg_ctl, "-D", str(datadir), "-o", opts, "-l", str(tmp / "pg.log"), "-w", "start"],
                       user=as_user, capture_output=True, text=True)
    if r.returncode != 0:
        return None, f"pg_ctl start failed: {r.stderr.strip()[:200]}"
    server = Postgres(f"postgresql://toolkit@127.0.0.1:{port}/postgres", datadir, port, as_user)
    return server, ""
