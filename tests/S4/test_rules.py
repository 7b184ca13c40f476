"""S4/rules.py: the rule grammar, params for the optimiser, and every validation error."""

from __future__ import annotations

import textwrap

import pytest

from S1.errors import UserError
from S4.rules import (
    Column,
    Condition,
    Group,
    ParamRef,
    RuleSet,
    load_rules,
    parse_assignments,
    parse_rules,
    save_rules,
)
from tests.S4.helpers import RULE_FILES

BASE = """\
params:
  rsi_buy: {value: 30, low: 20, high: 40}
entry: {col: rsi14, op: crosses_above, param: rsi_buy}
exit: {col: rsi14, op: '>', value: 70}
"""


def parse(text: str, **kw) -> RuleSet:
    return parse_rules(textwrap.dedent(text), source="r.yaml", **kw)


# ---------------------------------------------------------------------------- grammar
def test_parses_nested_groups_into_the_model():
    r = parse("""\
        params:
          n: {value: 3, low: 1, high: 10}
          band: {value: 1.0, choices: [0.99, 1.0, 1.01]}
        cooldown: {param: n}
        entry:
          - name: a
            all:
              - {col: close, op: '>', other: {col: sma50, mul: {param: band}}}
              - any:
                  - {col: rsi14, op: lt, value: 30}
                  - not: {col: close, bars_ago: 2, op: '>=', other: {col: close, bars_ago: {param: n}}}
          - {name: b, col: MACD_12_26_9, op: crosses_above, other: MACDs_12_26_9}
        exit: {col: close, op: crosses_below, other: ema21}
        """)
    a, b = r.entry
    assert (a.name, b.name, r.exit[0].name) == ("a", "b", "exit")
    assert isinstance(a.node, Group) and a.node.kind == "all"
    first, inner = a.node.children
    assert first == Condition(Column("close"), ">", Column("sma50", 0, ParamRef("band")))
    assert inner.kind == "any" and inner.children[0].op == "<"  # alias lt
    neg = inner.children[1]
    assert neg.kind == "not"
    assert neg.children[0] == Condition(Column("close", 2), ">=", Column("close", ParamRef("n")))
    assert r.cooldown == ParamRef("n")
    assert r.params == {"n": 3, "band": 1.0}
    assert r.required_columns() == ("MACD_12_26_9", "MACDs_12_26_9", "close", "ema21", "rsi14", "sma50")
    assert not r.uses_sentiment and not r.uses_ml
    assert r.rule_names == ("a", "b", "exit")
    assert r.lookback() == 3  # {param: n} bars back


def test_default_rule_names_for_lists():
    r = parse("""\
        entry: [{col: close, op: '>', value: 1}, {col: close, op: '<', value: 0}]
        exit: [{col: close, op: '>', value: 5}]
        """)
    assert r.rule_names == ("entry_1", "entry_2", "exit_1")


def test_exit_and_params_are_optional():
    r = parse("entry: {col: close, op: '>', value: 1}\n")
    assert r.exit == () and r.params == {} and r.param_space() == {} and r.cooldown == 0


@pytest.mark.parametrize("path", RULE_FILES, ids=[p.name for p in RULE_FILES])
def test_example_files_load_and_round_trip(path):
    r = load_rules(path)
    assert r.param_space(), "every example file offers a search space to S5"
    again = parse_rules(r.to_yaml())
    assert again == r
    moved = r.with_params(**{k: s.get("high", s.get("choices", [None])[-1]) for k, s in r.param_space().items()})
    assert parse_rules(moved.to_yaml()).params == moved.params != r.params


def test_example_files_use_what_their_names_say():
    by_name = {p.name: load_rules(p) for p in RULE_FILES}
    assert by_name["rules.yaml"].uses_sentiment and not by_name["rules.yaml"].uses_ml
    assert not by_name["rules_ta_only.yaml"].uses_sentiment and not by_name["rules_ta_only.yaml"].uses_ml
    assert by_name["rules_ml.yaml"].uses_ml and not by_name["rules_ml.yaml"].uses_sentiment


def test_save_rules_writes_loadable_yaml(tmp_path):
    r = load_rules(RULE_FILES[0]).with_params(cooldown_bars=7)
    p = save_rules(r, tmp_path / "best.yaml")
    assert load_rules(p) == r and load_rules(p).params["cooldown_bars"] == 7


