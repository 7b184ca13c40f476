"""S7 paper-trades several symbols in one process against one balance (S7/portfolio_session.py):
the dry-run replay makes the same trades as the S5 portfolio backtest (same ranking, same
--max-open, one pot of cash), and its invariants hold."""

from __future__ import annotations

import asyncio

import numpy as np
import pandas as pd
import pytest

SYMBOLS = ("ETHUSDT", "BNBUSDT", "SOLUSDT")


@pytest.fixture(scope="module")
def frames():
    from S1.local.simulated import simulate_candles
    from S2.ta import add_indicators

    out = {s: add_indicators(simulate_candles(s, "1h", "2023-01-01", "2023-02-08")) for s in SYMBOLS}
    c = out["SOLUSDT"]
    out["SOLUSDT"] = c.loc[(c.index < "2023-01-20") | (c.index >= "2023-01-21")]     # a gap of one day
    return out


def _filters(frames):
    from S1.offline import simulated_symbol_info
    from S6.filters import SymbolFilters

    return {s: SymbolFilters.from_symbol_info(simulated_symbol_info(s, float(f["close"].iloc[-1])))
            for s, f in frames.items()}


def _setup():
    from S4.rules import load_rules
    from S6.config import RiskConfig

    risk = RiskConfig.load("S6/risk.yaml").replace(kill_switch={"max_drawdown": None, "daily_loss_limit": None,
                                                                "max_consecutive_losses": None})
    return load_rules("S4/rules_ta_only.yaml"), risk


@pytest.mark.parametrize("max_open", [1, 2])
def test_replay_equals_the_portfolio_backtest(frames, tmp_path, max_open):
    from S5.costs import Costs
    from S5.portfolio_backtest import prepare_symbol, run_portfolio
    from S7.portfolio_session import replay_portfolio

    rules, risk = _setup()
    filters = _filters(frames)
    inputs = [prepare_symbol(f, rules, symbol=s, risk=risk, filters=filters[s]) for s, f in frames.items()]
    bt = run_portfolio(inputs, risk=risk, interval="1h", max_open=max_open, costs=Costs(fees=0.001, slippage=0.0))
    paper = asyncio.run(replay_portfolio(frames, interval="1h", rules={s: rules for s in frames}, risk=risk,
                                         filters=filters, state_dir=tmp_path / "state", max_open=max_open))
    a = bt.trades
    b = pd.DataFrame(paper["trades"])
    assert len(a) > 5
    assert len(a) == len(b), (len(a), len(b))
    assert a["symbol"].tolist() == b["symbol"].tolist()
    assert (a["entry_time"].to_numpy() == pd.to_datetime(b["entry_time"]).to_numpy()).all()
    assert (a["exit_time"].to_numpy() == pd.to_datetime(b["exit_time"]).to_numpy()).all()
    np.testing.assert_allclose(a["size"], b["qty"], rtol=1e-9)
    np.testing.assert_allclose(a["entry_price"], b["entry_price"], rtol=1e-9)
    assert paper["skipped"].get("max_open", 0) == bt.skips.get("max_open", 0)
    assert paper["equity"] == pytest.approx(bt.final_equity, rel=1e-6)
    # one balance: never more than max_open positions at once
    times = sorted(set(pd.to_datetime(b["entry_time"])) | set(pd.to_datetime(b["exit_time"])))
    for t in times:
        live = ((pd.to_datetime(b["entry_time"]) <= t) & (pd.to_datetime(b["exit_time"]) > t)).sum()
        assert live <= max_open


def test_portfolio_executor_dry_run_cli(settings_env, frames, capsys):
    import json

    from S1.datasets import Dataset, dataset_path, portfolio_path, write_parquet
    from S1.errors import UserError
    from S7.portfolio_executor import main

    for s, f in frames.items():
        write_parquet(f, dataset_path(Dataset(s, "1h", 40), "ta"), metadata={"simulated": True})
    argv = ["--symbols", ",".join(SYMBOLS), "--interval", "1h", "--days", "40", "--rules", "S4/rules_ta_only.yaml",
            "--max-open", "1", "--replay-days", "10", "--name", "trio"]
    with pytest.raises(UserError, match="dry-run"):
        main(argv)
    assert main([*argv, "--dry-run"]) == 0
    doc = json.loads(portfolio_path("trio", "paper").read_text())
    assert doc["simulated"] is True and doc["max_open"] == 1
    assert all(t["symbol"] in SYMBOLS for t in doc["trades"])
    assert doc["equity"] > 0 and "wrote" in capsys.readouterr().out
