"""Every configuration YAML goes through ``S1.yaml_load.load_file``: a missing, oversized,
non-UTF-8, too deeply nested or malformed file is one line naming it (exit 2 from a script)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from S1.errors import UserError
from S1.yaml_load import MAX_BYTES, load_file

REPO = Path(__file__).resolve().parents[2]
BROKEN = "a: [1, 2\nb: 3\n"          # an unclosed flow list: a syntax error on line 2


@pytest.fixture
def bad_files(tmp_path) -> dict[str, Path]:
    files = {
        "syntax": BROKEN,
        "deep": "[" * 5000 + "]" * 5000,
        "big": "a: " + "x" * (MAX_BYTES + 10) + "\n",
    }
    out = {k: tmp_path / f"{k}.yaml" for k in files}
    for k, text in files.items():
        out[k].write_text(text)
    out["binary"] = tmp_path / "binary.yaml"
    out["binary"].write_bytes(b"a: \xff\xfe\x00\n")
    out["missing"] = tmp_path / "missing.yaml"
    out["folder"] = tmp_path
    return out


@pytest.mark.parametrize(("kind", "needle"), [
    ("syntax", "line 2, column 2: not valid YAML"), ("deep", "nesting deeper than 64 levels"),
    ("big", "bytes, more than the"), ("binary", "is not UTF-8 text"), ("missing", "does not exist"),
    ("folder", "is not a file")])
def test_a_bad_file_is_one_line_naming_it(bad_files, kind, needle):
    with pytest.raises(UserError) as err:
        load_file(bad_files[kind], what="test file", fix="fix it")
    text = str(err.value)
    assert needle in text and str(bad_files[kind]) in text and "\n" not in text


def test_a_good_file_loads(tmp_path):
    p = tmp_path / "ok.yaml"
    p.write_text("a: [1, 2]\nb: {c: x}\n")
    assert load_file(p) == {"a": [1, 2], "b": {"c": "x"}}


def _loaders():
    """Each YAML loader of S3 and S8, called on ``path``."""
    def assets(path):
        from S3.assets import load_tagger
        return load_tagger(path)

    def lexicon(path):
        from S3.lexicon import LexiconClassifier
        return LexiconClassifier(lexicon_path=path)

    def prompt(path):
        from S3.llm_prompt import load_prompt
        return load_prompt(path)

    def prices(path):
        from S3.config import load_price_file
        return load_price_file(path)

    def s3_config(path):
        from S3.config import load_config
        return load_config(path)

    def s8_config(path):
        from S8.config import load_config
        return load_config(path)

    return {"assets": assets, "lexicon": lexicon, "prompt": prompt, "prices": prices, "s3_config": s3_config,
            "s8_config": s8_config}


@pytest.mark.parametrize("loader", sorted(_loaders()))
@pytest.mark.parametrize("kind", ["syntax", "deep"])
def test_every_loader_refuses_a_bad_file_in_one_line(bad_files, loader, kind):
    with pytest.raises(UserError) as err:
        _loaders()[loader](bad_files[kind])
    text = str(err.value)
    assert str(bad_files[kind]) in text and "\n" not in text
    assert ("line 2, column 2" if kind == "syntax" else "nesting deeper") in text


def _run(*args, cwd=REPO):
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_scripts_exit_2_with_one_line(bad_files, tmp_path, settings_env, monkeypatch):
    monkeypatch.setenv("CONTROL_API_TOKEN", "t" * 32)          # the service checks its token first
    headlines = tmp_path / "h.csv"
    headlines.write_text("headline\nBitcoin rallies\n")
    good_cfg = tmp_path / "s3.yaml"
    good_cfg.write_text(f"llm:\n  prices_file: {bad_files['syntax']}\n")   # a valid file naming a broken one
    cases = [
        ("S3/classify.py", "--input", str(headlines), "--out", str(tmp_path / "o.parquet"), "--config",
         str(bad_files["syntax"])),
        ("S3/classify.py", "--input", str(headlines), "--out", str(tmp_path / "o.parquet"), "--config", str(good_cfg)),
        ("S8/service.py", "--config", str(bad_files["syntax"])),
    ]
    for args in cases:
        r = _run(*args)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2, (args, r.stderr)
        assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
        assert str(bad_files["syntax"]) in lines[0] and "line 2, column 2" in lines[0]
    assert not (tmp_path / "o.parquet").exists()