def test_columns_argument_restricts_the_available_columns():
    r = parse(BASE, columns=["rsi14", "close"])
    assert r.required_columns() == ("rsi14",)
    with pytest.raises(UserError, match=r"unknown column 'rsi14'.*available columns: close, sma50"):
        parse(BASE, columns=["close", "sma50"])


# ------------------------------------------------------------------------------ params
def test_param_space_types_steps_and_choices():
    r = parse("""\
        params:
          a: {value: 14, low: 5, high: 30, step: 5}
          b: {value: 0.5, low: 0.1, high: 0.9}
          c: {value: 1.0, choices: [0.5, 1.0, 2]}
          d: {value: 2.0, low: 1.0, high: 8.0, log: true}
          e: 4
          f: {value: 3, low: 1, high: 9, type: float}
        entry:
          all:
            - {col: close, op: '>', param: a}
            - {col: close, op: '>', param: b}
            - {col: close, op: '>', param: c}
            - {col: close, op: '>', param: d}
            - {col: close, op: '>', param: e}
            - {col: close, op: '>', param: f}
        """)
    assert r.param_space() == {
        "a": {"type": "int", "low": 5, "high": 30, "step": 5, "log": False},
        "b": {"type": "float", "low": 0.1, "high": 0.9, "step": None, "log": False},
        "c": {"type": "float", "choices": [0.5, 1.0, 2.0]},
        "d": {"type": "float", "low": 1.0, "high": 8.0, "step": None, "log": True},
        "f": {"type": "float", "low": 1.0, "high": 9.0, "step": None, "log": False},
    }
    assert r.params == {"a": 14, "b": 0.5, "c": 1.0, "d": 2.0, "e": 4, "f": 3.0}
    assert isinstance(r.params["a"], int) and isinstance(r.params["f"], float)


def test_with_params_returns_a_new_validated_ruleset():
    r = parse(BASE)
    r2 = r.with_params(rsi_buy=25)
    assert r2.params == {"rsi_buy": 25} and r.params == {"rsi_buy": 30}
    assert r2 != r and r2.entry == r.entry
    import numpy as np

    assert r.with_params(rsi_buy=np.int64(21)).params == {"rsi_buy": 21}
    assert r.with_params(rsi_buy=22.0).params == {"rsi_buy": 22}
    with pytest.raises(AttributeError):
        r.cooldown = 3  # frozen


@pytest.mark.parametrize("value,message", [
    (41, "41 is above its high 40 -- choose a value from 20 to 40"),
    (19, "19 is below its low 20"),
    (25.5, "25.5 is not a whole number"),
    ("25", "'25' is not a finite number"),
    (True, "True is not a finite number"),
    (float("nan"), "nan is not a finite number"),
])
def test_with_params_rejects_bad_values(value, message):
    with pytest.raises(UserError) as exc:
        parse(BASE).with_params(rsi_buy=value)
    assert message in str(exc.value) and "param rsi_buy (r.yaml line 2)" in str(exc.value)


def test_with_params_absorbs_float_rounding_at_the_range_ends():
    r = parse("params: {b: {value: 0.5, low: -0.3, high: 0.5, step: 0.05}}\nentry: {col: close, op: '>', param: b}\n")
    assert r.with_params(b=0.5 + 1e-12).params["b"] == 0.5 and r.with_params(b=-0.3 - 1e-12).params["b"] == -0.3
    with pytest.raises(UserError, match="above its high"):
        r.with_params(b=0.5001)
    # an optimiser's low + k * step comes back as the number a user would type
    assert r.with_params(b=-0.3 + 8 * 0.05).params["b"] == 0.1 and repr(-0.3 + 8 * 0.05) != "0.1"
    assert r.with_params(b=0.123).params["b"] == 0.123  # a value off the grid is kept as given


def test_with_params_rejects_unknown_names_and_checks_choices_and_bar_counts():
    with pytest.raises(UserError, match="unknown param 'rsi' -- the rules define: rsi_buy"):
        parse(BASE).with_params(rsi=3)
    r = parse("""\
        params:
          band: {value: 1.0, choices: [0.99, 1.0]}
          n: 3
        cooldown: {param: n}
        entry: {col: close, op: '>', other: {col: sma50, mul: {param: band}}}
        """)
    with pytest.raises(UserError, match="1.02 is not one of its choices -- choose one of 0.99, 1.0"):
        r.with_params(band=1.02)
    with pytest.raises(UserError, match="-1 is used as a number of bars"):
        r.with_params(n=-1)
    assert r.with_params(n=10).params["n"] == 10


