"""Kill-switch: each protection at its boundary, the pure mask vs the persisted class,
persistence across restarts, manual reset, fail-closed state files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from S1.errors import UserError
from S6.config import KillSwitchConfig, RiskConfig
from S6.killswitch import (
    KillSwitch,
    _latched,
    _loop,
    first_trip,
    kill_switch_mask,
    kill_switch_series,
    kill_switch_trips,
    to_ns,
)

ONLY_DD = KillSwitchConfig(max_drawdown=0.2, daily_loss_limit=None, max_consecutive_losses=None)
ONLY_DAY = KillSwitchConfig(max_drawdown=None, daily_loss_limit=0.05, max_consecutive_losses=None)
ONLY_STREAK = KillSwitchConfig(max_drawdown=None, daily_loss_limit=None, max_consecutive_losses=3)


def hours(n, start="2024-01-01"):
    return pd.date_range(start, periods=n, freq="h", tz="UTC")


# ------------------------------------------------------------ max drawdown
def test_drawdown_trips_exactly_at_the_limit():
    t = hours(5)
    # peak 125; 125 x 0.8 = 100 exactly -> trips at bar 3
    assert kill_switch_mask([100, 125, 101, 100, 130], t, config=ONLY_DD).tolist() == [True, True, True, False, False]
    # a hair above the limit does not trip
    assert kill_switch_mask([100, 125, 101, 100.001, 90.0 + 10.002], t, config=ONLY_DD).all()
    trip = first_trip([100, 125, 101, 100, 130], t, config=ONLY_DD)
    assert trip.reason == "max_drawdown" and trip.index == 3 and trip.at == t[3]
    assert "20.00%" in trip.detail and "125.00" in trip.detail


def test_drawdown_uses_the_running_peak_not_the_start():
    t = hours(4)
    # falls 30 % from the start before any new high: trips at bar 1
    assert first_trip([100, 70, 200, 150], t, config=ONLY_DD).index == 1
    # rises first, then falls 25 % from the new peak (200 -> 150)
    assert first_trip([100, 120, 200, 150], t, config=ONLY_DD).index == 3


# --------------------------------------------------------------- daily loss
def test_daily_loss_boundary_and_utc_day_baseline():
    # day 1: 100 -> 96 (4 %, no trip); day 2 starts from 96 (the last equity of day 1)
    t = pd.DatetimeIndex(["2024-01-01 10:00", "2024-01-01 23:00", "2024-01-02 00:00", "2024-01-02 05:00"], tz="UTC")
    assert kill_switch_mask([100, 96, 93, 91.2], t, config=ONLY_DAY).tolist() == [True, True, True, False]
    assert kill_switch_mask([100, 96, 93, 91.21], t, config=ONLY_DAY).all()           # 4.99 %: no trip
    # the same fall within one UTC day trips (100 -> 95 = 5 %)
    t1 = hours(4)
    assert kill_switch_mask([100, 97, 96, 95], t1, config=ONLY_DAY).tolist() == [True, True, True, False]
    trip = first_trip([100, 97, 96, 95], t1, config=ONLY_DAY)
    assert trip.reason == "daily_loss" and trip.until is None


def test_daily_loss_next_day_resume():
    cfg = ONLY_DAY.model_copy(update={"daily_loss_resume": "next_day"})
    t = pd.DatetimeIndex(["2024-01-01 10:00", "2024-01-01 12:00", "2024-01-01 23:00", "2024-01-02 00:00",
                          "2024-01-02 01:00"], tz="UTC")
    allowed, trips = kill_switch_trips([100, 94, 95, 95, 90], t, config=cfg)
    # tripped at 12:00, paused until 2024-01-02 00:00, then 95 -> 90 is 5.3 % from the new day's start
    assert allowed.tolist() == [True, False, False, True, False]
    assert [tr.index for tr in trips] == [1, 4]
    assert trips[0].until == pd.Timestamp("2024-01-02", tz="UTC")


# ------------------------------------------------------------ losing streak
def test_loss_streak_boundary_and_breakeven_resets():
    t = hours(6)
    exits = t[[0, 1, 2, 3, 4]]
    # -, -, 0 (ends the streak), -, - : never 3 in a row
    assert kill_switch_mask(np.full(6, 100.0), t, config=ONLY_STREAK, trade_exit_times=exits,
                            trade_pnl=[-1, -1, 0, -1, -1]).all()
    # -, -, - : the third loss trips at its exit bar
    m = kill_switch_mask(np.full(6, 100.0), t, config=ONLY_STREAK, trade_exit_times=exits,
                         trade_pnl=[5, -1, -1, -1, 2])
    assert m.tolist() == [True, True, True, False, False, False]


def test_trade_between_bars_applies_at_the_next_bar():
    t = hours(4)
    exits = pd.DatetimeIndex(["2024-01-01 00:10", "2024-01-01 00:20", "2024-01-01 01:30"], tz="UTC")
    trip = first_trip(np.full(4, 100.0), t, config=ONLY_STREAK, trade_exit_times=exits, trade_pnl=[-1, -1, -1])
    assert trip.index == 2 and trip.at == exits[2]


def test_loss_streak_timed_pause():
    cfg = ONLY_STREAK.model_copy(update={"loss_streak_pause_hours": 2.0})
    t = hours(8)
    exits = t[[0, 1, 2, 5, 6]]
    allowed, trips = kill_switch_trips(np.full(8, 100.0), t, config=cfg, trade_exit_times=exits,
                                       trade_pnl=[-1, -1, -1, -1, -1])
    # trips at bar 2, resumes at bar 4 (2 h later) with the streak cleared: 2 more losses do not trip
    assert allowed.tolist() == [True, True, False, False, True, True, True, True]
    assert len(trips) == 1


# -------------------------------------------------- pure paths agree
def _random_case(rng, n=600):
    steps = rng.normal(0, 0.01, n)
    steps[rng.integers(0, n, 3)] -= rng.uniform(0.02, 0.08, 3)
    equity = 10_000 * np.exp(np.cumsum(steps))
    t = hours(n)
    k = rng.integers(5, 60)
    exits = np.sort(rng.choice(n + 10, size=k, replace=False))
    exits = pd.DatetimeIndex(t[0] + pd.to_timedelta(exits, unit="h"))
    pnl = rng.choice([-1.0, 1.0, 0.0], size=k, p=[0.55, 0.4, 0.05])
    return equity, t, exits, pnl


def test_vectorised_latched_path_equals_the_state_machine_loop():
    rng = np.random.default_rng(11)
    cfgs = [KillSwitchConfig(max_drawdown=0.06, daily_loss_limit=0.03, max_consecutive_losses=4),
            KillSwitchConfig(max_drawdown=0.04, daily_loss_limit=None, max_consecutive_losses=None),
            KillSwitchConfig(max_drawdown=None, daily_loss_limit=0.02, max_consecutive_losses=None),
            KillSwitchConfig(max_drawdown=None, daily_loss_limit=None, max_consecutive_losses=3)]
    tripped = 0
    for _ in range(40):
        e, t, exits, pnl = _random_case(rng)
        tt = t.as_unit("ns").asi8
        tx = exits.as_unit("ns").asi8
        for cfg in cfgs:
            a1, tr1 = _latched(e, tt, tx, pnl, cfg)
            a2, tr2 = _loop(e, tt, tx, pnl, cfg)
            assert a1.tolist() == a2.tolist()
            assert [(x.reason, x.index, x.at) for x in tr1] == [(x.reason, x.index, x.at) for x in tr2[:1]]
            tripped += bool(tr1)
    assert tripped > 40   # the cases do exercise trips


def test_stateful_class_matches_the_mask(tmp_path):
    rng = np.random.default_rng(5)
    for cfg in (KillSwitchConfig(max_drawdown=0.05, daily_loss_limit=0.03, max_consecutive_losses=4),
                KillSwitchConfig(max_drawdown=0.05, daily_loss_limit=0.02, daily_loss_resume="next_day",
                                 max_consecutive_losses=3, loss_streak_pause_hours=5)):
        e, t, exits, pnl = _random_case(rng, n=150)
        mask = kill_switch_mask(e, t, config=cfg, trade_exit_times=exits, trade_pnl=pnl)
        ks = KillSwitch(cfg, path=tmp_path / f"ks_{cfg.latched}.json")
        live, k = [], 0
        for i in range(len(e)):
            while k < len(exits) and exits[k] <= t[i]:
                ks.record_trade(pnl[k], at=exits[k])
                k += 1
            live.append(ks.update_equity(e[i], at=t[i]))
        assert live == mask.tolist()
        assert not all(live)


def test_series_wrapper_and_input_checks():
    t = hours(5)
    eq = pd.Series([100, 125, 101, 100, 130.0], index=t)
    trades = pd.DataFrame({"exit_time": t[[2, 1]], "pnl": [-1.0, -1.0]})   # unsorted on purpose
    s = kill_switch_series(eq, trades, config=RiskConfig())
    assert s.index.equals(t) and s.tolist() == [True, True, True, False, False]
    with pytest.raises(UserError, match="strictly increasing"):
        kill_switch_mask([1, 2], t[[1, 0]], config=ONLY_DD)
    with pytest.raises(UserError, match="NaN"):
        kill_switch_mask([1, np.nan], t[:2], config=ONLY_DD)
    with pytest.raises(UserError, match="go together"):
        kill_switch_mask([1, 2], t[:2], config=ONLY_DD, trade_pnl=[1.0])


# ---------------------------------------------------- persisted KillSwitch
def test_trip_persists_across_restarts_until_reset(tmp_path):
    path = tmp_path / "state" / "ks.json"
    trips = []
    ks = KillSwitch(ONLY_DD, path=path, on_trip=trips.append)
    assert ks.update_equity(10_000, at="2024-01-01 00:00")
    assert ks.update_equity(12_000, at="2024-01-01 01:00")
    assert not ks.update_equity(9_600, at="2024-01-01 02:00")         # 12,000 x 0.8
    assert len(trips) == 1 and trips[0].reason == "max_drawdown"
    # equity recovers: still tripped (latched), and no second alert
    assert not ks.update_equity(13_000, at="2024-01-01 03:00")
    assert len(trips) == 1
    # a new process sees the trip
    again = KillSwitch(ONLY_DD, path=path)
    assert not again.allows_entries(at="2024-02-01")
    st = again.state
    assert st.tripped and st.reason == "max_drawdown" and st.peak == 13_000
    saved = json.loads(path.read_text())
    assert saved["tripped"] and saved["events"][-1]["event"] == "trip"
    # a person resets; the peak restarts from the last equity (no instant re-trip)
    before = again.reset(by="alice", note="checked the strategy")
    assert before.tripped
    assert KillSwitch(ONLY_DD, path=path).allows_entries()
    assert ks.update_equity(11_000, at="2024-01-01 04:00")              # 13,000 -> 11,000 is 15 %
    ev = json.loads(path.read_text())["events"]
    reset = [e for e in ev if e["event"] == "reset"][-1]
    assert reset["by"] == "alice" and reset["note"] == "checked the strategy" and reset["at"]


def test_reset_from_another_process_reaches_a_running_instance(tmp_path):
    path = tmp_path / "ks.json"
    running = KillSwitch(ONLY_STREAK, path=path)
    for i in range(3):
        running.record_trade(-5, at=f"2024-01-01 0{i}:00")
    assert not running.allows_entries()
    KillSwitch(ONLY_STREAK, path=path).reset(by="bob")
    assert running.allows_entries()
    assert running.state.loss_streak == 0
    assert running.record_trade(-5) and running.record_trade(-5)        # counting restarts from zero
    assert not running.record_trade(-5)


def test_manual_trip_and_timed_pause(tmp_path):
    ks = KillSwitch(ONLY_STREAK.model_copy(update={"loss_streak_pause_hours": 1.0}), path=tmp_path / "ks.json")
    for i in range(3):
        ks.record_trade(-1, at=f"2024-01-01 00:0{i}")
    assert not ks.allows_entries(at="2024-01-01 00:30")
    assert ks.allows_entries(at="2024-01-01 01:02")                     # 1 h after the trip
    assert json.loads(ks.path.read_text())["events"][-1]["event"] == "resume"
    trip = ks.trip("maintenance", by="carol", at="2024-01-01 02:00")
    assert trip.reason == "manual" and "carol" in trip.detail
    assert not ks.allows_entries(at="2030-01-01")                       # manual trips never expire


def test_unreadable_state_fails_closed(tmp_path, caplog):
    path = tmp_path / "ks.json"
    path.write_text("{half a file")
    ks = KillSwitch(ONLY_DD, path=path)
    with caplog.at_level("ERROR"):
        assert not ks.allows_entries()
        assert not ks.update_equity(100)
    assert "unreadable" in caplog.text
    assert path.read_text() == "{half a file"                            # kept for a person to look at
    ks.reset(by="dave")
    assert ks.allows_entries()
    assert list(tmp_path.glob("ks.json.unreadable-*"))


def test_to_ns_accepts_the_usual_time_types():
    ns = to_ns("2024-01-01T00:00:00Z")
    assert ns == to_ns(pd.Timestamp("2024-01-01", tz="UTC")) == to_ns(pd.Timestamp("2024-01-01").to_pydatetime())
    assert to_ns(ns) == ns
