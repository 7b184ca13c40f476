"""The runnable examples in the S3 docstrings stay true; the metrics agree with scikit-learn."""

from __future__ import annotations

import doctest
import importlib

import numpy as np
import pytest
from sklearn.metrics import f1_score

MODULES = ["S3.config", "S3.assets", "S3.items", "S3.labels", "S3.lexicon", "S3.trained_model", "S3.llm", "S3.llm_cache",
           "S3.series", "S3.sources", "S3.fetch", "S3.classifiers"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, settings_env):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no examples"
    assert result.failed == 0


def test_macro_f1_matches_scikit_learn():
    from S3.labels import macro_f1

    rng = np.random.default_rng(3)
    for _ in range(50):
        y = rng.choice([-1, 0, 1], 40)
        p = rng.choice([-1, 0, 1, -9], 40)  # -9: unknown, always wrong
        assert macro_f1(y, p) == pytest.approx(f1_score(y, p, labels=[-1, 0, 1], average="macro", zero_division=0))
