"""The project's rooms stay clean: no import cycles, sprints import only earlier sprints (or each
other without a loop), local servers and simulators are reached only through each sprint's
``offline`` module, and no product file is named like a test.

The import graph is built with :mod:`ast` (no module is imported), so the check is cheap and sees
imports inside functions too. The checker itself is tested on a small synthetic tree, so a
broken checker cannot pass silently.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SPRINTS = sorted(p.name for p in REPO.glob("S[0-9]") if (p / "__init__.py").exists())


def module_files(root: Path) -> dict[str, Path]:
    """``{"S1.local.exchange": path, …}`` for every module of every sprint package under ``root``."""
    out = {}
    for pkg in sorted(p for p in root.glob("S[0-9]") if (p / "__init__.py").exists()):
        for f in sorted(pkg.rglob("*.py")):
            parts = f.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            out[name] = f
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    """Module -> the project modules it imports (at any depth: top level, functions, TYPE_CHECKING)."""
    mods = module_files(root)
    graph: dict[str, set[str]] = {m: set() for m in mods}
    for name, f in mods.items():
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8"), filename=str(f))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import: resolve against the importing package
                    pkg = name.split(".") if f.name == "__init__.py" else name.split(".")[:-1]
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ([base] if base else []))
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in targets:
                # "import S1.local.exchange" also imports S1.local and S1: the module itself is the edge
                if t in mods and t != name:
                    graph[name].add(t)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on_stack.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                elif w in on_stack:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    x = stack.pop()
                    on_stack.discard(x)
                    comp.append(x)
                    if x == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def package_graph(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    pg: dict[str, set[str]] = {m.split(".")[0]: set() for m in graph}
    for a, bs in graph.items():
        for b in bs:
            if a.split(".")[0] != b.split(".")[0]:
                pg[a.split(".")[0]].add(b.split(".")[0])
    return pg


def is_local(module: str) -> bool:
    return module.split(".")[1:2] == ["local"]


# ---------------------------------------------------------------------------- the checker, on a toy tree
def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        p = tmp_path / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    return tmp_path


def test_checker_finds_module_and_package_cycles(tmp_path):
    root = _tree(tmp_path, {
        "S1/__init__.py": "", "S1/a.py": "def f():\n    from S1.b import x\n", "S1/b.py": "from S1 import a\nx = 1\n",
        "S2/__init__.py": "", "S2/c.py": "import S1.a\n", "S1/d.py": "from S2.c import *\n",
        "S1/local/__init__.py": "", "S1/local/srv.py": "from .. import a\n",
    })
    g = import_graph(root)
    assert g["S1.local.srv"] == {"S1", "S1.a"}, "relative imports must resolve"
    assert cycles(g) == [["S1.a", "S1.b"]]
    assert cycles(package_graph(g)) == [["S1", "S2"]]


# ---------------------------------------------------------------------------- the project
@pytest.fixture(scope="module")
def graph():
    return import_graph(REPO)


def test_every_sprint_module_is_seen(graph):
    assert {"S1.errors", "S1.offline", "S4.rules", "S5.engine", "S7.engine"} <= set(graph)
    assert sum(1 for m in graph if is_local(m)) >= 8, "the local servers should be under S*/local/"


def test_no_import_cycle_between_modules(graph):
    assert cycles(graph) == []


def test_no_import_cycle_between_sprints(graph):
    pg = package_graph(graph)
    assert cycles(pg) == [], f"sprint imports: { {k: sorted(v) for k, v in pg.items()} }"
    assert pg["S1"] == set(), f"S1 is the ground floor and imports no later sprint, got {sorted(pg['S1'])}"


def test_product_code_reaches_local_servers_only_through_offline(graph):
    bad = sorted(f"{a} -> {b}" for a, bs in graph.items() for b in bs
                 if is_local(b) and not is_local(a) and a.split(".")[1:] != ["offline"])
    assert bad == [], "import S*.local.* only from the sprint's offline module (or from tests)"


def test_local_servers_never_import_later_sprints_product_code(graph):
    # a local server may use its own sprint's and earlier sprints' code, never reach "up" the chain
    for a, bs in graph.items():
        for b in bs:
            if is_local(a):
                assert b.split(".")[0] <= a.split(".")[0], f"{a} imports {b}"


def test_no_test_files_outside_tests():
    offenders = [str(p.relative_to(REPO)) for s in SPRINTS for p in (REPO / s).rglob("test_*.py")]
    assert offenders == []


def test_the_chain_orchestrator_lives_where_the_chain_ends(graph):
    assert "S1.pipeline" not in graph
    assert {m.split(".")[0] for m in graph["S7.pipeline"]} >= {"S1", "S3"}
