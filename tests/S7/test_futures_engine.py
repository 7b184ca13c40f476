"""S7's USD-M dry-run account (hand-computed) and the spot engine's refusal of short rules."""

from __future__ import annotations

import asyncio

import pandas as pd
import pytest

from S1.errors import UserError
from S4.decide import Size
from S5.futures import FuturesSpec
from S7.futures_engine import FuturesAccount, Order


def test_account_fills_funding_and_liquidation_by_hand():
    acc = FuturesAccount(balance=1000.0, fee_rate=0.001, spec=FuturesSpec(leverage=5, maint_margin_rate=0.01))
    acc.submit(Order("SELL", 2.0, "entry:dump", "short", True, size=Size(2.0, 10.0, None)))
    assert acc.on_price(100.0, 0) == []
    p = acc.position
    assert (p.side, p.qty, p.entry_price, p.stop, p.take_profit) == ("short", 2.0, 100.0, 110.0, None)
    assert acc.balance == pytest.approx(1000 - 0.2) and acc.margin == pytest.approx(40.0)
    assert acc.equity(90.0) == pytest.approx(999.8 + 20.0)
    assert acc.fund(0.001, 95.0) == pytest.approx(-0.19)              # a short receives a positive rate
    assert acc.balance == pytest.approx(999.8 + 0.19)
    # liquidation: (2 x 100 + 40) / (2 x 1.01) = 118.8118...
    assert acc.check_liquidation(110.0, 118.0, 109.0, 3_600_000) is None
    tr = acc.check_liquidation(110.0, 119.0, 109.0, 7_200_000)
    assert tr["exit_reason"] == "liquidation" and tr["exit_price"] == pytest.approx(240 / 2.02)
    assert tr["pnl"] == pytest.approx(-40.0 - 0.2 - (-0.19))          # the margin, the entry fee, funding received
    assert acc.balance == pytest.approx(1000 - 0.2 + 0.19 - 40.0) and acc.position is None


def test_spot_engine_and_replay_refuse_short_rules(tmp_path):
    from S4.rules import parse_rules
    from S7.paper_replay import replay_frame

    rules = parse_rules("short_entry: {col: close, op: '<', value: 1}")
    t = pd.date_range("2024-01-01", periods=3, freq="h", tz="UTC")
    f = pd.DataFrame({"open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0}, index=t)
    with pytest.raises(UserError, match="--market usdm"):
        asyncio.run(replay_frame(f, symbol="BTCUSDT", interval="1h", rules=rules, risk=None, filters=None,
                                 state_dir=tmp_path))


def test_executor_refuses_usdm_live_in_one_line(settings_env, capsys):
    from S1.cli import run
    from S7.executor import main

    argv = ["--symbol", "BTCUSDT", "--market", "usdm", "--live", "--i-understand-this-trades-real-money"]
    assert run(main, argv) == 2
    err = capsys.readouterr().err
    assert "not live" in err and err.count("\n") == 1
