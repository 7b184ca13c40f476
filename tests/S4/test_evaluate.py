"""S4/evaluate.py: hand-built frames with known answers, three-valued logic, the
position/cooldown kernel, and the example rules on real BTCUSDT 1h checked against
independent implementations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from S1.errors import UserError
from S4.evaluate import condition_masks, evaluate, evaluate_arrays, position_kernel, prepare_arrays
from S4.rules import load_rules, parse_rules
from tests.S4.helpers import RULE_FILES, hourly, reference_evaluate


def sig(frame, text):
    return evaluate(frame, parse_rules(text, columns=frame.columns))


def labels(series) -> list:
    return [None if pd.isna(v) else str(v) for v in series]


# --------------------------------------------------------------- hand-built frames
def test_comparisons_with_number_param_and_column():
    f = hourly({"a": [1, 2, 3, 4, 5], "b": [3, 3, 3, 3, 3]})
    rules = parse_rules("params: {k: 3}\n"
                        "entry: [{name: num, col: a, op: '>=', value: 4}, {name: par, col: a, op: '==', param: k},"
                        " {name: other, col: a, op: '<', other: b}]\n", columns=f.columns)
    ent, _ = condition_masks(prepare_arrays(f, rules), rules)
    assert ent.tolist() == [[False, False, False, True, True], [False, False, True, False, False],
                            [True, True, False, False, False]]
    assert rules.with_params(k=5).params == {"k": 5}
    ent5, _ = condition_masks(prepare_arrays(f, rules), rules.with_params(k=5))
    assert ent5[1].tolist() == [False, False, False, False, True]


def test_crosses_above_and_below_fire_on_the_crossing_bar_only():
    f = hourly({"a": [1, 2, 3, 2, 1, 2, 3, 3], "b": [2, 2, 2, 2, 2, 2, 2, 2]})
    rules = parse_rules("entry: {col: a, op: crosses_above, other: b}\nexit: {col: a, op: crosses_below, value: 2}\n", columns=f.columns)
    ent, ext = condition_masks(prepare_arrays(f, rules), rules)
    # a: 1 2 3 2 1 2 3 3 vs 2: above at 2 (prev 2 <= 2) and 6 (prev 2 <= 2); below at 4 (prev 2 >= 2)
    assert np.flatnonzero(ent[0]).tolist() == [2, 6]
    assert np.flatnonzero(ext[0]).tolist() == [4]


def test_bars_ago_and_mul():
    f = hourly({"close": [10, 11, 12, 11, 15, 16]})
    rules = parse_rules("entry: {col: close, op: '>', other: {col: close, bars_ago: 2, mul: 1.05}}\n"
                        "exit: {col: close, bars_ago: 1, op: '>', value: 14}\n")
    ent, ext = condition_masks(prepare_arrays(f, rules), rules)
    # close[t] > 1.05 * close[t-2]: t=2: 12 > 10.5 yes; t=3: 11 > 11.55 no; t=4: 15 > 12.6 yes; t=5: 16 > 11.55 yes
    assert ent[0].tolist() == [False, False, True, False, True, True]
    assert ext[0].tolist() == [False, False, False, False, False, True]


def test_missing_values_use_three_valued_logic():
    nan = np.nan
    f = hourly({"x": [nan, nan, 1, 1, nan], "y": [5, 0, 5, 0, 5]})
    cases = {
        "{col: x, op: '>', value: 0}": [0, 0, 1, 1, 0],
        "{not: {col: x, op: '>', value: 0}}": [0, 0, 0, 0, 0],              # not unknown = unknown
        "{not: {col: x, op: '<', value: 0}}": [0, 0, 1, 1, 0],
        "{any: [{col: x, op: '>', value: 0}, {col: y, op: '>', value: 1}]}": [1, 0, 1, 1, 1],
        "{all: [{col: x, op: '>', value: 0}, {col: y, op: '>', value: 1}]}": [0, 0, 1, 0, 0],
        # all(unknown, false) is known false, so its negation is true where y <= 1
        "{not: {all: [{col: x, op: '>', value: 0}, {col: y, op: '>', value: 1}]}}": [0, 1, 0, 1, 0],
        # any(unknown, false) stays unknown -> its negation never fires on those rows
        "{not: {any: [{col: x, op: '>', value: 0}, {col: y, op: '>', value: 1}]}}": [0, 0, 0, 0, 0],
        "{col: x, op: crosses_above, value: 0.5}": [0, 0, 0, 0, 0],          # no known previous bar at 2
    }
    for text, expected in cases.items():
        rules = parse_rules(f"entry: {text}\n", columns=f.columns)
        ent, _ = condition_masks(prepare_arrays(f, rules), rules)
        assert ent[0].astype(int).tolist() == expected, text


def test_position_kernel_state_machine_and_cooldown():
    e = np.array([1, 1, 0, 0, 1, 1, 1, 1, 0, 1], dtype=bool)
    x = np.array([0, 0, 1, 1, 0, 0, 0, 1, 0, 0], dtype=bool)
    entry, exit_ = position_kernel(e, x, 0)
    # enter at 0 (1 ignored: already long), exit at 2 (3 ignored: flat), enter at 4, exit at 7, enter at 9
    assert np.flatnonzero(entry).tolist() == [0, 4, 9]
    assert np.flatnonzero(exit_).tolist() == [2, 7]
    entry, exit_ = position_kernel(e, x, 2)
    # after the exit at 2, bars 3 and 4 are blocked: enter at 5; exit at 7; 8, 9 blocked
    assert np.flatnonzero(entry).tolist() == [0, 5]
    assert np.flatnonzero(exit_).tolist() == [2, 7]
    # an exit signal on the same bar as an entry signal keeps a flat position flat
    entry, exit_ = position_kernel(np.array([1, 1], bool), np.array([1, 0], bool), 0)
    assert entry.tolist() == [False, True] and not exit_.any()


def test_evaluate_output_columns_dtypes_and_rule_labels():
    f = hourly({"close": [9, 11, 12, 9, 8, 11, 12, 13]})
    out = sig(f, "entry:\n  - {name: up, col: close, op: crosses_above, value: 10}\n"
                 "  - {name: high, col: close, op: '>', value: 11.5}\n"
                 "exit: [{name: down, col: close, op: crosses_below, value: 10}]\n")
    assert out.index.equals(f.index)
    assert list(out.columns) == ["entry", "exit", "signal", "rule"]
    assert out["entry"].dtype == bool and out["exit"].dtype == bool and out["signal"].dtype == np.int64
    assert isinstance(out["rule"].dtype, pd.CategoricalDtype)
    assert list(out["rule"].cat.categories) == ["up", "high", "down"]
    assert out["signal"].tolist() == [0, 1, 0, -1, 0, 1, 0, 0]
    assert out["rule"].tolist()[:6] == [np.nan, "up", np.nan, "down", np.nan, "up"]
    # both entry rules true at bar 6/7 but already long: no event; first rule wins ties
    out2 = sig(f, "entry: [{name: high, col: close, op: '>', value: 11.5}, {name: any, col: close, op: '>', value: 0}]\n")
    assert out2["rule"].tolist()[:3] == ["any", np.nan, np.nan]
    assert out2["signal"].tolist() == [1, 0, 0, 0, 0, 0, 0, 0]


def test_cooldown_param_from_the_file():
    f = hourly({"close": [1, 5, 1, 5, 1, 5, 1, 5, 1, 5]})
    text = ("params: {cd: {value: 0, low: 0, high: 5}}\ncooldown: {param: cd}\n"
            "entry: {col: close, op: '>', value: 3}\nexit: {col: close, op: '<', value: 3}\n")
    r = parse_rules(text)
    assert evaluate(f, r)["signal"].tolist() == [0, 1, -1, 1, -1, 1, -1, 1, -1, 1]
    assert evaluate(f, r.with_params(cd=2))["signal"].tolist() == [0, 1, -1, 0, 0, 1, -1, 0, 0, 1]


def test_signal_only_alternates_between_buy_and_sell():
    rng = np.random.default_rng(3)
    f = hourly({"a": rng.normal(size=500), "b": rng.normal(size=500)})
    out = sig(f, "entry: {col: a, op: '>', other: b}\nexit: {col: a, op: '<', value: -0.5}\ncooldown: 3\n")
    events = out["signal"][out["signal"] != 0].tolist()
    assert events and events[0] == 1
    assert all(a != b for a, b in zip(events, events[1:]))
    assert set(out["signal"].unique()) <= {-1, 0, 1}
    assert not (out["entry"] & out["exit"]).any()


def test_frame_errors():
    r = parse_rules("entry: {col: sentiment_score, op: '>', value: 0}\n")
    with pytest.raises(UserError, match=r"lacks the column\(s\) \['sentiment_score'\].*join the sentiment first"):
        evaluate(hourly({"close": [1, 2]}), r)
    r2 = parse_rules("entry: {col: close, op: '>', value: 0}\n")
    f = hourly({"close": [1, 2, 3]})
    with pytest.raises(UserError, match="not in strictly increasing time order"):
        evaluate(f.iloc[::-1], r2)
    with pytest.raises(UserError, match="rules must be a RuleSet"):
        evaluate(f, "S4/rules.yaml")
    with pytest.raises(UserError, match="column 'close' is not numeric"):
        evaluate(f.assign(close=["a", "b", "c"]), r2)


def test_evaluate_matches_the_reference_interpreter_on_random_frames():
    rng = np.random.default_rng(11)
    n = 400
    x = rng.normal(size=n).cumsum()
    x[rng.random(n) < 0.05] = np.nan
    f = hourly({"close": 100 + x, "rsi14": rng.uniform(0, 100, n), "sma50": 100 + rng.normal(size=n).cumsum()})
    text = """\
        params: {k: {value: 3, low: 0, high: 9}, lvl: {value: 50, low: 10, high: 90}}
        cooldown: {param: k}
        entry:
          - name: a
            any:
              - {col: close, op: crosses_above, other: {col: sma50, mul: 1.001}}
              - all: [{col: rsi14, op: '<', param: lvl}, {not: {col: close, bars_ago: {param: k}, op: '>', other: close}}]
          - {name: b, col: rsi14, op: crosses_below, value: 20}
        exit:
          - {name: c, col: close, op: crosses_below, other: sma50}
          - {name: d, not: {any: [{col: rsi14, op: '<=', value: 85}, {col: close, op: '==', value: 0}]}}
        """
    import textwrap

    r = parse_rules(textwrap.dedent(text))
    for params in ({}, {"k": 0, "lvl": 30}, {"k": 9, "lvl": 90}):
        rr = r.with_params(**params)
        got, ref = evaluate(f, rr), reference_evaluate(f, rr)
        for c in ("entry", "exit", "signal"):
            assert got[c].tolist() == ref[c].tolist(), (params, c)
        assert labels(got["rule"]) == labels(ref["rule"])
        assert got["signal"].abs().sum() > 10


# --------------------------------------------------------------------- real BTCUSDT
@pytest.mark.parametrize("path", RULE_FILES, ids=[p.name for p in RULE_FILES])
def test_example_rules_on_btc_match_the_reference_interpreter(btc_full, path):
    r = load_rules(path)
    got, ref = evaluate(btc_full, r), reference_evaluate(btc_full, r)
    assert got.index.equals(btc_full.index)
    for c in ("entry", "exit", "signal"):
        assert got[c].tolist() == ref[c].tolist(), c
    assert labels(got["rule"]) == labels(ref["rule"])
    assert got["entry"].sum() >= 3, "the example strategy trades on real data"


def test_ta_only_rule_masks_equal_hand_written_pandas_on_btc(btc_ta):
    """Each rule of S4/rules_ta_only.yaml against the same condition written by hand."""
    r = load_rules(RULE_FILES[2])
    assert r.rule_names == ("trend_pullback", "macd_cross", "overbought", "trend_break", "momentum_fade")
    t = btc_ta
    c, rsi, sma, ema = t["close"], t["rsi14"], t["sma50"], t["ema21"]
    m, s, h = t["MACD_12_26_9"], t["MACDs_12_26_9"], t["MACDh_12_26_9"]
    p = r.params
    expected = {
        "trend_pullback": (c > sma * p["trend_band"]) & (rsi > p["rsi_buy"]) & (rsi.shift(1) <= p["rsi_buy"]),
        "macd_cross": (m > s) & (m.shift(1) <= s.shift(1)) & (m < 0) & (c > ema),
        "overbought": rsi > p["rsi_sell"],
        "trend_break": (c < ema) & (c.shift(1) >= ema.shift(1)) & (h < 0),
        "momentum_fade": (c < c.shift(p["momentum_bars"])) & (c < sma),
    }
    ent, ext = condition_masks(prepare_arrays(t, r), r)
    masks = dict(zip(r.rule_names, list(ent) + list(ext)))
    for name, exp in expected.items():
        assert masks[name].tolist() == exp.to_numpy().tolist(), name
        assert exp.sum() > 0, name


def test_warmup_rows_never_fire(btc_ta):
    r = load_rules(RULE_FILES[2])
    out = evaluate(btc_ta, r)
    first_entry = out.index[out["entry"]][0]
    assert first_entry > btc_ta.index[49], "sma50 is NaN for 49 rows: no rule reading it may fire"


def test_evaluate_arrays_equals_evaluate_and_is_reusable(btc_full):
    r = load_rules(RULE_FILES[0])
    arrays = prepare_arrays(btc_full, r)
    for cd in (0, 5, 24):
        rr = r.with_params(cooldown_bars=cd, rsi_buy=30)
        res = evaluate_arrays(arrays, rr)
        out = evaluate(btc_full, rr)
        assert np.array_equal(res.signal, out["signal"].to_numpy())
        assert np.array_equal(res.entry_raw, condition_masks(arrays, rr)[0].any(axis=0))
    # a longer cooldown can only remove entries that came within it
    a = evaluate_arrays(arrays, r.with_params(cooldown_bars=0))
    b = evaluate_arrays(arrays, r.with_params(cooldown_bars=24))
    assert b.entry.sum() <= a.entry.sum()
    exits, entries = np.flatnonzero(b.exit), np.flatnonzero(b.entry)
    for x in exits:
        later = entries[entries > x]
        assert len(later) == 0 or later[0] - x > 24


# ------------------------------------------------------------------- live decision
@pytest.mark.parametrize("path", RULE_FILES, ids=[p.name for p in RULE_FILES])
def test_decide_on_the_last_bar_replays_evaluate(btc_full, path):
    """Walking bar by bar with decide() on the history up to each bar (as a live
    executor would, carrying its own position) gives exactly evaluate()'s signals."""
    from S4.evaluate import decide

    r = load_rules(path)
    lo, hi = 1500, 2100
    # a rule file that trades rarely (the demo's) gets a longer stretch: at least two signals to replay
    fired = np.flatnonzero(evaluate(btc_full, r)["signal"].to_numpy()[lo:]) + lo
    if len(fired) >= 2:
        hi = max(hi, int(fired[1]) + 1)
    expected = evaluate(btc_full.iloc[:hi], r)
    # the position evaluate() holds when bar `lo` opens, and bars since its last exit
    sig = expected["signal"].to_numpy()
    long = bool(sig[:lo].sum() == 1)
    exits = np.flatnonzero(sig[:lo] == -1)
    since = lo - exits[-1] - 1 if len(exits) else None
    got, rules_fired = [], []
    for t in range(lo, hi):
        window = btc_full.iloc[t - 100: t + 1]  # a live window: the last closed bars with their indicators
        d = decide(window, r, long=long, bars_since_exit=None if since is None else since + 1)
        got.append(d.signal)
        rules_fired.append(d.rule)
        if d.signal == 1:
            long = True
        elif d.signal == -1:
            long, since = False, 0
        elif since is not None:
            since += 1
    assert got == sig[lo:hi].tolist()
    assert rules_fired == labels(expected["rule"].iloc[lo:hi])
    assert sum(abs(g) for g in got) >= 2
