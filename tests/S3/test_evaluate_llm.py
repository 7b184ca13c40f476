"""S3/evaluate.py --classifier llm end to end: the real openai client against the local
OpenAI-compatible server, whose "model" answers from a labelling the test knows, so the
expected accuracy, macro-F1, per-class precision/recall, confusion matrix, tokens and cost
are computed here independently (scikit-learn, the server's own usage log, the price YAML
read by hand) and compared with the report. Also: retries, cache hits, the dry estimate
against the served usage, prompt variants, unknown-model cost, and the real API (marked)."""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

from S1.cli import run as run_script
from S3.evaluate import main
from S3.items import clean_text
from S3.local.llm import labelling_responder

REPO = Path(__file__).resolve().parents[2]
NAMES = {1: "bullish", 0: "neutral", -1: "bearish"}


def noisy_labelling(cryptolin) -> tuple[dict[str, str], np.ndarray]:
    """A deterministic stand-in "model": the human label, except for the headlines whose
    sha1 ends in 0..4 (of 0..f): those get the next label round (bearish->neutral->bullish->bearish).
    Returns the mapping text->label the server answers from and the expected label of every row."""
    mapping: dict[str, str] = {}
    for h, lab in zip(cryptolin["headline"], cryptolin["label"]):
        text = clean_text(str(h))[:400]
        if text in mapping:
            continue  # a repeated headline gets the verdict of its first row (same text, same answer)
        wrong = int(hashlib.sha1(text.encode()).hexdigest()[-1], 16) < 5
        mapping[text] = NAMES[((int(lab) + 2) % 3) - 1] if wrong else NAMES[int(lab)]
    pred = np.array([{"bullish": 1, "neutral": 0, "bearish": -1}[mapping[clean_text(str(h))[:400]]]
                     for h in cryptolin["headline"]])
    return mapping, pred


@pytest.fixture
def labels_csv(shared_dir) -> Path:
    path = shared_dir / "data/sentiment/cryptolin_dev.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    return path


@pytest.fixture
def fast_yaml(tmp_path) -> Path:
    p = tmp_path / "fast.yaml"
    p.write_text("llm: {backoff_initial: 0.01, backoff_max: 0.02, max_retry_after: 5, timeout: 10}\n")
    return p


def run_eval(capsys, labels_csv, fast_yaml, out: Path, *extra) -> tuple[dict, str]:
    assert main(["--labels", str(labels_csv), "--config", str(fast_yaml), "--out", str(out), *extra]) == 0
    text = capsys.readouterr().out
    return json.loads(out.with_suffix(".json").read_text()), text


def llm_row(report: dict) -> dict:
    return next(r for r in report["results"] if r["classifier"] == "llm")


