"""The runnable examples in S5's docstrings."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["S5.metrics", "S5.engine", "S5.exchange", "S5.hooks", "S5.report", "S5.lookahead", "S5.grid", "S5.optimizer",
           "S5.trial_loop",
           "S5.walkforward_search", "S5.parity_symbols"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
