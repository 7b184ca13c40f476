"""Every script the README (and each sprint README) tells a user to run exists and answers --help,
and the README holds the two commands a newcomer needs, the same ones CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted(REPO.glob("S*/README*.md"))]
SCRIPT = re.compile(r"python (?:-m )?(S[1-9](?:[/.][a-z_0-9]+)+?)(?:\.py\b|(?=[^a-z_0-9./])|$)")


def _scripts() -> list[str]:
    found = set()
    for doc in DOCS:
        for m in SCRIPT.finditer(doc.read_text()):
            if not m.group(1).endswith(("/x", ".x")):  # "python -m S3.x" means any script
                found.add(m.group(1).replace(".", "/"))
    return sorted(found)


def test_the_two_newcomer_commands_and_ci():
    readme = (REPO / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme
    ci = (REPO / ".ci/run").read_text()
    assert ci.strip().splitlines()[-1] == "make test"
    makefile = (REPO / "Makefile").read_text()
    assert re.search(r"^test: setup\n\t\$\(BIN\)/python -m pytest", makefile, re.M)
    assert re.search(r"^demo: setup\n\t\$\(BIN\)/python -m S7.pipeline", makefile, re.M)


def test_readme_links_resolve():
    readme = (REPO / "README.md").read_text()
    for link in re.findall(r"\]\(((?:S\d|bench|tests)[^)#]*)\)", readme):
        assert (REPO / link).exists(), f"README links to missing {link}"


@pytest.mark.parametrize("script", _scripts())
def test_every_documented_script_answers_help(script):
    path = REPO / f"{script}.py"
    assert path.exists(), f"the docs mention {script} but {path} does not exist"
    r = subprocess.run([sys.executable, str(path.relative_to(REPO)), "--help"], cwd=REPO, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-500:]
    assert "usage" in r.stdout.lower()
