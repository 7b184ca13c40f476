"""Every sentiment figure the READMEs quote is recomputed here from ``../shared`` with the
code that produced it, and the test fails when a README's number drifts from what the code
gives: the S3 table of README.md (majority, plain VADER, lexicon, trained: 8 figures), the
"Measured on" table, confusion matrices and surrounding figures of S3/README.md, and the
asset-tag counts of both. (The per-class table of S3/README.md's evaluate section is
tests/S3/test_evaluate_offline.py's.)"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def _num(cell: str) -> str:
    return cell.replace("*", "").strip()


def _table(text: str, header: str) -> list[list[str]]:
    """The rows (cells) of the first markdown table whose header line contains ``header``."""
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if header in ln)
    rows = []
    for ln in lines[start + 2:]:
        if not ln.strip().startswith("|"):
            break
        rows.append([c.strip() for c in ln.strip().strip("|").split("|")])
    return rows


@pytest.fixture(scope="module")
def figures(shared_dir):
    """Everything the READMEs quote, computed the way S3/evaluate.py computes it."""
    from sklearn.model_selection import train_test_split

    from S3.evaluation import evaluate_lexicon, evaluate_model, majority_baseline
    from S3.items import clean_text, read_headlines
    from S3.labels import INT_TO_LABEL, evaluate, parse_true_labels
    from S3.trained_model import train

    path = shared_dir / "data/sentiment/cryptolin_dev.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    df = read_headlines(path, need_date=False)
    y = parse_true_labels(df["label"]).to_numpy()
    texts = df["title"].tolist()
    cv, per_fold = evaluate_model(texts, y, folds=5, seed=0)
    thirds = []
    for seed in (0, 1, 2):
        tr, te = train_test_split(np.arange(len(y)), test_size=1 / 3, stratify=y, random_state=seed)
        model = train([texts[i] for i in tr], y[tr], seed=seed)
        pred = model.predict([clean_text(texts[i]) for i in te])
        thirds.append(evaluate(y[te], [INT_TO_LABEL[int(p)] for p in pred]))
    full = train(texts, y)
    insample = evaluate(y, [INT_TO_LABEL[int(p)] for p in full.predict([clean_text(t) for t in texts])])
    return {"n": len(y), "majority": majority_baseline(y), "lex0": evaluate_lexicon(texts, y, seed=0),
            "lex1": evaluate_lexicon(texts, y, seed=1), "cv": cv, "per_fold": per_fold, "thirds": thirds,
            "insample": insample}


def test_top_level_readme_s3_table(figures):
    rows = _table((REPO / "README.md").read_text(encoding="utf-8"), "| classifier | evaluated on | accuracy |")
    got = {_num(r[0]).split()[0].lower(): (_num(r[1]), _num(r[2]), _num(r[3])) for r in rows}
    lex = figures["lex0"]
    want = {"majority": ("all rows", figures["majority"]), "plain": ("held-out half", lex.heldout_vader),
            "lexicon": ("held-out half", lex.heldout_tuned), "trained": ("5-fold cross-validation", figures["cv"])}
    assert set(got) == set(want)
    for name, (on, m) in want.items():
        assert got[name] == (on, f"{m.accuracy:.3f}", f"{m.macro_f1:.3f}"), name


def test_s3_readme_measured_table(figures):
    text = (REPO / "S3/README.md").read_text(encoding="utf-8")
    rows = {_num(r[0]): r[1:] for r in _table(text, "| classifier | evaluated on | accuracy | macro-F1 |")}
    n, lex0, lex1, cv, thirds = figures["n"], figures["lex0"], figures["lex1"], figures["cv"], figures["thirds"]
    half = lex0.heldout_tuned.n
    assert half == lex1.heldout_tuned.n == lex0.heldout_vader.n
    bull, bear = lex1.tuned_thresholds

    def cells(m):
        return [f"{m.accuracy:.3f}", f"{m.macro_f1:.3f}"]

    want = {
        "majority class (bullish)": [f"all {n:,}", *cells(figures["majority"])],
        "plain VADER (±0.05)": [f"held-out half ({half})", *cells(lex0.heldout_vader)],
        "lexicon (VADER + crypto lexicon, band tuned on the other half)": [f"held-out half ({half})",
                                                                           *cells(lex0.heldout_tuned)],
        f"lexicon, same split, seed 1 (band {bull:g} / {bear:g})": [f"held-out half ({half})",
                                                                    *cells(lex1.heldout_tuned)],
        "lexicon, shipped band": [f"all {n:,} (half of them tuned the band)", *cells(lex0.full_configured)],
        "trained model TF-IDF + LR, 5-fold stratified CV": [
            f"out-of-fold, all {n:,}", f"{cv.accuracy:.3f}",
            f"{cv.macro_f1:.3f} (folds {min(figures['per_fold']):.3f}–{max(figures['per_fold']):.3f})"],
        "trained model, trained on 2/3, scored on 1/3": [
            f"seeds 0 / 1 / 2 ({thirds[0].n} each)", " / ".join(f"{m.accuracy:.3f}" for m in thirds),
            " / ".join(f"{m.macro_f1:.3f}" for m in thirds)],
    }
    assert {k: [_num(c) for c in v] for k, v in rows.items()} == want
    # the sentences around it
    assert re.search(r"lexicon macro-F1 ≥ 0\.50 — met \((\S+) held-out\)", text).group(1) == f"{lex0.heldout_tuned.macro_f1:.3f}"
    assert re.search(r"trained ≥ 0\.60 — met\s+\((\S+) cross-validated\)", text).group(1) == f"{cv.macro_f1:.3f}"
    f1s = [m.macro_f1 for m in thirds]
    assert re.search(r"spread of ±(\S+) on a third", text).group(1) == f"{(max(f1s) - min(f1s)) / 2:.2f}"
    assert re.search(r"prints in-sample figures \(≈(\S+)\)", text).group(1) == f"{figures['insample'].accuracy:.2f}"


def test_s3_readme_confusion_matrices(figures):
    text = (REPO / "S3/README.md").read_text(encoding="utf-8")
    block = text.split("Confusion matrices (held-out half, lexicon / 5-fold CV, model):")[1].split("```")[1]
    left, right = {}, {}
    for ln in block.splitlines():
        m = re.fullmatch(r"true (\w+)\s+(\d+)\s+(\d+)\s+(\d+)\s+true (\w+)\s+(\d+)\s+(\d+)\s+(\d+)", ln.strip())
        if m:
            left[m.group(1)] = [int(x) for x in m.group(2, 3, 4)]
            right[m.group(5)] = [int(x) for x in m.group(6, 7, 8)]
    names = {-1: "bearish", 0: "neutral", 1: "bullish"}
    for printed, metrics in ((left, figures["lex0"].heldout_tuned), (right, figures["cv"])):
        conf = metrics.confusion
        assert printed == {names[t]: [int(conf.loc[t, p]) for p in (-1, 0, 1)] for t in (-1, 0, 1)}


def test_asset_tag_counts_in_both_readmes(cryptolin):
    from S3.assets import default_tagger, tag_counts
    from S3.items import clean_text

    tags = default_tagger().tag_texts(cryptolin["headline"].map(clean_text).tolist())
    counts = tag_counts(__import__("pandas").Series(tags))
    tagged = sum(1 for t in tags if t)
    several = sum(1 for t in tags if "," in t)
    top = (REPO / "README.md").read_text(encoding="utf-8")
    m = re.search(r"(\d+) of the ([\d,]+) real headlines get one \(BTC (\d+), ETH (\d+)", top)
    assert m and m.groups() == (str(tagged), f"{len(tags):,}", str(counts["BTC"]), str(counts["ETH"]))
    s3 = (REPO / "S3/README.md").read_text(encoding="utf-8")
    m = re.search(r"([\d,]+),\s+cleaned as `S3/news.py` stores them\): (\d+) headlines \((\d+) %\) get at least "
                  r"one tag, (\d+) of them two or\s+more\. Headlines per tag: (.+?) each\.", s3, re.S)
    assert m, "the tag paragraph of S3/README.md changed shape"
    assert m.group(1, 2, 3, 4) == (f"{len(tags):,}", str(tagged), str(round(100 * tagged / len(tags))), str(several))
    quoted = {}
    for part in " ".join(m.group(5).split()).split(", "):
        names, count = part.rsplit(" ", 1)
        for name in names.split("/"):
            quoted[name] = int(count)
    assert quoted == dict(counts)

