"""The rule language: a validated, frozen :class:`RuleSet` parsed from YAML.

A rule file says when a long-only strategy enters and exits, with named
``params`` that an optimiser (S5) may search. It is data: every value is checked
against a closed grammar and nothing is ever evaluated as code. Errors are one
:class:`S1.errors.UserError` naming the file, line and column, and a fix.

Grammar (see ``S4/README.md`` for the full reference)::

    version: 1                       # optional
    description: free text           # optional, never interpreted
    params:                          # optional: named numbers
      rsi_buy: {value: 30, low: 20, high: 40, step: 1}     # searchable int
      band: {value: 1.0, choices: [0.99, 1.0, 1.01]}        # categorical float
      fixed: 3                                              # fixed number
    cooldown: 0 | {param: NAME}      # bars after an exit during which entries are ignored
    entry: NODE | [RULE, ...]        # a list = several named rules, any of them enters
    exit:  NODE | [RULE, ...]        # optional (no rule exit: only stops close positions)

    RULE := NODE with an optional `name: some_name`
    NODE := {all: [NODE, ...]} | {any: [NODE, ...]} | {not: NODE} | CONDITION
    CONDITION := {col: COLUMN, [bars_ago: N], op: OP, value: NUMBER | param: NAME | other: OPERAND}
    OPERAND := COLUMN | {col: COLUMN, [bars_ago: N], [mul: NUMBER]}
    OP := '<' '<=' '>' '>=' '==' (or lt le gt ge eq) | crosses_above | crosses_below
    N, NUMBER may also be {param: NAME}

>>> rules = parse_rules('''
... params:
...   rsi_buy: {value: 30, low: 20, high: 40}
... entry: {col: rsi14, op: crosses_above, param: rsi_buy}
... exit:  {col: rsi14, op: '>', value: 70}
... ''')
>>> rules.params, rules.required_columns()
({'rsi_buy': 30}, ('rsi14',))
>>> rules.param_space()
{'rsi_buy': {'type': 'int', 'low': 20, 'high': 40, 'step': 1, 'log': False}}
>>> rules.with_params(rsi_buy=25).params
{'rsi_buy': 25}
>>> rules.with_params(rsi_buy=45)
Traceback (most recent call last):
...
S1.errors.UserError: param rsi_buy (<string> line 3): 45 is above its high 40 -- choose a value from 20 to 40
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from S1.errors import UserError
from S4.rule_model import (  # noqa: F401  (the public names of the rule language live here too)
    _NAME_RE,
    CANDLE_COLUMNS,
    COMPARISONS,
    CROSSES,
    DEFAULT_TA_COLUMNS,
    MAX_BARS_AGO,
    MAX_CONDITIONS,
    ML_COLUMNS,
    OPERATORS,
    SENTIMENT_COLUMNS,
    TA_PATTERNS,
    Column,
    Condition,
    Group,
    Node,
    Number,
    ParamRef,
    ParamSpec,
    Rule,
    RuleSet,
    available_columns,
    column_allowed,
)
from S4.rules_parser import RuleParser
from S4.yaml_safe import parse_yaml, read_yaml_file


def parse_rules(text: str, *, source: str = "<string>", columns: Iterable[str] | None = None) -> RuleSet:
    """Parse and validate rule-file text. ``columns``: the columns the frame will have
    (default: any candle, S2 indicator, sentiment or ML column name)."""
    return RuleParser(source, columns).document(parse_yaml(text, source=source))


def load_rules(path: Path | str, *, columns: Iterable[str] | None = None) -> RuleSet:
    """Read, parse and validate a rule file (see the module docstring for the grammar).

    >>> from pathlib import Path
    >>> r = load_rules(Path(__file__).with_name("rules_ta_only.yaml"))
    >>> r.uses_sentiment, r.uses_ml, "rsi14" in r.required_columns()
    (False, False, True)
    """
    _, tree = read_yaml_file(path)
    return RuleParser(str(path), columns).document(tree)


def save_rules(rules: RuleSet, path: Path | str) -> Path:
    """Write ``rules`` (with its current param values) as YAML, atomically."""
    from S1.datasets import atomic_write_text

    return atomic_write_text(Path(path), rules.to_yaml())


def parse_assignments(items: Iterable[str] | None) -> dict[str, Number]:
    """``["rsi_buy=25", "band=1.01"]`` (the CLI's ``--set``) -> ``{"rsi_buy": 25, "band": 1.01}``."""
    out: dict[str, Number] = {}
    for item in items or ():
        name, sep, raw = str(item).partition("=")
        name, raw = name.strip(), raw.strip()
        if not sep or not _NAME_RE.match(name):
            raise UserError(f"--set {item!r} is not NAME=VALUE", "e.g. --set rsi_buy=25")
        try:
            value: Number = int(raw)
        except ValueError:
            try:
                value = float(raw)
            except ValueError:
                raise UserError(f"--set {item!r}: {raw!r} is not a number", "e.g. --set rsi_buy=25") from None
        out[name] = value
    return out


__all__ = [
    "CANDLE_COLUMNS",
    "DEFAULT_TA_COLUMNS",
    "MAX_BARS_AGO",
    "ML_COLUMNS",
    "OPERATORS",
    "SENTIMENT_COLUMNS",
    "Column",
    "Condition",
    "Group",
    "ParamRef",
    "ParamSpec",
    "Rule",
    "RuleSet",
    "available_columns",
    "column_allowed",
    "load_rules",
    "parse_assignments",
    "parse_rules",
    "save_rules",
]
