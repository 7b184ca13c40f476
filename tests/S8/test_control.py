"""The control channel inside the S7 engine (S7/control.py + the engine's hook), on the local test
exchange: a paused market takes no entry but still exits; the status file is the heartbeat."""

from __future__ import annotations

import json
import time

import numpy as np

from tests.S7.conftest import texchange  # noqa: F401 -- the local test exchange fixture
from tests.S7.helpers import build_rig, candles, run, trading_client, warm_closes

SYM = "TESTUSDT"


def test_pause_blocks_entries_not_exits_and_the_status_reports_it(texchange, tmp_path):  # noqa: F811
    from S7.control import ControlFile, ExecutorControl

    t0 = int(time.time() * 1000)
    # 80 quiet closes, then entry (121), entry again (122), exit (95)
    df = candles(np.r_[warm_closes(80, 90.0), 121.0, 122.0, 95.0], end_ms=t0 + 3 * 60_000)
    texchange.exchange.set_price(SYM, "120.5")
    files = ControlFile(tmp_path / "ctl", SYM, "1m")

    async def go():
        c = trading_client(texchange)
        try:
            rig = await build_rig(tmp_path, venue=c, symbol=SYM)
            eng = rig.engine
            eng.control = ExecutorControl(tmp_path / "ctl", SYM, "1m")
            eng.seed(df.iloc[:-3])
            files.set_paused(True, reason="test")
            d1 = await eng.on_candle(df.iloc[-3:-2], now_ms=t0)
            assert d1.action == "paused" and "paused from the control API (test)" in d1.reason
            assert texchange.exchange.posted() == []
            eng.control.write_status(eng)
            st = json.loads(files.status_path.read_text())
            assert st["paused"] is True and st["position"]["qty"] == 0 and st["symbol"] == SYM
            files.set_paused(False)
            d2 = await eng.on_candle(df.iloc[-2:-1], now_ms=t0 + 60_000)
            assert d2.action == "buy"
            files.set_paused(True)           # paused again: the exit still goes out
            texchange.exchange.set_price(SYM, "95")
            d3 = await eng.on_candle(df.iloc[-1:], now_ms=t0 + 120_000)
            assert d3.action == "sell"
            sides = [r.params.get("side") for r in texchange.exchange.posted()]
            assert sides == ["BUY", "SELL"]
            eng.control.write_status(eng)
            st = json.loads(files.status_path.read_text())
            assert st["position"]["qty"] == 0 and len(st["decision_latency_s"]) == 2
            assert st["open_orders"] == 0 and st["kill_switch"]["tripped"] is False
        finally:
            await c.close_connection()

    run(go())
