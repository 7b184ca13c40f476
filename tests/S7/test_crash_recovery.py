"""A crash never drops a stop (issue 22): a real executor process (this file run as
``python -m tests.S7.test_crash_recovery child ...``) trades against the local test
exchange and is killed with SIGKILL at each step of an order's life; the restart's
reconciliation must bring back the whole position (quantity, entry, stop-loss,
take-profit), send no duplicate order, and the next candle through the stop must sell.

Steps: the intent is written but the order never sent; the order is accepted and
executed but its answer is lost (the test exchange holds it); the fill is booked but
the levels are not placed yet; everything is placed; a stop-loss SELL is accepted and
its answer lost. The child pauses at the step (writing a marker file) and the test
kills it there -- it waits on the marker and on the exchange's state, never on a sleep.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest

from tests.S7.helpers import (
    API_KEY,
    CANARY_SECRET,
    REPO,
    build_rig,
    candles,
    run,
    trading_client,
    warm_closes,
)

SYM = "TESTUSDT"
RULES = "entry: {col: close, op: '>', value: 100}\n"     # no exit rule: only the stop can sell
WARM = warm_closes(80, 90.0)
PRICE = "120.5"


def entry_frame(t0: int):
    """80 closes below 100, then one above (the entry), closing in the minute after ``t0``."""
    return candles(np.r_[WARM, 120.0], end_ms=t0 + 60_000)


def dip_frame(t0: int, low: float):
    """The next candle, closing at ``low`` (through the stop)."""
    return candles(np.r_[WARM, 120.0, low], end_ms=t0 + 120_000, spread=0.0)


# --------------------------------------------------------------------------- the child
def _pause(marker: Path) -> None:
    marker.write_text(str(os.getpid()))
    time.sleep(3600)           # killed here


def child(tmp: Path, api_url: str, t0: int, step: str) -> None:
    """The executor process: enter on the entry candle (and, for ``sell_accepted``, exit on
    the dip candle), pausing at ``step`` until it is killed."""
    marker = tmp / "paused"

    async def go():
        from S7.exchange_client import BinanceTradingClient

        c = BinanceTradingClient(base_url=api_url, api_key=API_KEY, api_secret=CANARY_SECRET, timeout=600,
                                 recv_window_ms=1000)
        rig = await build_rig(tmp, venue=c, symbol=SYM, rules_text=RULES)
        if step == "intent":              # the intent is committed, the request not sent yet
            async def never_sent(**params):
                _pause(marker)
            c.new_order = never_sent
        elif step == "booked":            # the fill is in the store, its levels not placed yet
            def before_levels(row, fill_price):
                _pause(marker)
            rig.engine._place_levels = before_levels
        df = entry_frame(t0)
        rig.engine.seed(df.iloc[:-1])
        d = await rig.engine.on_candle(df.iloc[-1:])
        assert d.action == "buy", d
        if step == "levels":
            _pause(marker)
        pos = rig.store.position(SYM)
        assert step == "sell_accepted" and pos.stop is not None, (step, pos)
        await rig.engine.on_candle(dip_frame(t0, pos.stop * 0.98).iloc[-1:])   # its answer never comes
        raise AssertionError("the SELL's answer should have been held")

    asyncio.run(go())


# --------------------------------------------------------------------------- the test
def _spawn(tmp: Path, api_url: str, t0: int, step: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, "-m", "tests.S7.test_crash_recovery", "child", str(tmp), api_url,
                             str(t0), step], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait(cond, proc: subprocess.Popen, what: str, timeout: float = 120.0) -> None:
    t_end = time.monotonic() + timeout
    while not cond():
        if proc.poll() is not None:
            raise AssertionError(f"the executor exited ({proc.returncode}) before {what}:\n{proc.stderr.read()}")
        if time.monotonic() > t_end:
            proc.kill()
            raise AssertionError(f"not {what} within {timeout:g}s")
        time.sleep(0.02)


def _kill9(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(60)
    assert proc.returncode == -signal.SIGKILL
    proc.stdout.close()
    proc.stderr.close()


def _posted(ex, side: str) -> list:
    return [r for r in ex.posted() if r.method == "POST" and r.params.get("side") == side]


def _crash_at(texchange, tmp: Path, step: str) -> int:
    """Run the child to ``step`` and SIGKILL it there; returns its t0."""
    ex = texchange.exchange
    ex.set_price(SYM, PRICE)
    t0 = int(time.time() * 1000)
    if step == "accepted":
        ex.inject("timeout_after_accept", delay=600)            # executed, the answer never comes
    elif step == "sell_accepted":
        ex.inject("timeout_after_accept", delay=600, after=1)   # the BUY answers, the SELL does not
    proc = _spawn(tmp, texchange.server.api_url, t0, step)
    try:
        if step in ("accepted", "sell_accepted"):
            side = "SELL" if step == "sell_accepted" else "BUY"

            def executed():
                sent = _posted(ex, side)
                return bool(sent) and any(o["status"] == "FILLED"
                                          for o in ex.orders_with_client_id(sent[0].params["newClientOrderId"]))
            _wait(executed, proc, f"the {side} executed at the exchange")
        else:
            _wait((tmp / "paused").exists, proc, f"paused at {step}")
    finally:
        if proc.poll() is None:
            _kill9(proc)
    return t0


async def _restart(texchange, tmp: Path):
    c = trading_client(texchange)
    rig = await build_rig(tmp, venue=c, symbol=SYM, rules_text=RULES)    # start(): reconciles
    return rig, c


def _assert_full_position(rig, ex) -> None:
    """qty, entry, stop and take-profit as an uncrashed run has them (see test_engine)."""
    buy = rig.store.orders(SYM, ["FILLED"])
    assert [o["side"] for o in buy] == ["BUY"]
    row = buy[0]
    at_ex = ex.orders_with_client_id(row["client_order_id"])
    assert len(at_ex) == 1 and at_ex[0]["status"] == "FILLED"            # one order, never a duplicate
    qty = Decimal(at_ex[0]["executedQty"])
    pos = rig.store.position(SYM)
    assert pos.qty == qty - qty * Decimal("0.001")                       # commission in the base asset
    assert pos.entry_price == pytest.approx(float(PRICE))
    assert row["stop_distance"] and row["tp_distance"]
    assert pos.stop == pytest.approx(float(PRICE) - row["stop_distance"], abs=0.01)
    assert pos.take_profit == pytest.approx(float(PRICE) + row["tp_distance"], abs=0.01)
    assert rig.store.levels_placed(SYM)


async def _stop_sells(rig, texchange, t0: int) -> None:
    ex = texchange.exchange
    pos = rig.store.position(SYM)
    rig.engine.seed(entry_frame(t0))
    low = pos.stop * 0.98
    ex.set_price(SYM, f"{low:.2f}")
    d = await rig.engine.on_candle(dip_frame(t0, low).iloc[-1:])
    assert d.action == "sell" and d.reason.startswith("stop_loss:"), d
    assert len(_posted(ex, "SELL")) == 1
    assert not rig.store.position(SYM).is_open
    assert rig.store.round_trips(SYM)[-1]["reason"].startswith("stop_loss")


@pytest.mark.parametrize("step", ["accepted", "booked", "levels"])
def test_killed_after_the_entry_order_left_restores_the_whole_position(texchange, tmp_path, step):
    t0 = _crash_at(texchange, tmp_path, step)
    ex = texchange.exchange

    async def go():
        rig, c = await _restart(texchange, tmp_path)
        try:
            rep = rig.engine.reports[-1]
            assert rep.ok
            if step == "accepted":
                assert [(b, a) for _, b, a in rep.resolved] == [("INTENT", "FILLED")]
            _assert_full_position(rig, ex)
            text = "\n".join(rep.lines("TEST", "USDT"))
            assert "(stop None" not in text and "take-profit None" not in text
            assert len(_posted(ex, "BUY")) == 1
            await _stop_sells(rig, texchange, t0)
        finally:
            await c.close_connection()
    run(go())


def test_killed_with_the_intent_written_never_sends_it(texchange, tmp_path):
    t0 = _crash_at(texchange, tmp_path, "intent")
    ex = texchange.exchange

    async def go():
        rig, c = await _restart(texchange, tmp_path)
        try:
            (row,) = rig.store.orders(SYM)
            cid = row["client_order_id"]
            deadline = time.monotonic() + 60
            while rig.store.get_order(cid)["status"] != "ABANDONED":   # after its recvWindow has passed
                assert time.monotonic() < deadline, rig.store.get_order(cid)
                await asyncio.sleep(0.1)
                await rig.engine.reconcile("reconnect")
            assert ex.posted() == [] or not _posted(ex, "BUY")
            pos = rig.store.position(SYM)
            assert not pos.is_open and pos.stop is None and pos.take_profit is None
            # the stale signal's candle again: not sent a second time
            df = entry_frame(t0)
            rig.engine.seed(df.iloc[:-1])
            await rig.engine.on_candle(df.iloc[-1:])
            assert not _posted(ex, "BUY")
        finally:
            await c.close_connection()
    run(go())


def test_killed_with_the_stop_sell_in_flight_books_the_exit_once(texchange, tmp_path):
    _crash_at(texchange, tmp_path, "sell_accepted")
    ex = texchange.exchange

    async def go():
        rig, c = await _restart(texchange, tmp_path)
        try:
            rep = rig.engine.reports[-1]
            assert rep.ok and [(b, a) for _, b, a in rep.resolved] == [("INTENT", "FILLED")]
            pos = rig.store.position(SYM)
            assert not pos.is_open and pos.stop is None and pos.take_profit is None
            trips = rig.store.round_trips(SYM)
            assert len(trips) == 1 and trips[0]["reason"].startswith("stop_loss")
            assert len(_posted(ex, "BUY")) == 1 and len(_posted(ex, "SELL")) == 1
        finally:
            await c.close_connection()
    run(go())


if __name__ == "__main__" and len(sys.argv) == 6 and sys.argv[1] == "child":
    child(Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5])
