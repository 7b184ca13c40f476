"""A small local sentiment model: TF-IDF word (1-2) + character (2-5) n-grams and a
class-balanced logistic regression (scikit-learn), trained from any CSV with
``headline,label`` columns, saved under ``data/models/`` with a JSON card.

``score`` is P(bullish) - P(bearish), ``confidence`` the top class probability.

>>> texts = ["btc soars", "eth soars", "exchange hacked", "wallet hacked", "conference today", "meetup today"] * 3
>>> model = build_model().fit(texts, [1, 1, -1, -1, 0, 0] * 3)
>>> LocalModelClassifier(model).classify(["sol soars", "bridge hacked"])["label"].tolist()
['bullish', 'bearish']

Trust boundary: models are stored with joblib, a pickle, and loading a pickle can run
code. :func:`save_model` writes the model's SHA-256 into its JSON card and
:func:`load_model` refuses a model whose card is missing or whose bytes do not match it,
*before* unpickling (the bytes checked are the bytes loaded). This stops a planted,
swapped or damaged ``.joblib`` (e.g. one dropped into ``data/models/``, which
``--classifier auto`` picks up); it cannot stop someone who can write both the model and
its card -- treat ``DATA_DIR/models`` like your code: writable only by you.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Sequence

import joblib
import numpy as np
import pandas as pd
import sklearn
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import FeatureUnion, Pipeline

from S1.datasets import atomic_write_bytes, atomic_write_text, models_dir
from S1.errors import UserError
from S3.items import clean_text
from S3.labels import INT_TO_LABEL, evaluate, result_frame

DEFAULT_NAME = "sentiment_tfidf_lr"


def build_model(*, C: float = 1.0, seed: int = 0) -> Pipeline:
    """The untrained pipeline (word + char TF-IDF, balanced logistic regression)."""
    features = FeatureUnion([
        ("word", TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True, lowercase=True,
                                 token_pattern=r"(?u)\b\w[\w$%.-]*\b")),
        ("char", TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True)),
    ])
    clf = LogisticRegression(C=C, class_weight="balanced", max_iter=2000, random_state=seed)
    return Pipeline([("features", features), ("clf", clf)])


def cross_validate(texts: Sequence[str], labels: Sequence[int], *, folds: int = 5, seed: int = 0,
                   C: float = 1.0):
    """Out-of-fold predictions of a stratified ``folds``-fold CV -> (:class:`S3.labels.Metrics`,
    per-fold macro-F1 list)."""
    y = np.asarray(labels, dtype=np.int64)
    skf = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
    pred = cross_val_predict(build_model(C=C, seed=seed), [clean_text(t) for t in texts], y, cv=skf)
    per_fold = []
    for _, test in skf.split(np.zeros(len(y)), y):
        per_fold.append(evaluate(y[test], [INT_TO_LABEL[int(p)] for p in pred[test]]).macro_f1)
    return evaluate(y, [INT_TO_LABEL[int(p)] for p in pred]), per_fold


class LocalModelClassifier:
    """Wraps a fitted pipeline whose classes are -1/0/1."""

    name = "local"

    def __init__(self, model: Pipeline, *, path: Path | None = None):
        self.model = model
        self.path = path
        classes = [int(c) for c in model.classes_]
        if sorted(classes) != [-1, 0, 1]:
            raise UserError(f"the model's classes are {classes}", "train it on labels -1, 0 and 1")
        self._cols = {c: i for i, c in enumerate(classes)}

    def classify(self, texts: Sequence[str]) -> pd.DataFrame:
        texts = [clean_text(t) for t in texts]
        if not texts:
            return result_frame([], [], [])
        proba = self.model.predict_proba(texts)
        top = proba.argmax(axis=1)
        labels = [INT_TO_LABEL[int(self.model.classes_[i])] for i in top]
        score = proba[:, self._cols[1]] - proba[:, self._cols[-1]]
        return result_frame(labels, score, proba.max(axis=1))


def train(texts: Sequence[str], labels: Sequence[int], *, C: float = 1.0, seed: int = 0) -> Pipeline:
    y = np.asarray(labels, dtype=np.int64)
    missing = sorted({-1, 0, 1} - set(y.tolist()))
    if missing:
        raise UserError(f"the labels have no example of class(es) {missing}",
                        "a training file needs rows labelled 1, 0 and -1")
    return build_model(C=C, seed=seed).fit([clean_text(t) for t in texts], y)


def default_model_path() -> Path:
    return models_dir() / f"{DEFAULT_NAME}.joblib"


def save_model(model: Pipeline, path: Path, *, card: dict) -> Path:
    """Write the model (joblib, atomic) and ``<path>.json`` (its card: data, CV figures, versions)."""
    import io

    path = Path(path)
    buf = io.BytesIO()
    joblib.dump(model, buf, compress=3)
    atomic_write_bytes(path, buf.getvalue())
    card = {**card, "sklearn": sklearn.__version__, "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "sha256": hashlib.sha256(buf.getvalue()).hexdigest()}
    atomic_write_text(path.with_suffix(path.suffix + ".json"), json.dumps(card, indent=2, default=str))
    return path


def resolve_model_path(spec: str) -> Path:
    """``local:PATH`` argument -> file: a path, or a bare name under ``data/models/``."""
    p = Path(spec).expanduser()
    candidates = [p, models_dir() / p, models_dir() / f"{spec}.joblib"] if not p.is_absolute() else [p]
    for c in candidates:
        if c.is_file():
            return c
    raise UserError(f"model {spec!r} not found (looked in {', '.join(str(c) for c in candidates)})",
                    "train one with: python S3/train_classifier.py --labels FILE.csv")


def verified_model_bytes(path: Path) -> bytes:
    """The model file's bytes when they match the SHA-256 of the card :func:`save_model`
    wrote beside it; a :class:`UserError` (nothing unpickled) otherwise."""
    path = Path(path)
    card_path = path.with_suffix(path.suffix + ".json")
    fix = "load only models this project trained: python S3/train_classifier.py --labels FILE.csv"
    try:
        card = json.loads(card_path.read_text())
        want = str(card["sha256"])
    except FileNotFoundError:
        raise UserError(f"model {path} has no card {card_path.name} (not written by S3/train_classifier.py): "
                        "not loaded, a pickle can run code", fix) from None
    except (OSError, ValueError, KeyError, TypeError):
        raise UserError(f"model card {card_path} is unreadable or has no sha256: {path} not loaded", fix) from None
    data = path.read_bytes()
    if hashlib.sha256(data).hexdigest() != want:
        raise UserError(f"model {path} does not match the SHA-256 in its card (replaced or damaged): not loaded, "
                        "a pickle can run code", fix)
    return data


def load_model(spec: str | Path) -> LocalModelClassifier:
    """A trained model, unpickled only after its bytes matched its card (:func:`verified_model_bytes`)."""
    import io

    path = resolve_model_path(str(spec))
    data = verified_model_bytes(path)
    try:
        model = joblib.load(io.BytesIO(data))
    except Exception as exc:
        raise UserError(f"cannot load model {path}: {type(exc).__name__}: {exc}",
                        "re-train it with python S3/train_classifier.py (scikit-learn versions may differ)") from exc
    if not hasattr(model, "predict_proba"):
        raise UserError(f"{path} is not a classifier with predict_proba", "train it with S3/train_classifier.py")
    return LocalModelClassifier(model, path=path)