class FakeTrial:
    """Records the Optuna calls made by RuleSet.suggest and answers the high end."""

    def __init__(self):
        self.calls = []

    def suggest_int(self, name, low, high, step=1, log=False):
        self.calls.append(("int", name, low, high, step, log))
        return high

    def suggest_float(self, name, low, high, step=None, log=False):
        self.calls.append(("float", name, low, high, step, log))
        return high

    def suggest_categorical(self, name, choices):
        self.calls.append(("cat", name, tuple(choices)))
        return choices[0]


def test_suggest_draws_every_searchable_param():
    r = load_rules(RULE_FILES[0])  # rules.yaml
    trial = FakeTrial()
    r2 = r.suggest(trial)
    assert [c[1] for c in trial.calls] == list(r.param_space())
    assert ("int", "rsi_buy", 25, 50, 1, False) in trial.calls
    assert ("float", "sent_min", -0.3, 0.5, 0.05, False) in trial.calls
    assert r2.params["rsi_buy"] == 50 and r2.params["sent_exit"] == 0.0


def test_suggest_works_with_a_real_optuna_study():
    optuna = pytest.importorskip("optuna")
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    r = load_rules(RULE_FILES[1])  # rules_ml.yaml
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = []

    def objective(trial):
        rr = r.suggest(trial)
        seen.append(rr.params)
        return rr.params["proba_buy"] - rr.params["proba_sell"]

    study.optimize(objective, n_trials=15)
    for p in seen:
        assert 0.5 <= p["proba_buy"] <= 0.7 and 60 <= p["rsi_max"] <= 90 and p["rsi_max"] % 5 == 0
    assert r.with_params(**study.best_params).params == {**r.params, **study.best_params}


def test_parse_assignments():
    assert parse_assignments(["a=1", "b = 0.5", "c=-2"]) == {"a": 1, "b": 0.5, "c": -2}
    with pytest.raises(UserError, match="is not NAME=VALUE"):
        parse_assignments(["a"])
    with pytest.raises(UserError, match="'x' is not a number"):
        parse_assignments(["a=x"])


