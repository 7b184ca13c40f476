"""S4.decide: the one trading decision -- its table, the sizer, and the vectorised
S4.evaluate proven equal to it bar by bar on every example rule file."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from S4.decide import (
    ENTER,
    EXIT,
    HOLD,
    SKIP,
    Action,
    Bar,
    Policy,
    Position,
    Size,
    decide,
    levels,
    size_entry,
)

POS = Position(qty=1.0, entry_price=100.0, stop=95.0, take_profit=110.0)


def test_long_exit_order_stop_then_take_profit_then_signal_then_kill_switch():
    p = Policy(cooldown=0)
    both = Bar(high=111.0, low=94.0, close=100.0, exit_rule="x")
    assert decide(both, position=POS, policy=p).reason == "stop_loss"          # conservative: the stop first
    tp = Bar(high=111.0, low=96.0, close=100.0, exit_rule="x")
    assert decide(tp, position=POS, policy=p).reason == "take_profit"
    sig = Bar(high=105.0, low=96.0, close=100.0, exit_rule="x", entry_rule="y")
    a = decide(sig, position=POS, policy=p, entries_allowed=False)
    assert (a.kind, a.reason, a.rule, a.exit_kind) == (EXIT, "signal:x", "x", "signal")
    calm = Bar(high=105.0, low=96.0, close=100.0)
    assert decide(calm, position=POS, policy=p, entries_allowed=False).reason == "kill_switch"
    assert decide(calm, position=POS, policy=Policy(flatten_on_trip=False), entries_allowed=False).kind == HOLD
    assert decide(calm, position=POS, policy=p).kind == HOLD
    # without stops the levels are ignored; the signal still exits
    assert decide(both, position=POS, policy=Policy(use_stops=False)).reason == "signal:x"
    assert decide(Bar(high=200.0, low=1.0, close=100.0), position=POS, policy=Policy(use_stops=False)).kind == HOLD
    # a level exactly touched counts
    assert decide(Bar(high=100.0, low=95.0, close=96.0), position=POS, policy=p).reason == "stop_loss"


def test_flat_entries_cooldown_kill_switch_and_sizer():
    p = Policy(cooldown=3)
    bar = Bar(high=101.0, low=99.0, close=100.0, entry_rule="dip")
    assert decide(Bar(high=1, low=1, close=1), position=None, policy=p).kind == HOLD
    assert decide(Bar(high=1, low=1, close=1, entry_rule="a", exit_rule="b"), position=None, policy=p).kind == HOLD
    a = decide(bar, position=None, policy=p, bars_since_exit=3)
    assert (a.kind, a.reason, a.rule) == (SKIP, "cooldown", "dip") and "3 of 3" in a.detail
    assert decide(bar, position=None, policy=p, bars_since_exit=4).kind == ENTER
    assert decide(bar, position=None, policy=p).kind == ENTER
    a = decide(bar, position=None, policy=p, entries_allowed=False)
    assert (a.kind, a.reason) == (SKIP, "kill_switch")
    # the cooldown is reported before the kill-switch, as S7 always did
    assert decide(bar, position=None, policy=p, bars_since_exit=1, entries_allowed=False).reason == "cooldown"
    calls = []

    def sizer(b):
        calls.append(b)
        return Size(qty=0.5, stop_distance=2.0, tp_distance=4.0)

    a = decide(bar, position=None, policy=p, sizer=sizer)
    assert a.kind == ENTER and a.size.qty == 0.5 and calls == [bar]
    refused = decide(bar, position=None, policy=p, sizer=lambda b: Size(refused="filters", detail="too small"))
    assert (refused.kind, refused.reason, refused.detail) == (SKIP, "filters", "too small")
    zero = decide(bar, position=None, policy=p, sizer=lambda b: Size(qty=0.0))
    assert (zero.kind, zero.reason) == (SKIP, "sizing")
    calls.clear()
    decide(bar, position=POS, policy=p, sizer=sizer)
    assert calls == []                                   # the sizer is only asked for entries


def test_policy_and_action_are_data():
    with pytest.raises(ValueError, match="cooldown"):
        Policy(cooldown=-1)
    with pytest.raises(ValueError, match="side must be one of"):
        Policy(side="sideways")
    with pytest.raises(Exception):  # noqa: B017 - frozen
        Policy().cooldown = 3  # type: ignore[misc]
    assert Action(EXIT, reason="stop_loss").exit_kind == "stop_loss" and Action(ENTER).exit_kind is None


def test_levels_round_like_the_exchange():
    from S6.filters import SymbolFilters
    from S7.orders import D

    f = SymbolFilters(symbol="BTCUSDT", base_asset="BTC", quote_asset="USDT", tick_size=D("0.01"),
                      step_size=D("0.00001"), min_qty=D("0.00001"), min_notional=D("10"))
    s = Size(qty=1.0, stop_distance=1.234, tp_distance=2.468)
    assert levels(100.0, s, f) == (98.77, 102.46)                 # stop up, take-profit down
    assert levels(100.0, s) == pytest.approx((98.766, 102.468))
    assert levels(100.0, Size(qty=1.0)) == (None, None)


def test_size_entry_caps_rounds_and_refuses():
    from S6.config import RiskConfig
    from S6.filters import SymbolFilters
    from S7.orders import D

    risk = RiskConfig()
    f = SymbolFilters(symbol="BTCUSDT", base_asset="BTC", quote_asset="USDT", tick_size=D("0.01"),
                      step_size=D("0.001"), min_qty=D("0.001"), min_notional=D("10"))
    s = size_entry(equity=10_000, cash=10_000, price=100.0, atr=2.0, risk=risk, filters=f)
    assert s.ok and s.qty == 25.0 and (s.stop_distance, s.tp_distance) == (4.0, 8.0)
    capped = size_entry(equity=10_000, cash=1_000, price=100.0, atr=2.0, risk=risk, filters=f)
    assert capped.ok and capped.qty == pytest.approx(9.97) and capped.extra["capped"]   # 1000 / (100 x 1.003), floored
    tiny = size_entry(equity=10_000, cash=5.0, price=100.0, atr=2.0, risk=risk, filters=f)
    assert tiny.refused == "filters" and "notional" in tiny.detail.lower()
    no_atr = size_entry(equity=10_000, cash=10_000, price=100.0, atr=float("nan"), risk=risk)
    assert no_atr.refused == "sizing" and not no_atr.ok


# ---------------------------------------------------------------- evaluate == decide, bar by bar
def _walk(frame, rules) -> tuple[np.ndarray, np.ndarray]:
    """decide() on every bar with the position it leaves (no stops, no sizer, no kill-switch)."""
    from S5.hooks import rule_codes

    ent, ext = rule_codes(frame, rules)
    names_in, names_out = [r.name for r in rules.entry], [r.name for r in rules.exit]
    policy = Policy.from_rules(rules, use_stops=False)
    n = len(frame)
    entry, exit_ = np.zeros(n, bool), np.zeros(n, bool)
    pos, last_exit = None, None
    for i in range(n):
        bar = Bar(high=0.0, low=0.0, close=0.0, entry_rule=names_in[ent[i]] if ent[i] >= 0 else None,
                  exit_rule=names_out[ext[i]] if ext[i] >= 0 else None)
        a = decide(bar, position=pos, policy=policy, bars_since_exit=None if last_exit is None else i - last_exit)
        if a.kind == ENTER:
            entry[i], pos = True, Position(qty=1.0, entry_price=1.0)
        elif a.kind == EXIT:
            exit_[i], pos, last_exit = True, None, i
    return entry, exit_


@pytest.mark.parametrize("cooldown", [None, 5])
def test_vectorised_evaluate_equals_decide_bar_by_bar(btc_full, rule_file, cooldown):
    from S4.evaluate import evaluate
    from S4.rules import load_rules

    rules = load_rules(rule_file)
    if cooldown is not None:
        rules = dataclasses.replace(rules, cooldown=cooldown)
    fast = evaluate(btc_full, rules)
    entry, exit_ = _walk(btc_full, rules)
    assert fast["entry"].sum() > 0, "the rule file should trade on this data"
    np.testing.assert_array_equal(fast["entry"].to_numpy(), entry)
    np.testing.assert_array_equal(fast["exit"].to_numpy(), exit_)


def test_docstring_examples():
    import doctest

    import S4.decide

    r = doctest.testmod(S4.decide, optionflags=doctest.ELLIPSIS)
    assert r.attempted > 0 and r.failed == 0
