"""The library's import structure: no module cycles inside ``mibench/``, and no runtime module imports the trainers.

The analysis is file-level and deliberately strict: an import anywhere in a file counts (inside a function, or
under ``TYPE_CHECKING``), because a function-level import hides a cycle from Python but not from a reader.
A cycle is a set of modules that all reach each other through such imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: The runtime library: source folder -> the package it is installed as (pyproject.toml's package-dir).
RUNTIME_ROOTS = {"mibench": "mibench", "tasks": "mibench.tasks", "methods": "mibench.methods"}
#: The trainers: a repository tool beside the library, never imported by it.
TRAINING_PACKAGE = "training"
#: Cycles tolerated, by package prefix: none.
ALLOWED_CYCLE_PACKAGES: tuple[str, ...] = ()


def module_files(folder: Path, package: str) -> dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` file under ``folder`` installed as ``package``."""
    modules = {}
    for path in sorted(folder.rglob("*.py")):
        parts = list(path.relative_to(folder).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join([package, *parts])] = path
    return modules


def imported_names(path: Path) -> set[str]:
    """Every absolute module name a file imports, anywhere in it (``from a.b import c`` gives a.b and a.b.c)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def import_graph(modules: dict[str, Path], root: str) -> dict[str, set[str]]:
    """Module -> the modules of ``modules`` it imports. A name resolves to its longest known module prefix
    (``from pkg.mod import func`` is an edge to ``pkg.mod``); imports of a module's own parent packages and of
    ``root`` itself are left out, as Python runs those before the module in any case."""
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target in imported_names(path):
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name and target != root and not name.startswith(target + "."):
                graph[name].add(target)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The groups of two or more modules that all import each other, directly or through others (sorted)."""
    reachable = {}
    for start in graph:
        seen, todo = set(), [start]
        while todo:
            for target in graph[todo.pop()]:
                if target not in seen:
                    seen.add(target)
                    todo.append(target)
        reachable[start] = seen
    groups = {frozenset([m, *(o for o in reachable[m] if m in reachable[o])]) for m in graph}
    return sorted(sorted(group) for group in groups if len(group) > 1)


def _allowed(group: list[str]) -> bool:
    return any(all(m == p or m.startswith(p + ".") for m in group) for p in ALLOWED_CYCLE_PACKAGES)


# ------------------------------------------------------------------------------------------ the analysis itself
def _package(tmp_path: Path, files: dict[str, str]) -> dict[str, Path]:
    for relative, text in files.items():
        path = tmp_path / "pkg" / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return module_files(tmp_path / "pkg", "pkg")


def test_the_analysis_finds_a_cycle_hidden_in_a_function_and_under_type_checking(tmp_path):
    modules = _package(tmp_path, {
        "__init__.py": "from pkg.a import f\n",  # importing the root package is not an edge
        "a.py": "from pkg.b import g\ndef f():\n    return g()\n",
        "b.py": "def g():\n    from pkg.a import f\n    return f\n",  # hidden in a function: still a cycle
        "sub/__init__.py": "",
        "sub/c.py": ("import pkg.sub\n"  # its own parent package: not an edge
                     "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from pkg.sub.d import D\n"),
        "sub/d.py": "from pkg.sub.c import *\nclass D: ...\n",
        "e.py": "import pkg.a\nimport json\n",  # imports into a cycle without being part of it
    })
    graph = import_graph(modules, "pkg")
    assert graph["pkg.e"] == {"pkg.a"} and graph["pkg.sub.c"] == {"pkg.sub.d"}  # parent package left out
    assert cycles(graph) == [["pkg.a", "pkg.b"], ["pkg.sub.c", "pkg.sub.d"]]


def test_the_analysis_finds_no_cycle_in_a_one_way_chain(tmp_path):
    modules = _package(tmp_path, {"__init__.py": "", "low.py": "import os\n", "mid.py": "from pkg.low import x\n",
                                  "top.py": "from pkg import mid\nfrom pkg.low import y\n"})
    assert cycles(import_graph(modules, "pkg")) == []


# ------------------------------------------------------------------------------------------ the library
def test_the_library_has_no_import_cycles():
    graph = import_graph(module_files(REPO / "mibench", "mibench"), "mibench")
    assert len(graph) > 50  # the whole library was read
    found = [group for group in cycles(graph) if not _allowed(group)]
    assert found == [], "import cycles in mibench/ (move the shared code to a module both can import):\n" + \
        "\n".join(" <-> ".join(group) for group in found)


@pytest.mark.parametrize("folder", sorted(RUNTIME_ROOTS))
def test_no_runtime_module_imports_the_trainers(folder):
    offenders = [f"{path.relative_to(REPO)} imports {name}"
                 for path in module_files(REPO / folder, RUNTIME_ROOTS[folder]).values()
                 for name in sorted(imported_names(path))
                 if name == TRAINING_PACKAGE or name.startswith(TRAINING_PACKAGE + ".")]
    assert offenders == []


def test_the_trainers_are_a_package_beside_the_library():
    trainers = module_files(REPO / TRAINING_PACKAGE, TRAINING_PACKAGE)
    assert {"training", "training.zoo", "training.planted", "training.sae", "training.vocab"} <= set(trainers)
    moved = ["mibench/zoo/train.py", "mibench/zoo/planted.py", "mibench/zoo/vocab.py", "mibench/causal/train_sae.py"]
    assert [path for path in moved if (REPO / path).exists()] == []