# ------------------------------------------------------------------ validation errors
# (name, YAML, fragments that the one-line error must contain). One test each.
ERRORS = [
    ("empty file", "", ["the rule file is empty"]),
    ("not a mapping", "- 1\n- 2\n", ["line 1, column 1", "must be a mapping, got a list"]),
    ("unknown top key", "entri: {col: close, op: '>', value: 1}\n",
     ["line 1", "unknown key 'entri' in the rule file", "did you mean 'entry'?"]),
    ("no entry", "exit: {col: close, op: '>', value: 1}\n", ["no entry: rules"]),
    ("bad version", "version: 2\nentry: {col: close, op: '>', value: 1}\n", ["line 1", "unsupported version"]),
    ("unknown column", "entry:\n  all:\n    - {col: rsi_14, op: '<', value: 30}\n",
     ["line 3, column 13", "unknown column 'rsi_14'", "did you mean 'rsi14'?", "available columns: open, high",
      "sma50", "sentiment_score", "ml_proba"]),
    ("unknown column on the right", "entry: {col: close, op: '>', other: smaa50}\n",
     ["line 1", "unknown column 'smaa50'", "did you mean 'sma50'?"]),
    ("bad operator", "entry:\n  all:\n    - {col: close, op: '=>', value: 1}\n",
     ["line 3, column 24", "unknown operator (the string '=>')", "use one of '<', '<=', '>', '>=', '=='"]),
    ("operator is a number", "entry: {col: close, op: 5, value: 1}\n",
     ["line 1", "unknown operator (the number 5)"]),
    ("missing operator", "entry: {col: close, value: 1}\n", ["line 1", "has no op"]),
    ("value is a string", "entry:\n  - {col: rsi14, op: '<', value: thirty}\n",
     ["line 2", "value must be a number, got the string 'thirty'"]),
    ("value is a quoted number", "entry: {col: rsi14, op: '<', value: '30'}\n",
     ["line 1", "value must be a number, got the quoted string '30'", "write 30 without quotes"]),
    ("value is a boolean", "entry: {col: rsi14, op: '<', value: yes}\n",
     ["line 1", "value must be a number, got the boolean true"]),
    ("value is infinite", "entry: {col: rsi14, op: '<', value: .inf}\n", ["line 1", "finite number"]),
    ("python expression as value", "entry: {col: close, op: '>', value: \"__import__('os').system('id')\"}\n",
     ["line 1", "expressions are never evaluated"]),
    ("python expression as column", "entry: {col: 'close * 2 if True else exec(\"x\")', op: '>', value: 1}\n",
     ["line 1", "unknown column", "expressions are never evaluated"]),
    ("expression as operator", "entry: {col: close, op: 'lambda x: x', value: 1}\n",
     ["line 1", "unknown operator"]),
    ("no right-hand side", "entry: {col: close, op: '>'}\n", ["line 1", "has no right-hand side"]),
    ("two right-hand sides", "entry: {col: close, op: '>', value: 1, other: open}\n",
     ["line 1", "several right-hand sides (value, other)"]),
    ("unknown condition key", "entry: {col: close, op: '>', value: 1, bars: 2}\n",
     ["line 1", "unknown key 'bars' in a condition", "did you mean 'bars_ago'?"]),
    ("negative bars_ago", "entry: {col: close, bars_ago: -1, op: '>', value: 1}\n",
     ["line 1", "bars_ago must be from 0 to 10000 bars, got -1", "the future is never readable"]),
    ("fractional bars_ago", "entry: {col: close, op: '>', other: {col: close, bars_ago: 1.5}}\n",
     ["line 1", "bars_ago must be a whole number of bars, got the number 1.5"]),
    ("float param as bars_ago", "params: {k: 1.5}\nentry: {col: close, bars_ago: {param: k}, op: '>', value: 1}\n",
     ["line 2", "param 'k' is used as a number of bars", "a float"]),
    ("unknown param", "params: {rsi_buy: 30}\nentry: {col: rsi14, op: '<', param: rsi_bye}\n",
     ["line 2", "unknown param 'rsi_bye'", "did you mean 'rsi_buy'?"]),
    ("unused param", "params:\n  x: 1\n  y: 2\nentry: {col: rsi14, op: '<', param: x}\n",
     ["line 3", "param 'y' is never used"]),
    ("param value outside range", "params:\n  p: {value: 50, low: 20, high: 40}\nentry: {col: rsi14, op: '<', param: p}\n",
     ["line 2", "value 50 is outside its range 20..40"]),
    ("param low above high", "params:\n  p: {value: 30, low: 40, high: 20}\nentry: {col: rsi14, op: '<', param: p}\n",
     ["line 2", "low 40 must be below high 20"]),
    ("param low without high", "params:\n  p: {value: 30, low: 20}\nentry: {col: rsi14, op: '<', param: p}\n",
     ["line 2", "needs both low and high"]),
    ("param without value", "params:\n  p: {low: 20, high: 40}\nentry: {col: rsi14, op: '<', param: p}\n",
     ["line 2", "param p has no value"]),
    ("param step not dividing the range",
     "params:\n  p: {value: 30, low: 20, high: 45, step: 10}\nentry: {col: rsi14, op: '<', param: p}\n",
     ["line 2", "is not a multiple of step 10"]),
    ("param negative step", "params:\n  p: {value: 30, low: 20, high: 40, step: -5}\nentry: {col: rsi14, op: '<', param: p}\n",
     ["line 2", "step must be positive"]),
    ("int param with fraction", "params:\n  p: {value: 30, low: 20, high: 40, step: 0.5, type: int}\n"
     "entry: {col: rsi14, op: '<', param: p}\n", ["line 2", "is an int but its step is 0.5"]),
    ("bad param type", "params:\n  p: {value: 30, type: str}\nentry: {col: rsi14, op: '<', param: p}\n",
     ["line 2", "type must be int or float"]),
    ("unknown param key", "params:\n  p: {value: 30, lo: 20}\nentry: {col: rsi14, op: '<', param: p}\n",
     ["line 2", "unknown key 'lo' in param p", "did you mean 'low'?"]),
    ("choices with a range", "params:\n  p: {value: 1, choices: [1, 2], low: 0, high: 3}\n"
     "entry: {col: rsi14, op: '<', param: p}\n", ["line 2", "both choices and a low/high/step range"]),
    ("value not in choices", "params:\n  p: {value: 3, choices: [1, 2]}\nentry: {col: rsi14, op: '<', param: p}\n",
     ["line 2", "value 3 is not one of its choices"]),
    ("non-numeric choice", "params:\n  p: {value: 1, choices: [1, two]}\nentry: {col: rsi14, op: '<', param: p}\n",
     ["line 2", "got the string 'two'"]),
    ("log range from zero", "params:\n  p: {value: 1.0, low: 0.0, high: 2.0, log: true}\n"
     "entry: {col: rsi14, op: '<', param: p}\n", ["line 2", "log-scale range needs low > 0"]),
    ("bad param name", "params:\n  2fast: 3\nentry: {col: rsi14, op: '<', value: 1}\n",
     ["line 2", "is not a valid name"]),
    ("mixed group keys", "entry:\n  all: [{col: close, op: '>', value: 1}]\n  any: [{col: close, op: '>', value: 1}]\n",
     ["line 3", "mixes 'all' and 'any'"]),
    ("condition beside a group", "entry:\n  all: [{col: close, op: '>', value: 1}]\n  col: close\n",
     ["mixes 'all' and 'col'"]),
    ("empty group", "entry:\n  all: []\n", ["line 2", "'all' needs a non-empty list"]),
    ("group of a scalar", "entry:\n  any: close\n", ["line 2", "'any' needs a non-empty list"]),
    ("not with a list", "entry:\n  not: [{col: close, op: '>', value: 1}]\n",
     ["line 2", "'not' takes one condition or group, got a list"]),
    ("condition is a list item string", "entry:\n  all:\n    - close > 1\n",
     ["line 3", "must be a mapping, got the string 'close > 1'"]),
    ("empty entry list", "entry: []\n", ["line 1", "entry is an empty list"]),
    ("name inside a group", "entry:\n  all:\n    - {name: x, col: close, op: '>', value: 1}\n",
     ["line 3", "'name' is only allowed on a rule"]),
    ("duplicate rule names", "entry: {name: a, col: close, op: '>', value: 1}\n"
     "exit: {name: a, col: close, op: '<', value: 1}\n", ["rule name 'a' is used twice"]),
    ("negative cooldown", "cooldown: -2\nentry: {col: close, op: '>', value: 1}\n",
     ["line 1", "cooldown must be from 0 to 10000 bars"]),
    ("cooldown as text", "cooldown: 3 bars\nentry: {col: close, op: '>', value: 1}\n",
     ["line 1", "cooldown must be a whole number of bars, got the string '3 bars'"]),
    ("value given as a mapping", "entry: {col: close, op: '>', value: {param: x}}\n",
     ["line 1", "value: must be a plain number", "for a param write param: NAME"]),
    ("description not text", "description: [1, 2]\nentry: {col: close, op: '>', value: 1}\n",
     ["line 1", "description must be text"]),
    ("duplicate key", "entry: {col: close, op: '>', value: 1}\nentry: {col: close, op: '<', value: 1}\n",
     ["line 2", "duplicate key 'entry' (first at line 1)"]),
    ("non-string key", "entry: {col: close, op: '>', value: 1}\n1: 2\n", ["line 2", "mapping key '1' is not a name"]),
    ("yaml syntax error", "entry: {col: close, op: '>', value: 1\n",
     ["line 2", "invalid YAML"]),
    ("unquoted > starts a folded block", "entry:\n  col: close\n  op: >\n  value: 1\n",
     ["unknown operator", "quote the symbols"]),
    ("python object tag", "entry: !!python/object/apply:os.system ['echo pwned']\n",
     ["line 1, column 8", "YAML tags such as '!!python/object/apply:os.system' are not allowed"]),
    ("python name tag", "entry: {col: !!python/name:os.system close, op: '>', value: 1}\n",
     ["line 1", "YAML tags", "not allowed"]),
    ("local tag", "entry: !rule {col: close, op: '>', value: 1}\n", ["line 1", "YAML tags such as '!rule'"]),
    ("standard tag", "entry: {col: close, op: '>', value: !!float 1}\n", ["line 1", "YAML tags"]),
    ("anchor", "a: &x {col: close, op: '>', value: 1}\nentry: {col: close, op: '>', value: 1}\n",
     ["line 1", "YAML anchor '&x' is not allowed"]),
    ("alias", "params: {p: 1}\nentry: {col: close, op: '>', param: p}\nexit: *p\n",
     ["line 3", "YAML alias '*p' is not allowed"]),
    ("merge key", "entry:\n  <<: {col: close}\n  op: '>'\n  value: 1\n", ["line 2"]),
    ("two documents", "entry: {col: close, op: '>', value: 1}\n---\nentry: {col: close, op: '<', value: 1}\n",
     ["line 2", "more than one YAML document"]),
]


