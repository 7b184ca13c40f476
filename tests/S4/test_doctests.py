"""The runnable examples in the S4 modules' docstrings."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["S4.yaml_safe", "S4.rules", "S4.evaluate", "S4.signals", "S4.ml_score"]  # S4.rules_parser: via S4.rules


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
