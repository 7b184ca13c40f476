"""S6's sizing, stops, Kelly and kill-switch applied by the engine (S5.hooks)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from S1.errors import UserError
from S5.engine import Costs, run_backtest
from S5.hooks import load_risk, risk_hooks
from S6.config import RiskConfig
from S6.sizing import kelly_fraction, kelly_stats

OFF = {"max_drawdown": None, "daily_loss_limit": None, "max_consecutive_losses": None}
COSTS = Costs(fees=0.001, slippage=0.0005)


def _cfg(**sections) -> RiskConfig:
    base = {"kill_switch": OFF}
    base.update(sections)
    return RiskConfig().replace(**base)


def _equity_before(res, entry_bar: int) -> float:
    return float(res.equity.iloc[entry_bar - 1]) if entry_bar > 0 else res.simulation.init_cash


def test_atr_sizing_buys_exactly_r_equity_over_k_atr(sim_signals):
    cfg = _cfg(sizing={"method": "atr", "risk_per_trade": 0.002}, stops={"atr_k": 2.0, "take_profit_rr": 2.0})
    res = run_backtest(sim_signals, interval="1h", costs=COSTS, risk=cfg)
    det = res.trade_details
    assert len(det) > 10
    atr = sim_signals["atr14"].to_numpy()
    checked = 0
    for _, t in det.iterrows():
        e = int(t["entry_bar"])
        eq = _equity_before(res, e)
        want = 0.002 * eq / (2.0 * atr[e - 1])          # S6: size = R x equity / (k x ATR at the decision)
        if want * t["entry_price"] * 1.001 < eq:         # not capped by the cash
            assert t["size"] == pytest.approx(want, rel=1e-9)
            checked += 1
    assert checked > 5
    # stop and take-profit levels: fill -/+ k x ATR (x rr); stop-market exits pay the slippage
    for _, t in det[det["exit_reason"].isin(["stop_loss", "take_profit"])].iterrows():
        e, x = int(t["entry_bar"]), int(t["exit_bar"])
        dist = 2.0 * atr[e - 1]
        level = t["entry_price"] - dist if t["exit_reason"] == "stop_loss" else t["entry_price"] + 2.0 * dist
        o = sim_signals["open"].iloc[x]
        gapped = (o <= level) if t["exit_reason"] == "stop_loss" else (o >= level)
        fill = (o if (gapped and x > e) else level) * (1 - 0.0005)
        assert t["exit_price"] == pytest.approx(fill, rel=1e-9)


def test_fixed_fraction_notional(sim_signals):
    cfg = _cfg(sizing={"method": "fixed", "fixed_fraction": 0.25}, stops={"stop_loss_pct": 0.003,
                                                                            "take_profit_rr": None})
    res = run_backtest(sim_signals, interval="1h", costs=COSTS, risk=cfg)
    for _, t in res.trade_details.iterrows():
        eq = _equity_before(res, int(t["entry_bar"]))
        assert t["size"] * t["entry_price"] == pytest.approx(0.25 * eq, rel=1e-9)
    stops = res.trade_details[res.trade_details["exit_reason"] == "stop_loss"]
    assert len(stops) and (stops["exit_price"] <= stops["entry_price"] * 0.997 + 1e-9).all()


def test_hooks_use_s6_stop_functions(sim_signals):
    from S6.sizing import stop_price, take_profit_price

    cfg = _cfg(stops={"atr_k": 1.5, "take_profit_rr": 3.0})
    h = risk_hooks(sim_signals, cfg, interval="1h", fees=0.001, slippage=0.0005)
    d = np.flatnonzero(sim_signals["entry"].to_numpy()[:-1])
    fill = sim_signals["open"].to_numpy()[d + 1] * 1.0005
    atr = sim_signals["atr14"].to_numpy()[d]
    ok = np.isfinite(atr)
    stop = stop_price(entry=fill[ok], atr=atr[ok], k=1.5)
    take = take_profit_price(entry=fill[ok], stop=stop, rr=3.0)
    np.testing.assert_allclose(fill[ok] * (1 - h.sl_stop[d][ok]), stop, rtol=1e-12)
    np.testing.assert_allclose(fill[ok] * (1 + h.tp_stop[d][ok]), take, rtol=1e-12)
    assert np.isnan(h.sl_stop[np.setdiff1d(np.arange(len(sim_signals)), d)]).all()


def _edge_frame(n=1500, seed=5) -> pd.DataFrame:
    """Random-walk prices with entries placed (from hindsight, as test data only) so that
    about two trades in three win: a strategy with an edge for Kelly to size."""
    rng = np.random.default_rng(seed)
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[close[0], close[:-1]]
    t = pd.date_range("2024-01-01", periods=n, freq="h", tz="UTC")
    entry = np.zeros(n, dtype=bool)
    exit_ = np.zeros(n, dtype=bool)
    i = 5
    while i < n - 8:
        good = close[i + 4] > open_[i + 1] * 1.004   # the exit decided at i + 4 fills at open[i + 5] = close[i + 4]
        if good or rng.random() < 0.3:
            entry[i], exit_[i + 4] = True, True
            i += 7
        else:
            i += 1
    return pd.DataFrame({"open": open_, "high": np.maximum(open_, close) * 1.001,
                         "low": np.minimum(open_, close) * 0.999, "close": close, "entry": entry, "exit": exit_,
                         "atr14": close * 0.01}, index=t)


def test_kelly_sizes_from_trades_closed_before_the_decision():
    f = _edge_frame()
    cfg = _cfg(sizing={"method": "kelly", "kelly_min_trades": 10, "kelly_fraction": 0.5, "kelly_cap": 0.5},
               stops={"stop_loss_pct": 0.5, "take_profit_rr": None})
    first = run_backtest(f, interval="1h", costs=COSTS, sl_stop=0.5)
    res = run_backtest(f, interval="1h", costs=COSTS, risk=cfg)
    fd = first.trade_details
    assert len(fd) > 30
    taken = set(res.trade_details["entry_bar"])
    sized = 0
    for _, t in fd.iterrows():
        e = int(t["entry_bar"])
        known = fd[fd["exit_bar"] <= e - 1]["return"].to_numpy()
        if len(known) < 10:
            assert e not in taken        # no position before 10 trades have closed
            continue
        p, b, _ = kelly_stats(known)
        f_star = float(kelly_fraction(win_rate=p, payoff=b, fraction=0.5, cap=0.5))
        if f_star <= 0:
            assert e not in taken
            continue
        row = res.trade_details[res.trade_details["entry_bar"] == e].iloc[0]
        eq = _equity_before(res, e)
        assert row["size"] * row["entry_price"] == pytest.approx(f_star * eq, rel=1e-9)
        sized += 1
    assert sized > 10


def test_kill_switch_stops_entries_and_flattens(sim_signals):
    plain = run_backtest(sim_signals, interval="1h", costs=COSTS)
    cfg = _cfg(kill_switch={"max_drawdown": 0.04, "daily_loss_limit": None, "max_consecutive_losses": None,
                            "flatten_on_trip": True})
    res = run_backtest(sim_signals, interval="1h", costs=COSTS, kill_switch=cfg.kill_switch, flatten_on_trip=True)
    assert len(res.kill_switch) == 1 and res.kill_switch[0]["reason"] == "max_drawdown"
    k = res.kill_switch[0]["index"]
    # before (and at) the trip nothing changed; after it no new entry
    np.testing.assert_allclose(res.equity.iloc[:k + 1], plain.equity.iloc[:k + 1], rtol=1e-12)
    assert (res.trade_details["entry_bar"] <= k).all()
    assert plain.equity.iloc[k] <= plain.equity.iloc[:k + 1].max() * 0.96 + 1e-9
    # the trip S6 computes on the final path is the same one
    from S6.killswitch import first_trip

    t = res.trades.sort_values("exit_time")
    trip = first_trip(res.equity.to_numpy(), res.equity.index, config=cfg.kill_switch,
                      trade_exit_times=pd.DatetimeIndex(t["exit_time"]), trade_pnl=t["pnl"].to_numpy())
    assert trip.index == k
    if res.in_position is not None and plain.in_position[k]:
        last = res.trade_details.iloc[-1]
        assert last["exit_bar"] == k + 1 and last["exit_reason"] == "kill_switch"
        assert last["exit_price"] == pytest.approx(sim_signals["open"].iloc[k + 1] * (1 - 0.0005))


def test_kill_switch_loss_streak_through_risk_config(sim_signals):
    cfg = _cfg(kill_switch={"max_drawdown": None, "daily_loss_limit": None, "max_consecutive_losses": 3})
    res = run_backtest(sim_signals, interval="1h", costs=COSTS, risk=cfg)
    assert res.kill_switch and res.kill_switch[0]["reason"] == "loss_streak"
    pnl = res.trade_details.sort_values("exit_bar")["pnl"].to_numpy()
    streak = 0
    first3 = None
    for i, p in enumerate(pnl):
        streak = streak + 1 if p < 0 else 0
        if streak == 3:
            first3 = i
            break
    assert first3 is not None
    k = res.kill_switch[0]["index"]
    assert (res.trade_details["entry_bar"] <= k).all()
    assert res.params["risk"]["kill_switch"]["max_consecutive_losses"] == 3


def test_timed_resume_lets_entries_back():
    f = _edge_frame(seed=9)
    cfg = _cfg(kill_switch={"max_drawdown": None, "daily_loss_limit": None, "max_consecutive_losses": 2,
                            "loss_streak_pause_hours": 24, "flatten_on_trip": False})
    res = run_backtest(f, interval="1h", costs=COSTS, risk=cfg.replace(sizing={"method": "fixed",
                                                                               "fixed_fraction": 1.0}))
    assert len(res.kill_switch) >= 2
    trips = [pd.Timestamp(t["at"]) for t in res.kill_switch]
    for _, t in res.trade_details.iterrows():
        decided = f.index[int(t["entry_bar"]) - 1]
        assert not any(at <= decided < at + pd.Timedelta(hours=24) for at in trips)


def test_load_risk_inputs(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("sizing: {method: fixed, fixed_fraction: 0.2}\n")
    assert load_risk(str(p)).sizing.fixed_fraction == 0.2
    assert load_risk(None) is None
    with pytest.raises(UserError, match="RiskConfig"):
        load_risk(3)
    with pytest.raises(UserError, match="does not exist"):
        load_risk(tmp_path / "missing.yaml")


def test_kill_switch_trip_in_a_position_flattens_at_the_next_open():
    from S6.config import KillSwitchConfig

    from .conftest import bars_frame

    o = [100, 100, 100, 98, 96, 93, 95, 97, 99, 101.0]
    c = [100, 100, 98, 96, 94, 94, 96, 98, 100, 102.0]
    f = bars_frame(o, [max(a, b) for a, b in zip(o, c)], [min(a, b) for a, b in zip(o, c)], c,
                   entry=[1, 7], exit=[])
    ks = KillSwitchConfig(max_drawdown=0.05, daily_loss_limit=None, max_consecutive_losses=None)
    res = run_backtest(f, interval="1h", costs=Costs(0.0, 0.0), init_cash=1000.0, kill_switch=ks,
                       flatten_on_trip=True)
    assert res.kill_switch[0]["index"] == 4 and res.kill_switch[0]["reason"] == "max_drawdown"
    (t,) = res.trade_details.itertuples()
    assert (t.entry_bar, t.exit_bar, t.exit_price, t.exit_reason) == (2, 5, 93.0, "kill_switch")
    assert res.equity.iloc[-1] == pytest.approx(1000 * 93 / 100)      # no re-entry at bar 8
    held = run_backtest(f, interval="1h", costs=Costs(0.0, 0.0), init_cash=1000.0, kill_switch=ks,
                        flatten_on_trip=False)
    assert held.trade_details["exit_reason"].tolist() == ["end_of_test"] and len(held.trades) == 1