@pytest.mark.parametrize("text,fragments", [(t, f) for _, t, f in ERRORS], ids=[n for n, _, _ in ERRORS])
def test_validation_error(text, fragments):
    with pytest.raises(UserError) as exc:
        parse_rules(text, source="r.yaml")
    msg = str(exc.value)
    assert msg.startswith("r.yaml"), msg
    assert "\n" not in msg, "one line"
    assert " -- " in msg, f"a fix follows the problem: {msg}"
    for frag in fragments:
        assert frag in msg, f"{frag!r} not in {msg!r}"


def test_billion_laughs_is_rejected_quickly():
    import tracemalloc

    lines = ['a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 10):
        lines.append(f"a{i}: &a{i} [" + ",".join([f"*a{i-1}"] * 9) + "]")
    lines.append("entry: {col: close, op: '>', value: 1}")
    tracemalloc.start()
    try:
        with pytest.raises(UserError, match=r"line 1, column 5: YAML anchor '&a0' is not allowed"):
            parse_rules("\n".join(lines))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # rejected before any expansion (9**9 strings would take gigabytes): a resource bound, not a clock
    assert peak < 5_000_000, f"{peak:,} bytes"


def test_recursive_alias_is_rejected():
    with pytest.raises(UserError, match="anchor"):
        parse_rules("entry: &e {all: [*e]}\n")


@pytest.mark.parametrize("style", ["flow", "block"])
def test_deep_nesting_is_rejected_without_recursion_error(style):
    depth = 5000
    if style == "flow":
        text = "entry: " + "[" * depth + "]" * depth + "\n"
    else:
        text = "entry:\n" + "".join("  " * (i + 1) + "not:\n" for i in range(200)) + "  " * 201 + "{}\n"
    with pytest.raises(UserError, match="nesting deeper than 40 levels") as exc:
        parse_rules(text, source="deep.yaml")
    assert "deep.yaml: line" in str(exc.value)


def test_nesting_within_the_limit_is_fine():
    inner = "{col: close, op: '>', value: 1}"
    for _ in range(15):
        inner = "{not: " + inner + "}"
    r = parse_rules(f"entry: {inner}\n")
    node, depth = r.entry[0].node, 0
    while isinstance(node, Group):
        node, depth = node.children[0], depth + 1
    assert depth == 15 and isinstance(node, Condition)


def test_huge_text_and_huge_file_are_rejected(tmp_path):
    big = "description: '" + "x" * 70_000 + "'\nentry: {col: close, op: '>', value: 1}\n"
    with pytest.raises(UserError, match="more than the 65,536 bytes"):
        parse_rules(big)
    p = tmp_path / "big.yaml"
    p.write_text(big)
    with pytest.raises(UserError, match=r"big.yaml is 70,0\d\d bytes, more than the 65,536 allowed"):
        load_rules(p)


def test_file_errors(tmp_path):
    with pytest.raises(UserError, match="rule file .*nope.yaml does not exist -- pass --rules"):
        load_rules(tmp_path / "nope.yaml")
    with pytest.raises(UserError, match="is not a file"):
        load_rules(tmp_path)
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("description: caf\xe9\nentry: {col: close, op: '>', value: 1}\n".encode("latin-1"))
    with pytest.raises(UserError, match="is not UTF-8 text"):
        load_rules(bad)
    bad2 = tmp_path / "r.yaml"
    bad2.write_text("entry:\n  all:\n    - {col: close, op: '>>', value: 1}\n")
    with pytest.raises(UserError, match=r"r.yaml: line 3, column 24: unknown operator"):
        load_rules(bad2)


def test_unsafe_loader_never_runs_code(tmp_path, monkeypatch):
    """The hostile payloads above are rejected before any constructor runs: prove that
    os.system is never reached even if a tag slipped through the event scan."""
    import os

    calls = []
    monkeypatch.setattr(os, "system", lambda *a: calls.append(a) or 0)
    for payload in ("!!python/object/apply:os.system ['echo x']", "!!python/object/new:os.system ['echo x']"):
        with pytest.raises(UserError):
            parse_rules(f"entry: {payload}\n")
    assert calls == []
