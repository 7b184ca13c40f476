"""Shorts, reversals and trailing stops in the rule grammar and S4.decide (hand-made bars)."""

from __future__ import annotations

import pytest

from S1.errors import UserError
from S4.decide import ENTER, EXIT, HOLD, Bar, Policy, Position, Size, decide, levels, trail, trail_spec
from S4.rules import parse_rules

SHORT = Position(qty=1.0, entry_price=100.0, stop=105.0, take_profit=90.0, side="short")


def test_short_stop_above_take_profit_below():
    p = Policy()
    assert decide(Bar(high=105.0, low=99.0, close=100.0), position=SHORT, policy=p).reason == "stop_loss"
    assert decide(Bar(high=104.9, low=90.0, close=95.0), position=SHORT, policy=p).reason == "take_profit"
    # a long's levels would have fired on these bars; the short's must not
    assert decide(Bar(high=104.0, low=91.0, close=95.0), position=SHORT, policy=p).kind == HOLD
    # both inside one bar: the stop first (worst case)
    assert decide(Bar(high=106.0, low=89.0, close=95.0), position=SHORT, policy=p).reason == "stop_loss"
    # a long exit rule does not close a short; a short exit rule does
    assert decide(Bar(high=101, low=99, close=100, exit_rule="x"), position=SHORT, policy=p).kind == HOLD
    a = decide(Bar(high=101, low=99, close=100, short_exit_rule="cover"), position=SHORT, policy=p)
    assert (a.kind, a.side, a.reason, a.reverse) == (EXIT, "short", "signal:cover", None)


def test_flat_short_entry_and_conflicts():
    p = Policy(cooldown=1)
    a = decide(Bar(high=1, low=1, close=1, short_entry_rule="dump"), position=None, policy=p)
    assert (a.kind, a.side, a.rule) == (ENTER, "short", "dump")
    assert decide(Bar(high=1, low=1, close=1, short_entry_rule="dump", short_exit_rule="c"), position=None,
                  policy=p).kind == HOLD
    both = decide(Bar(high=1, low=1, close=1, entry_rule="up", short_entry_rule="dump"), position=None, policy=p)
    assert both.kind == HOLD and "both" in both.detail
    assert decide(Bar(high=1, low=1, close=1, short_entry_rule="dump"), position=None, policy=p,
                  bars_since_exit=1).reason == "cooldown"
    sides = []
    decide(Bar(high=1, low=1, close=1, short_entry_rule="dump"), position=None, policy=p,
           sizer=lambda b, side: sides.append(side) or Size(2.0))
    assert sides == ["short"]


def test_reversal_is_an_exit_carrying_the_opposite_entry():
    p = Policy(cooldown=5)
    long_pos = Position(qty=1.0, entry_price=100.0)
    a = decide(Bar(high=101, low=99, close=100, short_entry_rule="dump"), position=long_pos, policy=p,
               bars_since_exit=0, sizer=lambda b: Size(3.0))
    assert (a.kind, a.side, a.reason) == (EXIT, "long", "signal:dump")
    assert a.reverses and (a.reverse.side, a.reverse.rule, a.reverse.size.qty) == ("short", "dump", 3.0)
    # the long's own exit rule names the exit; the reversal still happens
    a = decide(Bar(high=101, low=99, close=100, exit_rule="x", short_entry_rule="dump"), position=long_pos, policy=p)
    assert a.reason == "signal:x" and a.reverses
    # the kill-switch blocks the reversal's entry (and, with flattening, the exit happens anyway)
    a = decide(Bar(high=101, low=99, close=100, short_entry_rule="dump"), position=long_pos, policy=p,
               entries_allowed=False)
    assert a.kind == EXIT and not a.reverses and a.reverse.reason == "kill_switch"
    # a short's opposite: a long entry
    a = decide(Bar(high=101, low=99, close=100, entry_rule="up"), position=SHORT, policy=p)
    assert a.reason == "signal:up" and a.reverse.side == "long"
    # a stop never reverses
    a = decide(Bar(high=110, low=99, close=100, entry_rule="up"), position=SHORT, policy=p)
    assert a.reason == "stop_loss" and a.reverse is None


def test_levels_by_side_and_trailing():
    s = Size(1.0, 5.0, 10.0)
    assert levels(200.0, s) == (195.0, 210.0) and levels(200.0, s, side="short") == (205.0, 190.0)
    assert trail_spec(("atr", 2.0), 3.0) == ("atr", 6.0) and trail_spec(("atr", 2.0), float("nan")) is None
    pos = Position(qty=1.0, entry_price=100.0, stop=90.0, trail=("atr", 6.0))
    pos = trail(pos, Bar(high=103.0, low=99.0, close=101.0))       # 103 - 6 = 97 > 90
    assert (pos.stop, pos.trailing) == (97.0, True)
    assert trail(pos, Bar(high=102.0, low=96.0, close=97.0)).stop == 97.0     # never loosened
    assert decide(Bar(high=99.0, low=96.5, close=97.0), position=pos, policy=Policy()).reason == "trailing_stop"
    short = Position(qty=1.0, entry_price=100.0, stop=None, side="short", trail=("pct", 0.02))
    short = trail(short, Bar(high=101.0, low=95.0, close=96.0))
    assert short.stop == pytest.approx(96.9) and short.trailing
    assert decide(Bar(high=97.0, low=95.5, close=96.5), position=short, policy=Policy()).reason == "trailing_stop"


def test_grammar_short_blocks_and_trailing_stop_round_trip():
    text = ("short_entry: {name: dump, col: close, op: '<', value: 10}\n"
            "short_exit: {name: cover, col: close, op: '>', value: 12}\n"
            "trailing_stop: {pct: 0.03}\n")
    r = parse_rules(text)
    assert not r.has_long and r.has_short and r.entry == ()
    assert [x.name for x in r.short_entry] == ["dump"] and r.short_exit[0].side == "short_exit"
    assert r.trailing_stop == ("pct", 0.03)
    assert parse_rules(r.to_yaml()) == r
    both = parse_rules("entry: {col: close, op: '>', value: 1}\nshort_entry: {col: close, op: '<', value: 1}\n"
                       "trailing_stop: {atr: 2}")
    assert both.has_long and both.has_short and both.trailing_stop == ("atr", 2.0)
    for bad, msg in (("short_exit: {col: close, op: '>', value: 1}", "no entry"),
                     ("entry: {col: close, op: '>', value: 1}\nshort_exit: {col: close, op: '>', value: 1}",
                      "without short_entry"),
                     ("entry: {col: close, op: '>', value: 1}\ntrailing_stop: {pct: 1.5}", "in \\(0, 1\\)"),
                     ("entry: {col: close, op: '>', value: 1}\ntrailing_stop: {atr: 1, pct: 0.1}", "exactly one"),
                     ("entry: {name: a, col: close, op: '>', value: 1}\nshort_entry: {name: a, col: close, op: '<', "
                      "value: 1}", "used twice")):
        with pytest.raises(UserError, match=msg):
            parse_rules(bad)
