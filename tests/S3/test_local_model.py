"""S3/trained_model.py: train, cross-validate, save (atomic, with a card), load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from S1.datasets import models_dir
from S1.errors import UserError
from S3.trained_model import (
    LocalModelClassifier,
    cross_validate,
    default_model_path,
    load_model,
    resolve_model_path,
    save_model,
    train,
)

POS = ["{} soars after ETF approval", "{} rallies to a record", "{} adoption grows fast", "{} surges on inflows"]
NEG = ["{} exchange hacked", "{} plunges on liquidations", "{} banned by regulator", "{} lender goes bankrupt"]
NEU = ["{} conference next week", "{} developers hold a call", "what is {}?", "{} podcast episode 12"]
COINS = ["Bitcoin", "Ether", "Solana", "Cardano", "Dogecoin", "Litecoin"]


def corpus():
    texts, labels = [], []
    for coin in COINS:
        for group, y in ((POS, 1), (NEG, -1), (NEU, 0)):
            for t in group:
                texts.append(t.format(coin))
                labels.append(y)
    return texts, np.array(labels)


def test_train_predict_and_scores():
    texts, y = corpus()
    clf = LocalModelClassifier(train(texts, y))
    res = clf.classify(["Polkadot soars after ETF approval", "Polkadot exchange hacked", "Polkadot podcast episode 3"])
    assert res["label"].tolist() == ["bullish", "bearish", "neutral"]
    assert res.loc[0, "score"] > 0 > res.loc[1, "score"]
    assert res["confidence"].between(1 / 3, 1).all()
    assert clf.classify([]).empty


def test_cross_validation_is_out_of_fold():
    texts, y = corpus()
    metrics, per_fold = cross_validate(texts, y, folds=3)
    assert metrics.n == len(y) and len(per_fold) == 3
    assert metrics.macro_f1 > 0.8
    shuffled, _ = cross_validate(texts, np.random.default_rng(0).permutation(y), folds=3)
    assert shuffled.macro_f1 < 0.6  # random labels cannot be learnt out of fold


def test_save_load_roundtrip_and_card(settings_env, monkeypatch):
    from S1.settings import get_settings
    from S3.classifiers import get_classifier, resolve_spec

    assert resolve_spec("auto") == "lexicon"  # no key, no trained model
    texts, y = corpus()
    model = train(texts, y)
    path = save_model(model, default_model_path(), card={"rows": len(y)})
    assert path.parent == models_dir()
    card = json.loads(path.with_suffix(".joblib.json").read_text())
    assert card["rows"] == len(y) and len(card["sha256"]) == 64 and "sklearn" in card
    loaded = load_model("sentiment_tfidf_lr")  # a bare name is looked up in data/models/
    probe = ["Polkadot rallies to a record", "Polkadot lender goes bankrupt"]
    assert loaded.classify(probe).equals(LocalModelClassifier(model).classify(probe))
    assert resolve_model_path(str(path)) == path
    assert resolve_spec("auto") == f"local:{path}"  # a trained default model is preferred to the lexicon
    assert isinstance(get_classifier("auto"), LocalModelClassifier)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    get_settings.cache_clear()
    assert resolve_spec("auto") == "openai"


def test_errors(settings_env, tmp_path):
    with pytest.raises(UserError, match="train one with"):
        load_model("nope")
    bad = tmp_path / "bad.joblib"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(UserError, match="has no card"):   # never unpickled without its card (issue 22)
        load_model(str(bad))
    with pytest.raises(UserError, match="no example of class"):
        train(["a", "b", "c"], [1, 0, 1])
