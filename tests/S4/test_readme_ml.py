"""The ML-score figures S4/README.md quotes on real BTCUSDT 1h Jan-May 2023 (pooled out-of-sample
AUC, accuracy, baseline and bars with the defaults; the folds' AUC range; the horizon-12 figures)
are recomputed with the code ``python S4/model.py`` runs, from ``../shared``; the test fails when the
README's numbers drift from what the code gives."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _readme() -> str:
    return " ".join((REPO / "S4/README.md").read_text(encoding="utf-8").split())


def test_the_readme_ml_figures(btc_1h_real):
    from S2.ta import add_indicators
    from S4.ml_score import WalkForward, ml_scores

    text = _readme()
    m = re.search(r"Measured on \*\*real\*\* BTCUSDT 1h, Jan–May 2023 \(`\.\./shared`, ([\d,]+) bars\), with the "
                  r"defaults \(horizon 4\): pooled out-of-sample AUC \*\*([\d.]+)\*\*, accuracy \*\*([\d.]+)\*\*, "
                  r"against a baseline accuracy of \*\*([\d.]+)\*\* on ([\d,]+) bars\. The (\w+) folds ranged from "
                  r"([\d.]+) to ([\d.]+) AUC\. With horizon 12: AUC ([\d.]+), accuracy ([\d.]+), baseline ([\d.]+)\.",
                  text)
    assert m, "S4/README.md no longer quotes the ML figures in the form this test reads"
    ta = add_indicators(btc_1h_real)
    assert m.group(1) == f"{len(ta):,}"
    res = ml_scores(ta, WalkForward())  # the CLI's defaults: horizon 4, 1000 / 500 bars, default model, 1 thread
    o = res.overall
    assert [m.group(i) for i in (2, 3, 4)] == [f"{o['auc']:.3f}", f"{o['accuracy']:.3f}",
                                               f"{o['baseline_accuracy']:.3f}"]
    assert m.group(5) == f"{o['n_scored']:,}"
    words = {"four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8}
    aucs = res.folds["auc"].dropna()
    assert words[m.group(6)] == len(aucs)
    assert (m.group(7), m.group(8)) == (f"{aucs.min():.2f}", f"{aucs.max():.2f}")
    o12 = ml_scores(ta, WalkForward(horizon=12)).overall
    assert [m.group(i) for i in (9, 10, 11)] == [f"{o12['auc']:.3f}", f"{o12['accuracy']:.3f}",
                                                 f"{o12['baseline_accuracy']:.3f}"]
