"""Honest figures for the offline classifiers on a labelled headline file
(``headline,label`` with 1/0/-1), as reported in ``S3/README.md``:

- lexicon: its neutral band is tuned on a stratified half (seed 0) and the figures
  are measured on the *other* half; plain VADER (±0.05) on the same half is the baseline;
- trained model: stratified k-fold cross-validation (out-of-fold predictions);
- every classifier, the LLM included, on the same rows (all, or a stratified sample):
  :func:`evaluate_classifier` -> one :class:`ClassifierResult` per table row
  (accuracy, macro-F1, per-class precision/recall, confusion; tokens, cost, requests,
  retries, latency and cache hits for the LLM), written by :mod:`S3.eval_report`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from S3.labels import INT_TO_LABEL, Metrics, evaluate, to_int
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


# ------------------------------------------------------------ one table for every classifier
#: ``--classifier`` choices of S3/evaluate.py (``all`` = the offline ones, plus ``llm`` if asked).
CLASSIFIERS = ("majority", "vader", "lexicon", "trained", "llm")
OFFLINE = ("majority", "vader", "lexicon", "trained")

PROTOCOLS = {
    "majority": "predicts the most frequent label of the whole labelled file",
    "vader": "plain VADER, compound >= 0.05 bullish, <= -0.05 bearish",
    "lexicon": "VADER + crypto lexicon, band of crypto_lexicon.yaml (its two thresholds were tuned on a "
               "stratified half of CryptoLin, seed 0: on CryptoLin, half of the rows are partly in-sample)",
    "trained": "TF-IDF + logistic regression, out-of-fold predictions of a stratified {folds}-fold CV "
               "over the whole labelled file (each row scored by a model that never saw it)",
    "llm": "LLM {model} through the OpenAI-compatible API at {base_url}, prompt {prompt} ({hash})",
}


def stratified_sample(labels, n: int | None, *, seed: int = 0) -> np.ndarray:
    """Exactly ``n`` row indices (sorted), each class in proportion to its count (largest
    remainder), drawn without replacement with ``seed``; ``None`` or ``n >= len``: all rows.

    >>> y = np.array([1] * 50 + [0] * 30 + [-1] * 20)
    >>> idx = stratified_sample(y, 10, seed=0)
    >>> len(idx), sorted(np.unique(y[idx], return_counts=True)[1].tolist())
    (10, [2, 3, 5])
    """
    y = np.asarray(labels)
    if n is None or n >= len(y):
        return np.arange(len(y))
    if n < 1:
        raise ValueError("the sample size must be at least 1")
    classes, counts = np.unique(y, return_counts=True)
    quota = counts * n / len(y)
    take = np.floor(quota).astype(int)
    for i in np.argsort(-(quota - take), kind="stable")[: n - take.sum()]:
        take[i] += 1
    rng = np.random.default_rng(seed)
    picked = [rng.choice(np.flatnonzero(y == c), size=k, replace=False) for c, k in zip(classes, take)]
    return np.sort(np.concatenate(picked)).astype(np.int64)


def per_class(y_true, y_pred) -> dict[str, dict[str, float]]:
    """Precision, recall, F1 and support of each class (``unknown`` predictions count as wrong)."""
    from sklearn.metrics import precision_recall_fscore_support

    p, r, f, s = precision_recall_fscore_support(np.asarray(y_true), np.asarray(y_pred), labels=[-1, 0, 1],
                                                 zero_division=0)
    return {INT_TO_LABEL[c]: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]),
                              "support": int(s[i])} for i, c in enumerate([-1, 0, 1])}


@dataclass
class ClassifierResult:
    """One row of the evaluation table."""

    name: str
    protocol: str
    metrics: Metrics
    per_class: dict
    predictions: list[str]
    llm: dict | None = None      # tokens, cost, requests, retries, latency, cache hits (LLM only)

    def as_dict(self) -> dict:
        conf = self.metrics.confusion
        return {"classifier": self.name, "protocol": self.protocol, "n": self.metrics.n,
                "accuracy": self.metrics.accuracy, "macro_f1": self.metrics.macro_f1,
                "unknown": self.metrics.n_unknown, "per_class": self.per_class,
                "confusion": {INT_TO_LABEL[int(t)]: {INT_TO_LABEL.get(int(c), "unknown"): int(conf.loc[t, c])
                                                     for c in conf.columns} for t in conf.index},
                "llm": self.llm}


def _result(name: str, protocol: str, y: np.ndarray, pred, llm: dict | None = None) -> ClassifierResult:
    pred = [str(x) for x in pred]
    return ClassifierResult(name=name, protocol=protocol, metrics=evaluate(y, pred),
                            per_class=per_class(y, to_int(pred).to_numpy()), predictions=pred, llm=llm)


def oof_trained(texts, labels, *, folds: int = 5, seed: int = 0, C: float = 1.0) -> np.ndarray:
    """Out-of-fold labels (-1/0/1) of the trained model, as :func:`S3.trained_model.cross_validate`."""
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    from S3.items import clean_text
    from S3.trained_model import build_model

    y = np.asarray(labels, dtype=np.int64)
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    return cross_val_predict(build_model(C=C, seed=seed), [clean_text(str(t)) for t in texts], y, cv=skf)


def llm_figures(usage) -> dict:
    """The cost/latency columns of an LLM row, from :class:`S3.llm.Usage`."""
    price = usage.price
    return {"model": usage.model, "prompt": usage.prompt_name, "prompt_hash": usage.prompt_hash,
            "items": usage.items, "cache_hits": usage.cached, "requests": usage.requests,
            "failed_requests": usage.failed_requests, "retries": usage.retries,
            "invalid_replies": usage.invalid_replies, "tokens_in": usage.prompt_tokens,
            "tokens_out": usage.completion_tokens, "replies_without_usage": usage.usage_missing,
            "cost_usd": usage.cost_usd, "price": price,
            "latency_p50_s": usage.latency_quantile(0.5), "latency_p95_s": usage.latency_quantile(0.95)}


def evaluate_classifier(name: str, texts, labels, rows, *, folds: int = 5, seed: int = 0,
                        llm_classifier=None, base_url: str = "") -> ClassifierResult:
    """Score classifier ``name`` on ``rows`` (indices into ``texts``/``labels``, the whole
    labelled file: the majority class and the trained model's folds use all of it)."""
    texts = [str(t) for t in texts]
    y_all = np.asarray(labels, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    y = y_all[rows]
    sel = [texts[i] for i in rows]
    if name == "majority":
        values, counts = np.unique(y_all, return_counts=True)
        top = INT_TO_LABEL[int(values[counts.argmax()])]
        return _result(name, PROTOCOLS[name] + f" ({top})", y, [top] * len(rows))
    if name == "vader":
        vader = SentimentIntensityAnalyzer()
        comp = np.array([vader.polarity_scores(t)["compound"] for t in sel])
        return _result(name, PROTOCOLS[name], y, _labels(comp, 0.05, -0.05))
    if name == "lexicon":
        return _result(name, PROTOCOLS[name], y, LexiconClassifier().classify(sel)["label"].tolist())
    if name == "trained":
        pred = oof_trained(texts, y_all, folds=folds, seed=seed)[rows]
        return _result(name, PROTOCOLS[name].format(folds=folds), y, [INT_TO_LABEL[int(p)] for p in pred])
    if name == "llm":
        if llm_classifier is None:
            raise ValueError("name='llm' needs llm_classifier (an S3.llm.OpenAIClassifier)")
        res = llm_classifier.classify(sel)
        u = llm_classifier.usage
        protocol = PROTOCOLS["llm"].format(model=u.model, base_url=base_url, prompt=u.prompt_name,
                                           hash=u.prompt_hash[:12])
        return _result(name, protocol, y, res["label"].tolist(), llm=llm_figures(u))
    raise ValueError(f"unknown classifier {name!r}; use one of {', '.join(CLASSIFIERS)}")
