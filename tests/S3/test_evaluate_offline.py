"""S3/evaluate.py --classifier for the offline classifiers: the table of S3/README.md
("The LLM next to the offline classifiers") is reproduced from the real CryptoLin file;
stratified sampling; the doctests of the evaluation modules."""

from __future__ import annotations

import doctest
import importlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from S3.evaluate import main
from S3.evaluation import stratified_sample

REPO = Path(__file__).resolve().parents[2]


def readme_rows() -> dict[str, list[str]]:
    """The rows of the README table between the eval-table markers: classifier -> cells."""
    text = (REPO / "S3/README.md").read_text(encoding="utf-8")
    block = text.split("<!-- eval-table -->")[1].split("<!-- /eval-table -->")[0]
    rows = {}
    for line in block.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) > 3 and cells[0] in ("majority", "vader", "lexicon", "trained"):
            rows[cells[0]] = cells
    return rows


def test_readme_offline_table_is_reproduced(settings_env, shared_dir, tmp_path, capsys):
    path = shared_dir / "data/sentiment/cryptolin_dev.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    expected = readme_rows()
    assert set(expected) == {"majority", "vader", "lexicon", "trained"}
    # no key and the OpenAI URL: `all` is the four offline classifiers, and says so
    assert main(["--labels", str(path), "--classifier", "all", "--out", str(tmp_path / "all.html")]) == 0
    out = capsys.readouterr().out
    assert "llm left out" in out
    printed = {}
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| ") and cells[0] in expected:
            printed[cells[0]] = cells
    for name, cells in expected.items():
        assert printed[name][: len(cells)] == cells, name
    report = json.loads((tmp_path / "all.json").read_text())
    assert [r["classifier"] for r in report["results"]] == ["majority", "vader", "lexicon", "trained"]
    assert all(r["llm"] is None and r["n"] == 1789 for r in report["results"])
    assert (tmp_path / "all.html").read_text().count("<table") >= 5  # the table + 4 confusion matrices


def test_stratified_sample_is_exact_proportional_and_seeded():
    rng = np.random.default_rng(7)
    y = rng.choice([-1, 0, 1], size=1000, p=[0.15, 0.35, 0.5])
    for n in (1, 2, 3, 10, 99, 500, 999):
        idx = stratified_sample(y, n, seed=1)
        assert len(idx) == n == len(np.unique(idx)) and (np.diff(idx) > 0).all()
        for c in (-1, 0, 1):
            assert abs((y[idx] == c).sum() - n * (y == c).mean()) < 1
        assert stratified_sample(y, n, seed=1).tolist() == idx.tolist()
    assert stratified_sample(y, 100, seed=1).tolist() != stratified_sample(y, 100, seed=2).tolist()
    assert stratified_sample(y, None).tolist() == stratified_sample(y, 1000).tolist() == list(range(1000))


@pytest.mark.parametrize("module", ["S3.evaluation", "S3.eval_report", "S3.llm_estimate", "S3.llm_prompt"])
def test_doctests(module):
    result = doctest.testmod(importlib.import_module(module))
    assert result.attempted > 0 and result.failed == 0


def test_prices_have_dates_and_bad_entries_are_refused(tmp_path):
    from S3.config import load_config

    prices = load_config().llm.prices
    assert prices and all(re.fullmatch(r"\d{4}-\d{2}-\d{2}", p["as_of"]) for p in prices.values())
    cfg = tmp_path / "c.yaml"
    cfg.write_text("llm: {prices: {my-llama: {input: 0, output: 0, as_of: 2026-12-06}}}\n")
    merged = load_config(cfg).llm.prices
    assert merged["my-llama"]["input"] == 0 and "gpt-4o-mini" in merged  # extends the shipped table
    cfg.write_text("llm: {prices: {my-llama: {input: 1}}}\n")
    from S1.errors import UserError

    with pytest.raises(UserError, match="prices"):
        load_config(cfg)


def test_default_report_path_and_script_mode(settings_env, shared_dir, capsys):
    import subprocess
    import sys

    path = shared_dir / "data/sentiment/cryptolin_dev.csv"
    if not path.exists():
        pytest.skip(f"{path} is absent")
    assert main(["--labels", str(path), "--classifier", "lexicon,majority", "--limit", "30"]) == 0
    capsys.readouterr()
    pages = sorted(settings_env.reports_dir.glob("sentiment_eval_*.html"))
    assert [re.fullmatch(r"sentiment_eval_lexicon-majority_\d{4}-\d{2}-\d{2}\.html", p.name) is not None
            for p in pages] == [True]
    assert json.loads(pages[0].with_suffix(".json").read_text())["selection"]["n"] == 30
    # as a script (python S3/evaluate.py), with the environment of the isolated settings
    import os

    env = {**os.environ, "REPORTS_DIR": str(settings_env.reports_dir / "script")}
    proc = subprocess.run([sys.executable, str(REPO / "S3/evaluate.py"), "--labels", str(path), "--classifier",
                           "vader", "--limit", "12"], check=False, capture_output=True, text=True, env=env, cwd=REPO,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| vader | 12 |" in proc.stdout
    assert len(list((settings_env.reports_dir / "script").glob("sentiment_eval_vader_*.json"))) == 1
