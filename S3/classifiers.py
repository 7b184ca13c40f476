"""Choose a classifier from a ``--classifier`` spec and score a frame of headlines.

Specs: ``lexicon`` (VADER + crypto lexicon, offline), ``local:PATH`` (a model
trained by ``S3/train_classifier.py``; a bare name is looked up in ``data/models/``),
``openai`` (any OpenAI-compatible server, see :mod:`S3.llm`), and ``auto``:
``openai`` when ``OPENAI_API_KEY`` is set, else the default trained model when
``data/models/sentiment_tfidf_lr.joblib`` exists, else ``lexicon``.

>>> clf = get_classifier("lexicon")
>>> clf.classify(["Bitcoin ETF approval sends BTC to record high"])["label"].tolist()
['bullish']
"""

from __future__ import annotations

import logging
from typing import Protocol, Sequence

import pandas as pd

from S1.datasets import models_dir
from S1.errors import UserError
from S1.settings import Settings, get_settings
from S3.config import S3Config, load_config

log = logging.getLogger(__name__)

SPECS_HELP = "lexicon, local:PATH, openai or auto"


class Classifier(Protocol):
    name: str

    def classify(self, texts: Sequence[str]) -> pd.DataFrame: ...


def resolve_spec(spec: str, *, settings: Settings | None = None) -> str:
    """``auto`` -> the concrete spec it stands for; other specs are checked and returned."""
    spec = (spec or "auto").strip()
    if spec == "auto":
        settings = settings or get_settings()
        if settings.openai_api_key is not None:
            return "openai"
        # (not imported from S3.trained_model: that would load scikit-learn for every script)
        default_model = models_dir() / "sentiment_tfidf_lr.joblib"
        if default_model.exists():
            return f"local:{default_model}"
        return "lexicon"
    if spec in ("lexicon", "openai") or (spec.startswith("local:") and len(spec) > 6):
        return spec
    raise UserError(f"unknown classifier {spec!r}", f"use {SPECS_HELP}")


def get_classifier(spec: str, *, settings: Settings | None = None, config: S3Config | None = None,
                   progress: bool = True) -> Classifier:
    spec = resolve_spec(spec, settings=settings)
    if spec == "lexicon":
        from S3.lexicon import LexiconClassifier

        return LexiconClassifier()
    if spec.startswith("local:"):
        from S3.trained_model import load_model

        return load_model(spec[6:])
    from S3.llm import make_openai_classifier

    return make_openai_classifier(settings=settings, config=config or load_config(), progress=progress)


def classify_frame(df: pd.DataFrame, classifier: Classifier, *, text_column: str = "title") -> pd.DataFrame:
    """``df`` with ``label``, ``score``, ``confidence`` columns added (same index)."""
    if text_column not in df.columns:
        raise UserError(f"no {text_column!r} column to classify", "name the text column 'headline' or 'title'")
    res = classifier.classify(df[text_column].fillna("").astype(str).tolist())
    res.index = df.index
    out = df.drop(columns=[c for c in ("label", "score", "confidence") if c in df.columns]).copy()
    return out.join(res)