def test_llm_figures_equal_an_independent_computation(llm_server, llm_settings, cryptolin, labels_csv, fast_yaml,
                                                      tmp_path, capsys):
    mapping, expected = noisy_labelling(cryptolin)
    responder = labelling_responder(mapping)
    llm_server.responder = responder
    out = tmp_path / "r" / "eval.html"
    report, text = run_eval(capsys, labels_csv, fast_yaml, out, "--classifier", "llm", "--limit", "150",
                            "--sample-seed", "3")
    assert responder.misses == 0  # every headline reached the server as the labelling knows it

    # the sample: exactly 150 distinct rows, stratified by label
    rows = np.array(report["selection"]["rows"])
    y_all = cryptolin["label"].to_numpy()
    assert len(rows) == 150 == len(set(rows.tolist())) and report["selection"]["n"] == 150
    for c in (-1, 0, 1):
        assert abs((y_all[rows] == c).sum() - 150 * (y_all == c).mean()) < 1

    y, p = y_all[rows], expected[rows]
    r = llm_row(report)
    assert r["n"] == 150 and r["unknown"] == 0
    assert r["accuracy"] == pytest.approx(accuracy_score(y, p))
    assert r["macro_f1"] == pytest.approx(f1_score(y, p, labels=[-1, 0, 1], average="macro"))
    assert 0.5 < r["accuracy"] < 0.9  # the labelling's noise shows: neither perfect nor trivial
    prec, rec, _, support = precision_recall_fscore_support(y, p, labels=[-1, 0, 1], zero_division=0)
    for i, c in enumerate([-1, 0, 1]):
        assert r["per_class"][NAMES[c]]["precision"] == pytest.approx(prec[i])
        assert r["per_class"][NAMES[c]]["recall"] == pytest.approx(rec[i])
        assert r["per_class"][NAMES[c]]["support"] == support[i]
    cm = confusion_matrix(y, p, labels=[-1, 0, 1])
    assert [[r["confusion"][NAMES[t]][NAMES[q]] for q in (-1, 0, 1)] for t in (-1, 0, 1)] == cm.tolist()

    # tokens from the server's own log, cost from the price file read by hand
    llm = r["llm"]
    served_in = sum(q["usage"][0] for q in llm_server.requests)
    served_out = sum(q["usage"][1] for q in llm_server.requests)
    assert (llm["tokens_in"], llm["tokens_out"]) == (served_in, served_out) and served_in > 0
    price = yaml.safe_load((REPO / "S3/prices.yaml").read_text())["gpt-4o-mini"]
    assert llm["cost_usd"] == pytest.approx((served_in * price["input"] + served_out * price["output"]) / 1e6)
    assert llm["requests"] == len(llm_server.requests) == math.ceil(150 / 20)
    assert llm["retries"] == 0 and llm["cache_hits"] == 0 and llm["items"] == 150
    assert 0 < llm["latency_p50_s"] <= llm["latency_p95_s"]
    assert llm["model"] == "gpt-4o-mini" and llm["prompt"] == "default"
    # the table printed and the HTML page
    assert f"| llm | 150 | {r['accuracy']:.3f} | {r['macro_f1']:.3f} |" in text
    assert f"{served_in} / {served_out}" in text and llm["prompt_hash"] in text
    page = out.read_text()
    assert "<table" in page and llm["prompt_hash"] in page and f"{r['accuracy']:.3f}" in page

    # the same sample again: all from the cache, no request, nothing spent, same figures
    n_requests = len(llm_server.requests)
    again, _ = run_eval(capsys, labels_csv, fast_yaml, tmp_path / "again.html", "--classifier", "llm",
                        "--limit", "150", "--sample-seed", "3")
    a = llm_row(again)
    assert len(llm_server.requests) == n_requests
    assert a["llm"]["cache_hits"] == 150 and a["llm"]["requests"] == 0
    assert a["llm"]["tokens_in"] == a["llm"]["tokens_out"] == 0 and a["llm"]["cost_usd"] == 0
    assert a["llm"]["latency_p50_s"] is None and (a["accuracy"], a["macro_f1"]) == (r["accuracy"], r["macro_f1"])
    # another seed is another sample
    other, _ = run_eval(capsys, labels_csv, fast_yaml, tmp_path / "other.html", "--classifier", "lexicon",
                        "--limit", "150", "--sample-seed", "4")
    assert other["selection"]["rows"] != report["selection"]["rows"]


def test_retries_are_counted(llm_server, llm_settings, cryptolin, labels_csv, fast_yaml, tmp_path, capsys):
    mapping, expected = noisy_labelling(cryptolin)
    llm_server.responder = labelling_responder(mapping)
    llm_server.inject("429", retry_after=0.01)
    llm_server.inject("500", retry_after=None)
    report, _ = run_eval(capsys, labels_csv, fast_yaml, tmp_path / "e.html", "--classifier", "llm",
                         "--limit", "40")
    r = llm_row(report)
    faults = [q["fault"] for q in llm_server.requests]
    assert sorted(f for f in faults if f) == ["429", "500"]
    assert r["llm"]["retries"] == 2 and r["llm"]["failed_requests"] == 2
    assert r["llm"]["requests"] == len(llm_server.requests) == 2 + 2  # two batches of 20, two repeated
    assert r["unknown"] == 0
    rows = np.array(report["selection"]["rows"])
    assert r["accuracy"] == pytest.approx(accuracy_score(cryptolin["label"].to_numpy()[rows], expected[rows]))
    # tokens and latency only count answered requests
    assert r["llm"]["tokens_in"] == sum(q["usage"][0] for q in llm_server.requests if q["usage"])


