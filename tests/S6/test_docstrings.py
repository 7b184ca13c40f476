"""The docstring examples of the S6 modules run and give what they show."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["S6.config", "S6.sizing", "S6.filters", "S6.killswitch", "S6.alerts", "S6.stress_analysis"]


@pytest.mark.parametrize("name", MODULES)
def test_examples(name, settings_env):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0
