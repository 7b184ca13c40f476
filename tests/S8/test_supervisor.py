"""The supervisor on small real processes: a crash and a hang (missed heartbeat) are restarted with
backoff and counted; hold/release; stop terminates everything. Plus the config and token checks and
the CLI's one-line refusals."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from S8.supervisor import Supervisor, WorkerSpec, backoff_delay

REPO = Path(__file__).resolve().parents[2]


def run(coro):
    return asyncio.run(coro)


async def until(cond, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


def test_backoff_grows_exponentially_is_capped_and_jittered():
    import random

    assert [backoff_delay(n, initial=0.5, maximum=4, jitter=0) for n in (1, 2, 3, 4, 5)] == [0.5, 1, 2, 4, 4]
    rng = random.Random(1)
    d = [backoff_delay(3, initial=1, maximum=60, jitter=1, rng=rng) for _ in range(50)]
    assert all(4 <= x <= 5 for x in d) and len(set(d)) > 40


def test_a_crashing_worker_is_restarted_and_counted(tmp_path):
    marker = tmp_path / "runs"
    code = (f"import pathlib,sys; p=pathlib.Path({str(marker)!r}); "
            "p.write_text(p.read_text()+'x' if p.exists() else 'x'); sys.exit(3)")
    seen = []

    async def main():
        sup = Supervisor(backoff_initial=0.05, backoff_max=0.2, backoff_jitter=0.01,
                         on_restart=lambda w, why: seen.append(why))
        w = sup.add(WorkerSpec(name="crasher", kind="job-like", argv=["-c", code], env={}))
        sup.start()
        try:
            await until(lambda: w.restarts >= 3)
        finally:
            await sup.stop()
        return w

    w = run(main())
    assert len(marker.read_text()) >= 3
    assert seen[:3] == ["exit code 3"] * 3
    assert w.state == "stopped" and w.pid is None


def test_a_hung_worker_missing_its_heartbeat_is_killed_and_restarted(tmp_path):
    hb = tmp_path / "hb"
    pids = tmp_path / "pids"
    # beats twice, then hangs (alive, silent) -- only the heartbeat can tell
    code = (f"import os,time,pathlib; pathlib.Path({str(pids)!r}).open('a').write(f'{{os.getpid()}}\\n')\n"
            f"for _ in range(2):\n    pathlib.Path({str(hb)!r}).write_text(str(time.time())); time.sleep(0.1)\n"
            "time.sleep(3600)\n")
    reasons = []

    def beat():
        try:
            return float(hb.read_text())
        except (OSError, ValueError):
            return None

    async def main():
        sup = Supervisor(heartbeat_timeout=0.5, startup_grace=30, backoff_initial=0.05, backoff_max=0.1,
                         backoff_jitter=0, check_every=0.1, on_restart=lambda w, why: reasons.append(why))
        w = sup.add(WorkerSpec(name="hanger", kind="executor", argv=["-c", code], env={}, heartbeat=beat))
        sup.start()
        try:
            await until(lambda: w.restarts >= 2)
        finally:
            await sup.stop()

    run(main())
    assert all(r.startswith("no heartbeat for") for r in reasons[:2]), reasons
    started = [int(x) for x in pids.read_text().split()]
    assert len(set(started)) >= 2
    for pid in started:  # every hung process was killed, none left behind
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]


def test_hold_stops_a_worker_until_release_without_counting_a_restart(tmp_path):
    async def main():
        sup = Supervisor(backoff_initial=0.05, backoff_jitter=0)
        w = sup.add(WorkerSpec(name="sleeper", kind="executor", argv=["-c", "import time; time.sleep(3600)"], env={}))
        sup.start()
        try:
            await until(lambda: w.pid is not None)
            first = w.pid
            await w.hold(timeout=5)
            assert w.state == "held" and w.pid is None
            w.release()
            await until(lambda: w.pid is not None and w.pid != first)
        finally:
            await sup.stop()
        return w

    w = run(main())
    assert w.restarts == 0


# ------------------------------------------------------------------------- config / token / CLI
def test_config_is_validated_with_a_message_that_says_where(tmp_path):
    from S1.errors import UserError
    from S8.config import load_config

    bad = tmp_path / "bad.yaml"
    bad.write_text("markets:\n  - {symbol: BTCUSDT, interval: 7m}\n")
    with pytest.raises(UserError, match=r"markets\.0\.interval: .*unknown interval '7m'"):
        load_config(bad)
    bad.write_text("markets:\n  - {symbol: BTCUSDT, mode: paper}\n")
    with pytest.raises(UserError, match="markets.0.mode"):
        load_config(bad)
    bad.write_text("markets:\n  - {symbol: BTCUSDT, args: [--live]}\n")
    with pytest.raises(UserError, match="set by the service"):
        load_config(bad)
    bad.write_text("markets:\n  - {symbol: BTCUSDT}\n  - {symbol: btcusdt}\n")
    with pytest.raises(UserError, match="listed twice"):
        load_config(bad)
    cfg = load_config(REPO / "S8" / "service.yaml")
    assert [m.symbol for m in cfg.markets] == ["BTCUSDT", "ETHUSDC"] and all(m.mode == "dry-run" for m in cfg.markets)
    assert cfg.markets[0].rules.is_absolute() and cfg.markets[0].rules.exists()


def test_the_token_check():
    from S1.errors import UserError
    from S8.api import check_token

    for bad in (None, "", "short", "x" * 23):
        with pytest.raises(UserError, match="secrets.token_urlsafe"):
            check_token(bad)
    assert check_token("x" * 24) == "x" * 24


def _cli(tmp_path, *args, **env):
    e = {k: v for k, v in os.environ.items() if not k.startswith(("BINANCE_", "CONTROL_API"))}
    (tmp_path / "empty.env").write_text("")
    e.update(TOOLKIT_ENV_FILE=str(tmp_path / "empty.env"), DATA_DIR=str(tmp_path / "data"), **env)
    return subprocess.run([sys.executable, "S8/service.py", *args], cwd=REPO, env=e, capture_output=True, text=True,
                          timeout=120)


def test_the_service_refuses_to_start_with_a_short_token_and_says_how_to_make_one(tmp_path):
    r = _cli(tmp_path, CONTROL_API_TOKEN="tooshort")
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "CONTROL_API_TOKEN" in lines[0] and "secrets.token_urlsafe(32)" in lines[0]
    assert "tooshort" not in r.stderr


def test_live_markets_need_the_explicit_flag(tmp_path):
    cfg = tmp_path / "live.yaml"
    cfg.write_text("markets:\n  - {symbol: BTCUSDT, mode: live}\n")
    r = _cli(tmp_path, "--config", str(cfg), CONTROL_API_TOKEN="t" * 30, CONTROL_API_PORT="1")
    assert r.returncode == 2 and "i_understand_this_trades_real_money" in r.stderr
    r = _cli(tmp_path, "--config", str(cfg), "--offline", CONTROL_API_TOKEN="t" * 30)
    assert r.returncode == 2 and "--offline" in r.stderr


def test_a_job_runs_on_its_schedule_and_is_not_restarted_after_it_exits(tmp_path):
    marker = tmp_path / "runs"
    code = f"import pathlib; p=pathlib.Path({str(marker)!r}); p.write_text((p.read_text() if p.exists() else '')+'x')"

    async def main():
        sup = Supervisor(backoff_initial=0.05, backoff_jitter=0)
        w = sup.add(WorkerSpec(name="job-mark", kind="job", argv=["-c", code], env={}))
        w._held = True                       # jobs wait for their schedule
        sup.start()
        sched = asyncio.get_running_loop().create_task(sup.schedule(w, every=0.3, timeout=30, run_at_start=True))
        try:
            await until(lambda: w.runs >= 3)
        finally:
            sched.cancel()
            await sup.stop()
        return w

    w = run(main())
    assert w.restarts == 0                   # an exit 0 of a job is its end, not a crash
    assert len(marker.read_text()) == w.runs >= 3


def test_a_job_longer_than_its_timeout_is_stopped(tmp_path):
    async def main():
        sup = Supervisor(backoff_initial=0.05, backoff_jitter=0, stop_timeout=5)
        w = sup.add(WorkerSpec(name="job-slow", kind="job", argv=["-c", "import time; time.sleep(3600)"], env={}))
        w._held = True
        sup.start()
        sched = asyncio.get_running_loop().create_task(sup.schedule(w, every=3600, timeout=0.5, run_at_start=True))
        try:
            await until(lambda: w.runs >= 1)
            assert w.pid is None and w.state == "held"
        finally:
            sched.cancel()
            await sup.stop()

    run(main())
