"""Sentiment labels, the result frame every classifier returns, and the metrics
printed by ``S3/classify.py``.

A classifier maps texts to a frame with one row per text::

    label       "bullish" | "neutral" | "bearish" | "unknown"
    score       float in [-1, 1]  (signed strength; 0 for neutral/unknown)
    confidence  float in [0, 1]   (0 for unknown)

Numeric labels in files are 1 (positive/bullish), 0 (neutral), -1 (negative/bearish).

>>> to_int(["bullish", "neutral", "bearish", "unknown"]).tolist()
[1, 0, -1, -9]
>>> m = evaluate([1, 0, -1, 1], ["bullish", "neutral", "neutral", "bullish"])
>>> round(m.accuracy, 2), int(m.confusion.loc[-1, 0])
(0.75, 1)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import pandas as pd

from S1.errors import UserError

LABELS = ("bearish", "neutral", "bullish")
UNKNOWN = "unknown"
LABEL_TO_INT = {"bearish": -1, "neutral": 0, "bullish": 1, UNKNOWN: -9}
INT_TO_LABEL = {-1: "bearish", 0: "neutral", 1: "bullish"}
RESULT_COLUMNS = ("label", "score", "confidence")


def result_frame(labels, scores, confidences, index=None) -> pd.DataFrame:
    """The typed result frame (scores clipped to [-1, 1], confidences to [0, 1])."""
    return pd.DataFrame({
        "label": pd.Series(list(labels), dtype=str).to_numpy(),
        "score": np.clip(np.asarray(scores, dtype=np.float64), -1.0, 1.0),
        "confidence": np.clip(np.asarray(confidences, dtype=np.float64), 0.0, 1.0),
    }, index=index)


def to_int(labels) -> pd.Series:
    """Label names -> 1/0/-1 (``unknown`` -> -9, never equal to a true label)."""
    return pd.Series([LABEL_TO_INT[str(x)] for x in labels], dtype=np.int64)


def parse_true_labels(values) -> pd.Series:
    """Read a ``label`` column: 1/0/-1 (also "1.0", "+1") or bullish/neutral/bearish,
    positive/negative."""
    names = {"bullish": 1, "positive": 1, "pos": 1, "neutral": 0, "neu": 0,
             "bearish": -1, "negative": -1, "neg": -1}
    out = []
    for i, v in enumerate(values):
        s = str(v).strip().lower()
        try:
            n = int(float(s))
        except ValueError:
            n = names.get(s, None)
        if n not in (-1, 0, 1):
            raise UserError(f"label column row {i + 1}: {v!r} is not 1, 0 or -1",
                            "use 1 (positive), 0 (neutral), -1 (negative)")
        out.append(n)
    return pd.Series(out, dtype=np.int64)


def macro_f1(true: np.ndarray, pred: np.ndarray, labels=(-1, 0, 1)) -> float:
    """Unweighted mean of the per-class F1 (a class never true nor predicted scores 0,
    as scikit-learn's ``f1_score(average="macro", zero_division=0)``).

    >>> round(macro_f1(np.array([1, 0, -1, 1]), np.array([1, 0, 0, 1])), 4)
    0.5556
    """
    true, pred = np.asarray(true), np.asarray(pred)
    f1 = []
    for c in labels:
        tp = np.sum((pred == c) & (true == c))
        denom = np.sum(pred == c) + np.sum(true == c)
        f1.append(2.0 * tp / denom if denom else 0.0)
    return float(np.mean(f1))


@dataclass(frozen=True)
class Metrics:
    n: int
    accuracy: float
    macro_f1: float
    n_unknown: int
    confusion: pd.DataFrame  # rows: true -1/0/1, columns: predicted -1/0/1 (+ unknown)

    def text(self) -> str:
        conf = self.confusion.copy()
        conf.index = [f"true {INT_TO_LABEL[i]}" for i in conf.index]
        conf.columns = [f"pred {INT_TO_LABEL.get(c, 'unknown')}" for c in conf.columns]
        return (f"n={self.n}  accuracy={self.accuracy:.3f}  macro-F1={self.macro_f1:.3f}"
                f"  unknown={self.n_unknown}\n{conf.to_string()}")


def evaluate(true: Sequence[int], predicted: Sequence[str]) -> Metrics:
    """Accuracy, macro-F1 over the three classes and the confusion matrix.
    ``unknown`` predictions count as wrong."""
    y = np.asarray(true, dtype=np.int64)
    p = to_int(predicted).to_numpy()
    if len(y) != len(p):
        raise ValueError("true and predicted labels differ in length")
    cols = [-1, 0, 1] + ([-9] if (p == -9).any() else [])
    conf = pd.DataFrame(0, index=[-1, 0, 1], columns=cols, dtype=np.int64)
    for t, q in zip(y, p):
        conf.loc[t, q] += 1
    acc = float((y == p).mean()) if len(y) else float("nan")
    f1 = macro_f1(y, p) if len(y) else float("nan")
    return Metrics(n=len(y), accuracy=acc, macro_f1=f1, n_unknown=int((p == -9).sum()), confusion=conf)
