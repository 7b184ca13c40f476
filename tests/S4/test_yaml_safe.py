"""S4/yaml_safe.py: plain data with positions; the hostile-input checks at the YAML level
(the rule-level messages are in test_rules.py)."""

from __future__ import annotations

import pytest

from S1.errors import UserError
from S4.yaml_safe import MAX_DEPTH, parse_yaml


def test_positions_and_plain_values():
    tree = parse_yaml("a: 1\nb:\n  - x\n  - {c: 2.5, d: true, e: null}\n")
    assert tree.to_python() == {"a": 1, "b": ["x", {"c": 2.5, "d": True, "e": None}]}
    b = tree.get("b")
    assert (b.kind, b.line) == ("seq", 3)
    inner = b.items[1]
    assert (inner.line, inner.column) == (4, 5)
    assert inner.get("c").column == 9 and tree.key_line("b") == 2
    assert parse_yaml("") is None and parse_yaml("# only a comment\n") is None


def test_describe_names_the_kind_of_value():
    t = parse_yaml("a: x\nb: 3\nc: [1]\nd: {}\ne: 2024-01-01\nf: no\n")
    assert [t.get(k).describe() for k in "abcdef"] == [
        "the string 'x'", "the number 3", "a list", "a mapping", "the date 2024-01-01", "the boolean false"]


@pytest.mark.parametrize("text,fragment", [
    ("a: !!python/object/apply:subprocess.call [['id']]", "YAML tags such as '!!python/object/apply:subprocess.call'"),
    ("a: !!binary aGk=", "YAML tags such as '!!binary'"),
    ("a: &x 1\nb: *x\n", "YAML anchor '&x'"),
    ("a: 1\n---\nb: 2\n", "more than one YAML document"),
    ("a: 1\na: 2\n", "duplicate key 'a' (first at line 1)"),
    ("[1]: 2\n", "mapping key 'a collection' is not a name"),
    ("a: [1, 2\n", "invalid YAML"),
    ("a: \x07\n", "invalid YAML"),
])
def test_rejected(text, fragment):
    with pytest.raises(UserError) as exc:
        parse_yaml(text, source="t.yaml")
    assert fragment in str(exc.value) and str(exc.value).startswith("t.yaml")


def test_depth_limit_is_exact():
    ok = "a: " + "[" * (MAX_DEPTH - 1) + "]" * (MAX_DEPTH - 1)
    assert parse_yaml(ok) is not None  # the top mapping + 39 lists = 40 levels
    with pytest.raises(UserError, match=f"line 1, column {3 + MAX_DEPTH}: nesting deeper than {MAX_DEPTH}"):
        parse_yaml("a: " + "[" * MAX_DEPTH + "]" * MAX_DEPTH)
