"""Every script the README (and each sprint README) tells a user to run exists and answers --help,
every Streamlit app it tells a user to ``streamlit run`` answers ``python APP --help`` (imported
without Streamlit running) and accepts the arguments the docs pass it, and the README holds the
two commands a newcomer needs, the same ones CI runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = [REPO / "README.md", *sorted(REPO.glob("S*/README*.md"))]
SCRIPT = re.compile(r"python (?:-m )?(S[1-9](?:[/.][a-z_0-9]+)+?)(?:\.py\b|(?=[^a-z_0-9./])|$)")
#: ``streamlit run S7/dashboard.py [-- ARGS]`` (ARGS end at a backtick, a table bar, a comment or the line)
STREAMLIT = re.compile(r"streamlit run (S[1-9]/[a-z_0-9]+\.py)(?:[ \t]+--[ \t]+([^`|#\n]*))?")


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


def _streamlit_commands() -> list[tuple[str, tuple[str, ...]]]:
    found = set()
    for doc in DOCS:
        for m in STREAMLIT.finditer(doc.read_text()):
            found.add((m.group(1), tuple((m.group(2) or "").split())))
    return sorted(found)


def test_the_docs_run_streamlit_apps():
    assert {app for app, _ in _streamlit_commands()} >= {"S7/dashboard.py", "S2/preview_streamlit.py"}


@pytest.mark.parametrize("app", sorted({app for app, _ in _streamlit_commands()}))
def test_every_documented_streamlit_app_answers_help(app):
    """``python APP --help`` imports the app without Streamlit running and prints its options under
    the name the docs use; plain ``python APP`` says to start it with the docs' command."""
    path = REPO / app
    assert path.exists(), f"the docs run {app} but {path} does not exist"
    r = subprocess.run([sys.executable, app, "--help"], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-500:]
    assert r.stdout.startswith(f"usage: {app}"), r.stdout[:200]
    r = subprocess.run([sys.executable, app], cwd=REPO, capture_output=True, text=True, timeout=180)
    assert r.returncode != 0 and f"run it with: streamlit run {app}" in r.stderr, r.stderr[-500:]


@pytest.mark.parametrize(("app", "argv"), [c for c in _streamlit_commands() if c[1]])
def test_documented_streamlit_arguments_are_the_apps(app, argv):
    """The arguments the docs pass after ``--`` are options the app knows (none silently ignored)."""
    import importlib

    module = importlib.import_module(app[:-3].replace("/", "."))
    args, unknown = module.build_parser().parse_known_args(list(argv))
    assert unknown == [], f"{app} does not know {unknown} (docs: streamlit run {app} -- {' '.join(argv)})"


@pytest.mark.parametrize("script", _scripts())
def test_every_documented_script_answers_help(script):
    path = REPO / f"{script}.py"
    assert path.exists(), f"the docs mention {script} but {path} does not exist"
    r = subprocess.run([sys.executable, str(path.relative_to(REPO)), "--help"], cwd=REPO, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-500:]
    assert "usage" in r.stdout.lower()
