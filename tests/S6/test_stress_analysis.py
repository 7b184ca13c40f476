"""Stress tests: resampling statistics, worst moves and gapped stops (hand-computed on a
planted crash), reproducibility, the S5 file contract and the CLI outputs."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from S1.cli import run
from S1.datasets import Dataset
from S1.errors import UserError
from S6.config import RiskConfig
from S6.stress_analysis import (
    equity_returns,
    gap_replay,
    infer_initial_equity,
    load_backtest,
    max_drawdown,
    run_stress,
    simulate_paths,
    validate_trades,
    worst_moves,
)


# --------------------------------------------------------------- resampling
def test_max_drawdown_hand_computed():
    assert max_drawdown(np.array([100, 120, 90, 130, 65.0])) == pytest.approx(0.5)
    np.testing.assert_allclose(max_drawdown(np.array([[1, 2, 1.0], [1, 0.9, 1.2]])), [0.5, 0.1])


def test_shuffle_keeps_final_equity_bootstrap_does_not():
    rng = np.random.default_rng(0)
    r = rng.normal(0.002, 0.02, 120)
    shuf = simulate_paths(r, n_paths=2000, method="shuffle", seed=1)
    boot = simulate_paths(r, n_paths=2000, method="bootstrap", seed=1)
    np.testing.assert_allclose(shuf.final, np.prod(1 + r), rtol=1e-12)
    assert shuf.max_dd.std() > 0                              # same ending, different paths
    assert boot.final.std() > 0.05
    # bootstrap: E[final] = (1 + mean r)^n; the sample mean is within 4 standard errors
    expected = (1 + r.mean()) ** len(r)
    se = boot.final.std() / np.sqrt(len(boot.final))
    assert abs(boot.final.mean() - expected) < 4 * se


def test_shuffle_drawdown_distribution_matches_enumeration():
    # orders of (-20 %, -20 %, +50 %): the rise between the falls gives a 20 % drawdown
    # (1 order in 3); the other two orders compound the falls: 1 - 0.8^2 = 36 %
    s = simulate_paths(np.array([-0.2, -0.2, 0.5]), n_paths=6000, method="shuffle", seed=3)
    assert set(np.round(s.max_dd, 6)) == {0.2, 0.36}
    assert np.mean(np.isclose(s.max_dd, 0.36)) == pytest.approx(2 / 3, abs=0.03)


def test_ruin_probability_and_shock():
    # (-60 %, +100 %): half the orders dip to 0.4 first -> ruin at 50 %, none at 30 %
    s = simulate_paths(np.array([-0.6, 1.0]), n_paths=4000, method="shuffle", seed=2)
    assert s.summary(ruin_level=0.5, kill_dd=None)["prob_ruin"] == pytest.approx(0.5, abs=0.04)
    assert s.summary(ruin_level=0.3, kill_dd=None)["prob_ruin"] == 0.0
    # flat trades plus a -50 % shock: every path ends at 0.5 with a 50 % drawdown
    sh = simulate_paths(np.zeros(10), n_paths=500, method="bootstrap", seed=2, shock=-0.5)
    np.testing.assert_allclose(sh.final, 0.5)
    np.testing.assert_allclose(sh.max_dd, 0.5)
    assert sh.sample.shape[1] == 12                          # start + 10 trades + the shock
    # a loss beyond -100 % cannot push spot equity below zero
    assert simulate_paths(np.array([-1.5]), n_paths=100, method="shuffle", seed=0).final.min() == 0.0


def test_seeded_and_reproducible():
    r = np.random.default_rng(4).normal(0, 0.03, 50)
    a = simulate_paths(r, n_paths=2500, method="bootstrap", seed=9)
    b = simulate_paths(r, n_paths=2500, method="bootstrap", seed=9)
    c = simulate_paths(r, n_paths=2500, method="bootstrap", seed=10)
    np.testing.assert_array_equal(a.final, b.final)
    np.testing.assert_array_equal(a.max_dd, b.max_dd)
    assert not np.array_equal(a.final, c.final)


def test_equity_returns_compound_back_to_the_pnl():
    trades = pd.DataFrame({"pnl": [100.0, -50.0, 25.0]})
    r = equity_returns(trades, 1000.0)
    np.testing.assert_allclose(r, [0.1, -50 / 1100, 25 / 1050])
    assert 1000 * np.prod(1 + r) == pytest.approx(1075.0)


# ------------------------------------------------------ worst moves / gaps
def flat_candles(n=80, start="2024-01-01", crash_at=50, crash_open=100.0, crash_low=70.0, drop=None):
    """Price 100 (high 101, low 99 -> ATR exactly 2) with one crash bar."""
    idx = pd.date_range(start, periods=n, freq="h", tz="UTC")
    df = pd.DataFrame({"open": 100.0, "high": 101.0, "low": 99.0, "close": 100.0, "volume": 1.0,
                       "close_time": idx + pd.Timedelta(hours=1) - pd.Timedelta(milliseconds=1),
                       "quote_volume": 100.0, "trades": 10, "taker_buy_base": 0.5, "taker_buy_quote": 50.0},
                      index=pd.DatetimeIndex(idx, name="open_time"))
    df.iloc[crash_at, df.columns.get_loc("open")] = crash_open
    df.iloc[crash_at, df.columns.get_loc("low")] = crash_low
    df.iloc[crash_at, df.columns.get_loc("high")] = max(crash_open, 101.0)
    df.iloc[crash_at, df.columns.get_loc("close")] = 75.0
    if drop is not None:
        df = df.drop(df.index[drop])
    return df


def test_stop_filled_at_the_stop_vs_gapped_to_the_low():
    c = flat_candles()
    moves = worst_moves(c, "1h", window="1h", top=3)
    assert moves.iloc[0]["start"] == c.index[50] and moves.iloc[0]["move"] == pytest.approx(-0.30)
    g = gap_replay(c, moves.head(1), config=RiskConfig(), max_exposure=0.5).iloc[0]
    # ATR 2, k 2: stop 96 (4 = 1 R below 100); the bar opens at 100 so the stop fills at 96
    assert g["atr"] == pytest.approx(2.0) and g["stop"] == pytest.approx(96.0)
    assert g["stop_hit"] and not g["gapped_open"]
    assert g["loss_R_stop"] == pytest.approx(1.0) and g["loss_R_gapped"] == pytest.approx(7.5)  # (100-70)/4
    # size = 1 % / 4 = 0.0025 per unit of equity; fees 0.1 % per side
    assert g["loss_pct_stop"] == pytest.approx(0.0025 * 4 + 0.001 * 0.0025 * 196)
    assert g["loss_pct_gapped"] == pytest.approx(0.0025 * 30 + 0.001 * 0.0025 * 170)
    assert g["loss_pct_max_exposure"] == pytest.approx(0.5 * 0.30)


def test_gap_open_below_the_stop():
    c = flat_candles(crash_open=80.0)                         # the crash bar opens below the 96 stop
    moves = worst_moves(c, "1h", window="24h", top=1)
    m = moves.iloc[0]
    assert m["move"] == pytest.approx(-0.30) and m["bars"] == 24 and m["start"] == c.index[27]
    g = gap_replay(c, moves, config=RiskConfig(), max_exposure=1.0).iloc[0]
    assert g["gapped_open"] and g["fill_stop"] == 80.0 and g["loss_R_stop"] == pytest.approx(5.0)
    assert g["loss_R_gapped"] == pytest.approx(7.5)


def test_windows_across_a_gap_and_coarse_candles_are_skipped():
    c = flat_candles(drop=45)                                 # a missing hour before the crash
    m = worst_moves(c, "1h", window="24h", top=1).iloc[0]
    assert m["start"] == pd.Timestamp("2024-01-01 00:00", tz="UTC") + pd.Timedelta(hours=46)
    assert worst_moves(c, "4h", window="1h").empty
    assert worst_moves(c.head(10), "1h", window="24h").empty
    moves = worst_moves(flat_candles(), "1h", window="1h", top=4)
    starts = moves["i"].tolist()
    assert len(starts) == 4 and len(set(starts)) == 4        # non-overlapping


# --------------------------------------------------------- S5 contract
def test_validate_trades_contract():
    with pytest.raises(UserError, match=r"missing columns \['return'\]"):
        validate_trades(pd.DataFrame({c: [] for c in ("entry_time", "exit_time", "side", "size", "entry_price",
                                                      "exit_price", "fees", "pnl")}))


def test_load_backtest_and_initial_equity(sim_backtest):
    bt = load_backtest(Dataset("BTCUSDT", "1h", 90))
    assert len(bt.trades) == len(sim_backtest["trades"]) > 50
    assert bt.trades["exit_time"].is_monotonic_increasing
    assert bt.initial_equity == pytest.approx(10_000.0)      # the strategy's cash before the first fee
    # without the first trade, the initial equity is the equity just before the second entry
    eq, trades = sim_backtest["equity"], sim_backtest["trades"]
    second_entry = trades["entry_time"].iloc[1]
    assert infer_initial_equity(trades.iloc[1:], eq) == float(eq[eq.index < second_entry].iloc[-1])


def test_missing_trades_names_the_s5_command(settings_env, capsys):
    from S6.stress import main

    code = run(main, ["--symbol", "ETHUSDC", "--interval", "4h", "--days", "30"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert "python S5/backtest.py --symbol ETHUSDC --interval 4h --days 30" in err


def test_run_stress_reproducible_and_sane(sim_backtest):
    bt = load_backtest(Dataset("BTCUSDT", "1h", 90))
    cfg = RiskConfig()
    a = run_stress(bt, sim_backtest["candles"], config=cfg, paths=600, seed=5)
    b = run_stress(bt, sim_backtest["candles"], config=cfg, paths=600, seed=5)
    c = run_stress(bt, sim_backtest["candles"], config=cfg, paths=600, seed=6)
    strip = lambda s: {k: v for k, v in s.items() if k != "generated_at"}  # noqa: E731
    assert json.dumps(strip(a.summary), default=str) == json.dumps(strip(b.summary), default=str)
    assert a.summary["bootstrap"] != c.summary["bootstrap"]
    s = a.summary
    hist_final = s["historical"]["final_equity"]
    assert hist_final == pytest.approx(sim_backtest["equity"].iloc[-1], rel=1e-9)
    assert s["shuffle"]["final_equity"]["p5"] == pytest.approx(hist_final) == s["shuffle"]["final_equity"]["p95"]
    assert s["bootstrap"]["final_equity"]["p5"] < s["bootstrap"]["final_equity"]["p95"]
    for scen in ("bootstrap", "shuffle", "shock"):
        q = s[scen]["max_drawdown"]
        assert 0 <= q["p5"] <= q["p50"] <= q["p95"] <= 1 and 0 <= s[scen]["prob_ruin"] <= 1
    # a shock can only make drawdowns worse
    assert s["shock"]["max_drawdown"]["p50"] > s["bootstrap"]["max_drawdown"]["p50"]
    assert a.shuffle.max_dd.min() <= s["historical"]["max_drawdown_trades"] + 1e-12 <= a.shuffle.max_dd.max() + 1e-12
    assert set(s["worst_moves"]) == {"1h", "24h"} and len(s["worst_moves"]["24h"]) == cfg.stress.top_moves
    assert s["notes"] == []


def test_stress_cli_writes_offline_reports(sim_backtest, capsys):
    from S1.datasets import Dataset, dataset_path, report_path
    from S6.stress import main

    assert main(["--symbol", "BTCUSDT", "--interval", "1h", "--days", "90", "--paths", "300", "--seed", "1"]) == 0
    out = capsys.readouterr().out
    assert "bootstrap" in out and "worst 24h move" in out
    summary = json.loads(dataset_path(Dataset("BTCUSDT", "1h", 90), kind="stress").read_text(),
                         parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    assert summary["paths"] == 300 and summary["seed"] == 1
    html = report_path(Dataset("BTCUSDT", "1h", 90), "stress", "html").read_text()
    # plotly.js once per reports folder (beside the page): the report opens offline
    assert "<script src='plotly.min.js'" in html and "Plotly.newPlot" in html
    assert (report_path(Dataset("BTCUSDT", "1h", 90), "stress", "html").parent / "plotly.min.js").exists()
    assert report_path(Dataset("BTCUSDT", "1h", 90), "stress", "png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stress_without_candles_still_reports(sim_backtest, capsys):
    from S1.datasets import Dataset, dataset_path
    from S6.stress import main

    dataset_path(Dataset("BTCUSDT", "1h", 90)).unlink()
    assert main(["--symbol", "BTCUSDT", "--interval", "1h", "--days", "90", "--paths", "200", "--no-html", "--no-png"]) == 0
    summary = json.loads(dataset_path(Dataset("BTCUSDT", "1h", 90), kind="stress").read_text())
    assert summary["worst_moves"] == {} and summary["shock"] is None
    assert any("no candle file" in n for n in summary["notes"])