def test_estimate_spends_nothing_and_is_within_its_derived_band(llm_server, llm_settings, cryptolin, labels_csv,
                                                                fast_yaml, tmp_path, capsys):
    mapping, _ = noisy_labelling(cryptolin)
    llm_server.responder = labelling_responder(mapping)
    out = tmp_path / "est.html"
    args = ["--labels", str(labels_csv), "--config", str(fast_yaml), "--out", str(out), "--classifier", "llm",
            "--limit", "90", "--sample-seed", "1"]
    assert main([*args, "--estimate"]) == 0
    printed = capsys.readouterr().out
    assert llm_server.requests == [] and not out.exists() and not out.with_suffix(".json").exists()
    est_in = int(printed.split("~")[1].split(" prompt")[0])
    est_out = int(printed.split("~")[2].split(" completion")[0])
    assert "90 row(s), 0 already cached" in printed and "5 request(s)" in printed
    price = yaml.safe_load((REPO / "S3/prices.yaml").read_text())["gpt-4o-mini"]
    assert f"${(est_in * price['input'] + est_out * price['output']) / 1e6:.4f}" in printed

    assert main(args) == 0
    capsys.readouterr()
    reqs = llm_server.requests
    n = len(reqs)
    assert n == 5
    served_in = sum(q["usage"][0] for q in reqs)
    served_out = sum(q["usage"][1] for q in reqs)
    # Band derived from the two formulas (not from timing): the server counts
    # floor(chars/4) + 8 prompt tokens per request, the estimate ceil(chars/4) + 3 per message
    # (2) + 3, over the same characters -> 1 or 2 more per request.
    assert n <= est_in - served_in <= 2 * n
    # Completion: the server sends json.dumps of verdicts with score 0.6 / 0.0 / -0.6, the estimate
    # assumes "-0.6" for every item, one character more for each non-bearish item (k of them):
    # -1 <= ceil((L + k_r)/4) - (floor(L/4) + 1) <= k_r/4 + 1 per request.
    sent = [it["text"] for i in range(n) for it in llm_server.user_items(i)]
    k = sum(mapping[t] != "bearish" for t in sent)
    assert -n <= est_out - served_out <= k / 4 + n
    # once run, the estimate knows everything is cached
    assert main([*args, "--estimate"]) == 0
    assert "90 row(s), 90 already cached, 0 headline(s) to send in 0 request(s)" in capsys.readouterr().out


def test_prompt_variants_are_told_apart(llm_server, llm_settings, cryptolin, labels_csv, fast_yaml, tmp_path, capsys):
    from S3.llm_prompt import load_prompt

    mapping, _ = noisy_labelling(cryptolin)
    llm_server.responder = labelling_responder(mapping)
    base = ["--classifier", "llm", "--limit", "20"]
    a, _ = run_eval(capsys, labels_csv, fast_yaml, tmp_path / "a.html", *base)
    b, _ = run_eval(capsys, labels_csv, fast_yaml, tmp_path / "b.html", *base, "--prompt", "cryptolin")
    ha, hb = llm_row(a)["llm"]["prompt_hash"], llm_row(b)["llm"]["prompt_hash"]
    assert ha == load_prompt("default").hash and hb == load_prompt("cryptolin").hash and ha != hb
    assert a["selection"]["rows"] == b["selection"]["rows"]  # same sample, comparable
    systems = [q["body"]["messages"][0]["content"] for q in llm_server.requests]
    assert systems == [load_prompt("default").system, load_prompt("cryptolin").system]  # not shared in the cache
    # a user's prompt file; renaming a prompt does not change its hash (only what the model reads counts)
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({"name": "mine", "system": load_prompt("cryptolin").system}))
    c, _ = run_eval(capsys, labels_csv, fast_yaml, tmp_path / "c.html", *base, "--prompt", str(mine))
    assert llm_row(c)["llm"]["prompt_hash"] == hb and llm_row(c)["llm"]["cache_hits"] == 20
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nsystem: too short\n")
    args = ["--labels", str(labels_csv), *base, "--prompt", str(bad)]
    assert run_script(main, args) == 2
    assert "prompt file" in capsys.readouterr().err


