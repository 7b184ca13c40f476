"""S3/lexicon.py: VADER + crypto lexicon, phrases, thresholds and their tuning."""

from __future__ import annotations

import numpy as np
import pytest

from S1.errors import UserError
from S3.lexicon import LexiconClassifier, tune_thresholds


def test_crypto_words_override_vader():
    clf = LexiconClassifier()
    # VADER alone scores "fine" as positive and does not know "hack", "delisting" or "liquidation"
    c = clf.compound(["Exchange fined $5 million", "Bridge hack", "Token delisting", "Liquidation wave"])
    assert (c < 0).all()


def test_phrases_and_negation():
    clf = LexiconClassifier()
    pos, neg = clf.compound(["SEC signals ETF approval", "SEC signals no ETF approval"])
    assert pos > 0.4 and neg < pos  # VADER's negation applies to the phrase token
    assert clf.compound(["Ether hits an all-time high"])[0] > 0.4
    assert clf.compound(["Project accused of a rug pull"])[0] < -0.4
    # whole words only: "Bancor" is not "ban", "hackathon" is not "hack"
    assert clf.compound(["Bancor hosts a hackathon"])[0] == 0.0


def test_labels_scores_and_confidence_are_consistent():
    res = LexiconClassifier().classify(["Bitcoin soars", "Bitcoin plunges", "Bitcoin conference", ""])
    assert res["label"].tolist() == ["bullish", "bearish", "neutral", "neutral"]
    assert res.loc[0, "score"] > 0 > res.loc[1, "score"] and res.loc[2, "score"] == 0
    assert res["confidence"].between(0, 1).all() and res["score"].between(-1, 1).all()


def test_thresholds_band():
    text = ["Bitcoin gains a little"]
    c = LexiconClassifier().compound(text)[0]
    assert LexiconClassifier(thresholds=(c + 0.01, -0.05)).classify(text)["label"][0] == "neutral"
    assert LexiconClassifier(thresholds=(c - 0.01, -0.05)).classify(text)["label"][0] == "bullish"
    with pytest.raises(ValueError):
        LexiconClassifier(thresholds=(-0.1, 0.1))


def test_tune_thresholds_finds_the_separating_band():
    rng = np.random.default_rng(0)
    y = rng.choice([-1, 0, 1], 600)
    compound = np.where(y == 1, rng.uniform(0.3, 1, 600), np.where(y == -1, rng.uniform(-1, -0.2, 600),
                                                                   rng.uniform(-0.15, 0.25, 600)))
    (bull, bear), f1 = tune_thresholds(compound, y)
    assert f1 == pytest.approx(1.0) and 0.25 <= bull <= 0.3 and -0.2 <= bear <= -0.15


def test_bad_lexicon_file(tmp_path):
    p = tmp_path / "lex.yaml"
    p.write_text("words:\n  moon: 9\n")
    with pytest.raises(UserError, match="VADER's scale"):
        LexiconClassifier(lexicon_path=p)
    with pytest.raises(UserError, match="does not exist"):
        LexiconClassifier(lexicon_path=tmp_path / "none.yaml")
