"""Classification tests for every S3 classifier (lexicon, trained local model,
OpenAI-compatible LLM through a local server): hand-labelled cases always, the
real CryptoLin headlines when ../shared is present."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.model_selection import train_test_split

from S3.evaluation import evaluate_lexicon
from S3.labels import evaluate, parse_true_labels
from S3.lexicon import LexiconClassifier
from S3.llm import OpenAIClassifier
from S3.llm_cache import VerdictCache
from S3.trained_model import LocalModelClassifier, train
from tests.S3.fixtures import cryptolin, hand_cases, llm_server, llm_settings  # noqa: F401  (fixtures)


# ---------------------------------------------------------------------------- lexicon
def test_lexicon_hand_cases(hand_cases):
    res = LexiconClassifier().classify(hand_cases["headline"].tolist())
    assert res["label"].tolist() == hand_cases["expected"].tolist()


def test_lexicon_on_cryptolin_held_out(cryptolin):
    y = parse_true_labels(cryptolin["label"]).to_numpy()
    ev = evaluate_lexicon(cryptolin["headline"].tolist(), y, seed=0)
    assert ev.heldout_tuned.n == len(y) - len(y) // 2
    assert ev.heldout_tuned.macro_f1 >= 0.50          # the target, on data the band never saw
    assert ev.heldout_configured.macro_f1 >= 0.50     # the band shipped in crypto_lexicon.yaml
    assert ev.heldout_tuned.macro_f1 > ev.heldout_vader.macro_f1 + 0.05  # the crypto lexicon adds real signal
    # another split: the figure is not an accident of seed 0
    assert evaluate_lexicon(cryptolin["headline"].tolist(), y, seed=1).heldout_tuned.macro_f1 >= 0.50


# ------------------------------------------------------------------------ trained model
def test_trained_model_hand_cases(hand_cases):
    corpus, labels = [], []
    for coin in ("Bitcoin", "Ether", "Solana", "Cardano", "XRP", "Dogecoin"):
        for text, y in ((f"{coin} soars after ETF approval", 1), (f"{coin} rallies as demand surges", 1),
                        (f"{coin} startup raises funding", 1), (f"{coin} exchange hacked, funds stolen", -1),
                        (f"{coin} plunges on liquidation wave", -1), (f"regulator bans {coin} trading", -1),
                        (f"{coin} conference next week", 0), (f"{coin} developers schedule a call", 0),
                        (f"what is {coin}?", 0)):
            corpus.append(text)
            labels.append(y)
    clf = LocalModelClassifier(train(corpus, labels))
    res = clf.classify(hand_cases["headline"].tolist())
    m = evaluate(parse_true_labels(hand_cases["expected"]).to_numpy(), res["label"].tolist())
    assert m.accuracy >= 0.75, m.text()


def test_trained_model_on_cryptolin_held_out_third(cryptolin):
    y = parse_true_labels(cryptolin["label"]).to_numpy()
    tr, te = train_test_split(np.arange(len(y)), test_size=1 / 3, stratify=y, random_state=0)
    texts = cryptolin["headline"].to_numpy()
    clf = LocalModelClassifier(train(texts[tr].tolist(), y[tr]))
    m = evaluate(y[te], clf.classify(texts[te].tolist())["label"].tolist())
    assert m.macro_f1 >= 0.58, m.text()   # README: ~0.62 (5-fold CV 0.627)
    assert m.accuracy > 0.55


# ------------------------------------------------------------------- LLM (local server)
def _llm(llm_settings, tmp_path, **kw):
    from S3.config import load_config

    cfg = load_config().llm.model_copy(update={"backoff_initial": 0.01, "backoff_max": 0.02, **kw})
    return OpenAIClassifier(settings=llm_settings, config=cfg, cache=VerdictCache(tmp_path / "c.sqlite"),
                            progress=False)


def test_openai_classifier_hand_cases(llm_server, llm_settings, tmp_path, hand_cases):
    # the local "model" answers like the lexicon; the real openai client, batching and parsing must keep
    # every verdict with its headline
    llm_server.responder = _reversed_lexicon
    res = _llm(llm_settings, tmp_path, batch_size=5).classify(hand_cases["headline"].tolist())
    assert res["label"].tolist() == hand_cases["expected"].tolist()
    assert len(llm_server.requests) == 4


def test_openai_classifier_on_cryptolin_matches_its_model(llm_server, llm_settings, tmp_path, cryptolin):
    llm_server.responder = _reversed_lexicon
    y = parse_true_labels(cryptolin["label"]).to_numpy()
    texts = cryptolin["headline"].tolist()
    via_llm = _llm(llm_settings, tmp_path, batch_size=25, max_concurrency=4).classify(texts)
    direct = LexiconClassifier().classify(texts)
    assert (via_llm["label"] == direct["label"]).all()
    m = evaluate(y, via_llm["label"].tolist())
    assert m.n_unknown == 0 and m.macro_f1 == pytest.approx(evaluate(y, direct["label"].tolist()).macro_f1)


def _reversed_lexicon(items):
    from S3.local.llm import lexicon_responder

    return list(reversed(lexicon_responder(items)))
