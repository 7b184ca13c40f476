"""The runnable examples in the docstrings of the S8 modules and of the S7/S1 modules S8 added."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["S8.config", "S8.metrics", "S8.supervisor", "S8.api", "S7.control", "S1.offline"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0
