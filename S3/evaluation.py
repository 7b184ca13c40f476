"""Honest figures for the offline classifiers on a labelled headline file
(``headline,label`` with 1/0/-1), as reported in ``S3/README.md``:

- lexicon: its neutral band is tuned on a stratified half (seed 0) and the figures
  are measured on the *other* half; plain VADER (±0.05) on the same half is the baseline;
- trained model: stratified k-fold cross-validation (out-of-fold predictions).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from S3.labels import Metrics, evaluate
from S3.lexicon import LexiconClassifier, tune_thresholds
from S3.trained_model import cross_validate


@dataclass(frozen=True)
class LexiconEvaluation:
    tuned_thresholds: tuple[float, float]
    tune_macro_f1: float
    heldout_tuned: Metrics        # tuned band, held-out half
    heldout_configured: Metrics   # band from crypto_lexicon.yaml, held-out half
    heldout_vader: Metrics        # plain VADER +-0.05, held-out half
    full_configured: Metrics      # band from the YAML, whole file (partly in-sample)


def _labels(compound: np.ndarray, bull: float, bear: float) -> np.ndarray:
    return np.where(compound >= bull, "bullish", np.where(compound <= bear, "bearish", "neutral"))


def evaluate_lexicon(texts, labels, *, seed: int = 0, tune_fraction: float = 0.5) -> LexiconEvaluation:
    texts = pd.Series(list(texts), dtype=str)
    y = np.asarray(labels, dtype=np.int64)
    idx_tune, idx_test = train_test_split(np.arange(len(y)), train_size=tune_fraction, stratify=y,
                                          random_state=seed)
    clf = LexiconClassifier()
    comp = clf.compound(texts.tolist())
    th, f1 = tune_thresholds(comp[idx_tune], y[idx_tune])
    vader = SentimentIntensityAnalyzer()
    plain = np.array([vader.polarity_scores(t)["compound"] for t in texts.iloc[idx_test]])
    return LexiconEvaluation(
        tuned_thresholds=th, tune_macro_f1=f1,
        heldout_tuned=evaluate(y[idx_test], _labels(comp[idx_test], *th)),
        heldout_configured=evaluate(y[idx_test], clf.label_from_compound(comp[idx_test])),
        heldout_vader=evaluate(y[idx_test], _labels(plain, 0.05, -0.05)),
        full_configured=evaluate(y, clf.label_from_compound(comp)),
    )


def evaluate_model(texts, labels, *, folds: int = 5, seed: int = 0, C: float = 1.0):
    """(out-of-fold :class:`Metrics`, per-fold macro-F1 list)."""
    return cross_validate([str(t) for t in texts], labels, folds=folds, seed=seed, C=C)


def majority_baseline(labels) -> Metrics:
    y = np.asarray(labels, dtype=np.int64)
    values, counts = np.unique(y, return_counts=True)
    top = {1: "bullish", 0: "neutral", -1: "bearish"}[int(values[counts.argmax()])]
    return evaluate(y, [top] * len(y))
