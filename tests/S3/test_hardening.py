"""Hardening of S3 (issue 22): a planted model file never runs, a header-only input is an
error, headlines never become spreadsheet formulas in CSV outputs."""

from __future__ import annotations

import csv
import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from S1.errors import UserError

REPO = Path(__file__).resolve().parents[2]


class _Planted:
    """Unpickling this calls ``Path.write_text(marker, "ran")``: code execution."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def _plant(path: Path, marker: Path) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    data = pickle.dumps(_Planted(marker))
    path.write_bytes(data)
    return data


def test_a_planted_model_is_never_unpickled_by_auto(settings_env, tmp_path):
    from S1.datasets import models_dir
    from S3.classifiers import get_classifier

    marker = tmp_path / "code-ran"
    _plant(models_dir() / "sentiment_tfidf_lr.joblib", marker)
    with pytest.raises(UserError) as ei:
        get_classifier("auto")
    assert "has no card" in ei.value.problem and "S3/train_classifier.py" in ei.value.fix
    assert not marker.exists()


def test_a_model_swapped_after_training_is_refused(settings_env, tmp_path):
    from S3.trained_model import load_model, save_model, train

    texts = ["btc soars", "eth soars", "exchange hacked", "wallet hacked", "conference today", "meetup today"] * 3
    path = tmp_path / "m.joblib"
    save_model(train(texts, [1, 1, -1, -1, 0, 0] * 3), path, card={"rows": len(texts)})
    assert load_model(str(path)).classify(["sol soars"])["label"].tolist() == ["bullish"]   # ours loads
    marker = tmp_path / "code-ran"
    _plant(path, marker)                          # replaced, its card kept
    with pytest.raises(UserError, match="does not match the SHA-256"):
        load_model(str(path))
    assert not marker.exists()
    card = path.with_suffix(".joblib.json")
    card.write_text("{not json")
    with pytest.raises(UserError, match="unreadable or has no sha256"):
        load_model(str(path))
    assert not marker.exists()


def _classify(tmp_path: Path, args: list[str]) -> subprocess.CompletedProcess:
    env = dict(os.environ, DATA_DIR=str(tmp_path / "data"), REPORTS_DIR=str(tmp_path / "reports"),
               TOOLKIT_ENV_FILE=str(tmp_path / "empty.env"))
    env.pop("OPENAI_API_KEY", None)
    (tmp_path / "empty.env").write_text("")
    return subprocess.run([sys.executable, "S3/classify.py", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=180)


def test_a_header_only_csv_is_an_error_and_writes_nothing(tmp_path):
    src = tmp_path / "h.csv"
    src.write_text("headline,label\n")
    out = tmp_path / "out.csv"
    out.write_text("previous,result\n")
    r = _classify(tmp_path, ["--input", str(src), "--classifier", "lexicon", "--out", str(out)])
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "holds no headline" in lines[0], r.stderr
    assert out.read_text() == "previous,result\n"


def test_formula_headlines_are_prefixed_in_csv_outputs(tmp_path):
    heads = ["=HYPERLINK(\"http://evil\",\"BTC\")", "+1 BTC soars", "-5% ETH slumps", "@SUM(A1:A9)",
             "Bitcoin rallies to a record"]
    src = tmp_path / "h.csv"
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["headline"])
    for h in heads:
        w.writerow([h])
    src.write_text(buf.getvalue())
    out = tmp_path / "out.csv"
    r = _classify(tmp_path, ["--input", str(src), "--classifier", "lexicon", "--out", str(out)])
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(out.open()))
    col = "title" if "title" in rows[0] else "headline"
    got = [row[col] for row in rows]
    assert got == ["'" + h for h in heads[:4]] + [heads[4]]
    assert all(row["label"] in ("bullish", "bearish", "neutral") for row in rows)
    assert all(not str(v).startswith(("=", "+", "@")) for row in rows for k, v in row.items() if k != "score")


def test_spreadsheet_safe_leaves_numbers_alone():
    import pandas as pd

    from S1.datasets import csv_text

    text = csv_text(pd.DataFrame({"title": ["-x", "ok"], "score": [-0.5, 0.25]}), index=False)
    assert text.splitlines() == ["title,score", "'-x,-0.5", "ok,0.25"]
