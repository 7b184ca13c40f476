"""The LLM cost estimate S3/README.md quotes for all of CryptoLin (requests, prompt and completion
tokens, dollars for two models) is recomputed with ``S3/evaluate.py --estimate`` from ``../shared``;
the test fails when the README's figures drift from what the command prints. No request is sent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

ESTIMATE = re.compile(r"in (\d+) request\(s\); ~(\d+) prompt \+ ~(\d+) completion tokens .*?cost \$([\d.]+)")


def _estimate(labels: Path, model: str, monkeypatch, capsys) -> tuple[int, int, int, float]:
    from S1.settings import get_settings
    from S3.evaluate import main

    monkeypatch.setenv("OPENAI_API_KEY", "sk-estimate-only")  # configured, never used: --estimate sends nothing
    monkeypatch.setenv("OPENAI_MODEL", model)
    get_settings.cache_clear()
    assert main(["--labels", str(labels), "--classifier", "llm", "--estimate"]) == 0
    m = ESTIMATE.search(capsys.readouterr().out)
    assert m, "the estimate line changed its layout"
    return int(m.group(1)), int(m.group(2)), int(m.group(3)), float(m.group(4))


def test_the_readme_estimate_for_all_of_cryptolin(shared_dir, settings_env, monkeypatch, capsys):
    labels = shared_dir / "data/sentiment/cryptolin_dev.csv"
    if not labels.exists():
        pytest.skip(f"{labels} is absent")
    text = " ".join((REPO / "S3/README.md").read_text(encoding="utf-8").split())
    m = re.search(r"For all ([\d,]+) CryptoLin headlines it says: (\d+) requests, ~([\d,]+) prompt \+ ~([\d,]+) "
                  r"completion tokens, \*\*≈ \$([\d.]+) with gpt-4o-mini\*\* \(prices as of [\d-]+\), \$([\d.]+) "
                  r"with gpt-4.1-nano", text)
    assert m, "S3/README.md no longer quotes the estimate in the form this test reads"
    requests, tokens_in, tokens_out, cost_mini = _estimate(labels, "gpt-4o-mini", monkeypatch, capsys)
    n_rows = sum(1 for _ in labels.open(encoding="utf-8")) - 1
    assert int(m.group(1).replace(",", "")) == n_rows
    assert int(m.group(2)) == requests
    # the README rounds the token counts to the hundred
    assert m.group(3) == f"{round(tokens_in, -2):,}" and m.group(4) == f"{round(tokens_out, -2):,}"
    assert m.group(5) == f"{cost_mini:.2f}"
    *_, cost_nano = _estimate(labels, "gpt-4.1-nano", monkeypatch, capsys)
    assert m.group(6) == f"{cost_nano:.2f}"
