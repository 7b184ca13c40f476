"""Tuning one rule set on a portfolio (S5/portfolio_optimize.py): the trial objective is the
portfolio backtest on the training bars only, the best params are the study's, and the
test split starts flat at the split time."""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture(scope="module")
def frames():
    from S1.local.simulated import simulate_candles
    from S2.ta import add_indicators

    return {s: add_indicators(simulate_candles(s, "1h", "2023-01-01", "2023-03-15")) for s in ("ETHUSDT", "BNBUSDT")}


def test_portfolio_search_uses_only_the_training_bars(frames):
    from S4.rules import load_rules
    from S5.optimizer import OptimizeConfig
    from S5.portfolio_optimize import optimize_portfolio
    from S6.config import RiskConfig

    risk = RiskConfig.load("S6/risk.yaml").replace(kill_switch={"max_drawdown": None, "daily_loss_limit": None,
                                                                "max_consecutive_losses": None})
    cfg = OptimizeConfig(n_trials=6, min_trades=2, risk=risk, objective="total_return")
    rules = load_rules("S4/rules_ta_only.yaml")
    res = optimize_portfolio(frames, rules, interval="1h", max_open=1, config=cfg)
    assert set(res.best_params) == set(rules.param_space())
    # the best trial's value is the in-sample portfolio's metric, recomputed
    assert res.in_sample.metrics["total_return"] == pytest.approx(res.best_value, rel=1e-12)
    assert res.in_sample.equity.index[-1] < res.split_time <= res.out_of_sample.equity.index[0]
    assert res.out_of_sample.equity["equity"].iloc[0] <= cfg.init_cash * 1.0 + 1e-9   # starts flat with the cash
    for r in (res.in_sample, res.out_of_sample):
        assert r.open_counts.max() <= 1 and (r.equity["cash"] >= 0).all()
    assert res.counts.get("complete", 0) + res.counts.get("pruned", 0) == 6
    assert np.isfinite(res.comparison().loc["total_return"].astype(float)).all()


def test_optimize_cli_with_symbols(settings_env, frames, capsys):
    import json

    from S1.datasets import Dataset, data_dir, dataset_path, write_parquet
    from S5.optimize import main

    for s, f in frames.items():
        write_parquet(f, dataset_path(Dataset(s, "1h", 60), "ta"), metadata={"simulated": True})
    assert main(["--symbols", "ETHUSDT,BNBUSDT", "--max-open", "1", "--interval", "1h", "--days", "60",
                 "--rules", "S4/rules_ta_only.yaml", "--trials", "3", "--min-trades", "1",
                 "--objective", "total_return"]) == 0
    doc = json.loads((data_dir() / "portfolio_ethusdt_bnbusdt_optimize.json").read_text())
    assert doc["simulated"] is True and doc["trials"] and set(doc["best_params"])
    assert "best params" in capsys.readouterr().out
    from S1.errors import UserError

    with pytest.raises(UserError, match="--max-open"):
        main(["--symbols", "ETHUSDT,BNBUSDT", "--interval", "1h", "--days", "60"])


def test_portfolio_walk_forward_cli(settings_env, frames, capsys):
    """Each fold's test window starts flat with the previous window's final equity; the JSON has every fold."""
    import json

    from S1.datasets import Dataset, dataset_path, portfolio_path, write_parquet
    from S5.optimize import main

    for s, f in frames.items():
        write_parquet(f, dataset_path(Dataset(s, "1h", 60), "ta"), metadata={"simulated": True})
    assert main(["--symbols", "ETHUSDT,BNBUSDT", "--max-open", "2", "--interval", "1h", "--days", "60",
                 "--rules", "S4/rules_ta_only.yaml", "--trials", "2", "--min-trades", "1",
                 "--walk-forward", "2", "--objective", "total_return"]) == 0
    doc = json.loads(portfolio_path("ethusdt_bnbusdt", "walkforward").read_text())
    assert [f["fold"] for f in doc["folds"]] == [1, 2]
    assert doc["folds"][0]["test"][1] < doc["folds"][1]["test"][0]
    growth = np.prod([1 + f["test_metrics"]["total_return"] for f in doc["folds"]])
    assert doc["metrics"]["total_return"] == pytest.approx(growth - 1, rel=1e-9, abs=1e-12)
    assert "stitched" in capsys.readouterr().out
