"""Every chart title a notebook sets says SIMULATED when the data is simulated: each
``title=`` / ``set_title`` / ``suptitle`` / ``name=`` (the chart name) and each
``title = ...`` assignment in a code cell carries a simulated label (a variable or
expression naming ``sim``). A new unlabelled chart title fails here."""

from __future__ import annotations

import ast

import nbformat
import pytest

from tests.notebook_runner import NOTEBOOKS

TITLE_CALLS = {"set_title", "suptitle"}
#: keyword -> the calls where it names a chart (``name=`` of S2's indicator_chart is its title)
TITLE_KEYWORDS = {"title": None, "name": "chart"}


def _labelled(src: str) -> bool:
    return "sim" in src.lower()


def _title_expressions(tree: ast.AST, source: str):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            fn = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            if fn in TITLE_CALLS and node.args:
                yield ast.get_source_segment(source, node.args[0])
            for kw in node.keywords:
                if kw.arg not in TITLE_KEYWORDS or (TITLE_KEYWORDS[kw.arg] and not fn.endswith(TITLE_KEYWORDS[kw.arg])):
                    continue
                if not isinstance(kw.value, ast.Name) and fn != "dict":
                    if isinstance(kw.value, ast.Constant) and not isinstance(kw.value.value, str):
                        continue
                    yield ast.get_source_segment(source, kw.value)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "title" for t in node.targets):
            yield ast.get_source_segment(source, node.value)


@pytest.mark.parametrize("name", sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")))
def test_chart_titles_carry_the_simulated_label(name):
    nb = nbformat.read(NOTEBOOKS / name, as_version=4)
    unlabelled = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for expr in _title_expressions(ast.parse(source), source):
            if expr and not _labelled(expr):
                unlabelled.append(expr)
    assert not unlabelled, f"{name}: chart titles without the simulated label: {unlabelled}"
