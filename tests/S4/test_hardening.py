"""Hardening of the YAML inputs (issue 22): a file passed by mistake is named, never echoed;
deeply nested YAML is one clear line, never a RecursionError, in every configuration loader."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from S1.errors import UserError

REPO = Path(__file__).resolve().parents[2]
SECRET = "sk-canary-9f3b2a7c1d-VALUE"

ENV_FILES = [
    f"OPENAI_API_KEY={SECRET}\nBINANCE_API_SECRET=abc123\n",
    f"# keys\nexport OPENAI_API_KEY={SECRET}\n",
    f"'{SECRET}'\n",
    f"OPENAI_API_KEY=\"{SECRET}\"\n",
]


@pytest.mark.parametrize("text", ENV_FILES)
def test_a_env_file_passed_as_rules_is_not_echoed(tmp_path, text):
    from S4.rules import load_rules

    path = tmp_path / ".env"
    path.write_text(text)
    with pytest.raises(UserError) as ei:
        load_rules(path)
    msg = str(ei.value)
    assert SECRET not in msg and "abc123" not in msg and "OPENAI_API_KEY" not in msg
    assert str(path) in msg and "must be a mapping" in msg and "a text of" in msg


def test_the_cli_does_not_echo_it_either(tmp_path):
    path = tmp_path / ".env"
    path.write_text(ENV_FILES[0])
    env = dict(os.environ, DATA_DIR=str(tmp_path / "data"), TOOLKIT_ENV_FILE=str(tmp_path / "empty.env"))
    (tmp_path / "empty.env").write_text("")
    r = subprocess.run([sys.executable, "S4/decision.py", "--symbol", "BTCUSDT", "--interval", "1h", "--days", "30",
                        "--rules", str(path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 2 and SECRET not in r.stdout + r.stderr, r.stderr
    assert "must be a mapping" in r.stderr


DEEP = "[" * 3000 + "]" * 3000
DEEP_MAP = "a: " + "{b: " * 2000 + "1" + "}" * 2000 + "\n"


def _loaders():
    from S1.batch_runner import load_config as batch
    from S2.ta import load_config as indicators
    from S3.config import load_config as s3
    from S6.config import RiskConfig

    return {"rules": lambda p: __import__("S4.rules", fromlist=["load_rules"]).load_rules(p),
            "S2 indicators": indicators, "S6 risk": RiskConfig.load, "S1 batch": batch, "S3 config": s3}


@pytest.mark.parametrize("text", [DEEP, DEEP_MAP])
@pytest.mark.parametrize("name", ["rules", "S2 indicators", "S6 risk", "S1 batch", "S3 config"])
def test_deep_yaml_is_one_line_not_a_recursion_error(tmp_path, name, text):
    path = tmp_path / "deep.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as ei:
        _loaders()[name](path)
    assert str(path) in str(ei.value) and "nesting deeper than" in str(ei.value)
    assert "\n" not in str(ei.value)


def test_a_config_cli_says_it_in_one_line(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text(DEEP)
    env = dict(os.environ, DATA_DIR=str(tmp_path / "data"), TOOLKIT_ENV_FILE=str(tmp_path / "empty.env"))
    (tmp_path / "empty.env").write_text("")
    r = subprocess.run([sys.executable, "S2/indicators.py", "--symbol", "BTCUSDT", "--interval", "1h", "--days", "30",
                        "--config", str(path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=180)
    lines = [x for x in r.stderr.splitlines() if x.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "nesting deeper than" in lines[0], r.stderr
    assert "RecursionError" not in r.stderr
