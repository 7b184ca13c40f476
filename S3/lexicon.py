"""Offline lexicon classifier: VADER plus a crypto lexicon (``S3/crypto_lexicon.yaml``).

Single words override or extend VADER's lexicon; multi-word phrases ("ETF
approval", "rug pull") are replaced by one synthetic token before VADER reads
the text, so its negation and booster rules apply to them too. The VADER
compound score is the ``score``; a neutral band (tuned thresholds in the YAML)
gives the ``label``; ``confidence`` is ``|compound|``.

>>> clf = LexiconClassifier()
>>> clf.classify(["Exchange hacked, $40M stolen", "SEC approves spot bitcoin ETF",
...               "Bitcoin conference starts Monday"])["label"].tolist()
['bearish', 'bullish', 'neutral']
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd
from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from S1.errors import UserError
from S1.yaml_load import load_file
from S3.items import clean_text
from S3.labels import result_frame

DEFAULT_LEXICON = Path(__file__).with_name("crypto_lexicon.yaml")


@lru_cache(maxsize=4)
def _load(path: str) -> tuple[dict, dict, tuple[float, float]]:
    p = Path(path)
    raw = load_file(p, what="lexicon file", fix=f"pass an existing, valid YAML, e.g. {DEFAULT_LEXICON}") or {}
    if not isinstance(raw, dict):
        raise UserError(f"lexicon file {p} must map words / phrases / thresholds", f"see {DEFAULT_LEXICON}")
    words = {str(k).lower(): float(v) for k, v in (raw.get("words") or {}).items()}
    phrases = {str(k).lower(): float(v) for k, v in (raw.get("phrases") or {}).items()}
    th = raw.get("thresholds") or {}
    bull, bear = float(th.get("bullish", 0.05)), float(th.get("bearish", -0.05))
    for name, value in list(words.items()) + list(phrases.items()):
        if not -4.0 <= value <= 4.0:
            raise UserError(f"{p}: valence of {name!r} is {value}", "valences are on VADER's scale, -4 .. 4")
    if not bear <= 0 <= bull:
        raise UserError(f"{p}: thresholds must satisfy bearish <= 0 <= bullish", "fix thresholds:")
    return words, phrases, (bull, bear)


class LexiconClassifier:
    """VADER + crypto lexicon. ``thresholds=(bullish, bearish)`` overrides the YAML's."""

    name = "lexicon"

    def __init__(self, *, lexicon_path: str | Path | None = None,
                 thresholds: tuple[float, float] | None = None):
        words, phrases, th = _load(str(lexicon_path or DEFAULT_LEXICON))
        self.thresholds = tuple(thresholds) if thresholds is not None else th
        if not self.thresholds[1] <= 0 <= self.thresholds[0]:
            raise ValueError("thresholds must be (bullish >= 0, bearish <= 0)")
        self._vader = SentimentIntensityAnalyzer()
        self._vader.lexicon.update(words)
        self._phrases = []
        for i, (phrase, value) in enumerate(sorted(phrases.items(), key=lambda kv: -len(kv[0]))):
            token = f"cryptophrase{i}"
            self._vader.lexicon[token] = value
            pat = re.compile(rf"(?<!\w){re.escape(phrase)}" + (r"(?!\w)" if phrase[-1].isalnum() else ""))
            self._phrases.append((pat, f" {token} "))

    def _prepare(self, text: str) -> str:
        s = clean_text(text).lower()
        for pat, token in self._phrases:
            s = pat.sub(token, s)
        return s

    def compound(self, texts: Sequence[str]) -> np.ndarray:
        """VADER compound score in [-1, 1] of each text."""
        return np.array([self._vader.polarity_scores(self._prepare(t))["compound"] for t in texts],
                        dtype=np.float64)

    def label_from_compound(self, compound: np.ndarray) -> np.ndarray:
        bull, bear = self.thresholds
        return np.where(compound >= bull, "bullish", np.where(compound <= bear, "bearish", "neutral"))

    def classify(self, texts: Sequence[str]) -> pd.DataFrame:
        c = self.compound(list(texts))
        labels = self.label_from_compound(c)
        score = np.where(labels == "neutral", 0.0, c)
        return result_frame(labels, score, np.abs(c))


def tune_thresholds(compound: np.ndarray, true: np.ndarray, *, grid: np.ndarray | None = None
                    ) -> tuple[tuple[float, float], float]:
    """The (bullish, bearish) band with the best macro-F1 on ``(compound, true)``.
    Use it on a tuning split only and report figures on held-out data."""
    from S3.labels import macro_f1

    true = np.asarray(true)
    grid = np.round(np.arange(0.0, 0.81, 0.025), 3) if grid is None else grid
    best = ((0.05, -0.05), -1.0)
    for bull in grid:
        for bear in grid:
            pred = np.where(compound >= bull, 1, np.where(compound <= -bear, -1, 0))
            if bull == 0 and bear == 0:
                continue
            f1 = macro_f1(true, pred)
            if f1 > best[1] + 1e-12:
                best = ((float(bull), float(-bear)), float(f1))
    return best