def test_unknown_model_costs_unknown_never_a_guess(llm_server, llm_settings, labels_csv, fast_yaml, tmp_path, capsys):
    report, text = run_eval(capsys, labels_csv, fast_yaml, tmp_path / "u.html", "--classifier", "llm",
                            "--limit", "10", "--model", "my-local-llama")
    r = llm_row(report)
    assert r["llm"]["cost_usd"] is None and r["llm"]["price"] is None and r["llm"]["tokens_in"] > 0
    assert "| unknown |" in text and "cost unknown" in text
    assert llm_server.requests[0]["body"]["model"] == "my-local-llama"
    assert main(["--labels", str(labels_csv), "--config", str(fast_yaml), "--classifier", "llm", "--limit", "10",
                 "--model", "other-llama", "--estimate"]) == 0
    assert "cost unknown" in capsys.readouterr().out


def test_user_errors(llm_server, llm_settings, labels_csv, capsys):
    for args, words in ((["--classifier", "llm", "--limit", "5000"], "more than the 1789 rows"),
                        (["--classifier", "gpt"], "unknown classifier"),
                        (["--classifier", "lexicon", "--estimate"], "--estimate is for the LLM"),
                        (["--limit", "10"], "need --classifier")):
        assert run_script(main, ["--labels", str(labels_csv), *args]) == 2
        assert words in capsys.readouterr().err
    assert llm_server.requests == []


@pytest.mark.internet
def test_real_openai_50_headlines(cryptolin, labels_csv, tmp_path, capsys, monkeypatch):
    """RUN_INTERNET_TESTS=1 and OPENAI_API_KEY: 50 real CryptoLin headlines through the real API
    (about 3 requests; a fraction of a cent with gpt-4o-mini)."""
    if not os.environ.get("OPENAI_API_KEY"):
        pytest.skip("OPENAI_API_KEY is not set")
    from S1.settings import get_settings

    monkeypatch.setenv("DATA_DIR", str(tmp_path / "data"))  # a fresh cache: really ask
    get_settings.cache_clear()
    out = tmp_path / "real.html"
    assert main(["--labels", str(labels_csv), "--classifier", "llm,lexicon", "--limit", "50", "--out", str(out),
                 "--estimate"]) == 0
    printed = capsys.readouterr().out
    est_in = int(printed.split("~")[1].split(" prompt")[0])
    assert main(["--labels", str(labels_csv), "--classifier", "llm,lexicon", "--limit", "50", "--out", str(out)]) == 0
    print(capsys.readouterr().out)
    r = llm_row(json.loads(out.with_suffix(".json").read_text()))
    assert r["n"] == 50 and r["unknown"] <= 5 and r["llm"]["requests"] >= 3
    assert r["llm"]["tokens_in"] > 0 and r["llm"]["tokens_out"] > 0
    assert 0 <= r["llm"]["latency_p50_s"] <= r["llm"]["latency_p95_s"]
    print(f"estimate {est_in} prompt tokens, served {r['llm']['tokens_in']} "
          f"(ratio {r['llm']['tokens_in'] / est_in:.2f})")
    get_settings.cache_clear()
