"""Packaging and command-line checks: entry points, the tasks/methods folder mapping, the version."""

from __future__ import annotations

import fnmatch
import importlib.metadata
import os
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import mibench
from mibench import cli
from mibench.graph.layout import GraphLayout
from mibench.models.families import FAMILIES

REPO = Path(__file__).resolve().parents[1]
# Source folder -> the package it is installed as (mirrors [tool.setuptools] package-dir in pyproject.toml).
PACKAGE_ROOTS = {"mibench": "mibench", "tasks": "mibench.tasks", "methods": "mibench.methods"}
# MIB's published edge counts for the reference models (leaderboard backend constant EDGE_COUNTS).
MIB_EDGE_COUNTS = {"gpt2": 32_491, "qwen2": 179_749, "gemma2": 74_218, "llama": 1_592_881}


def _run(args: list[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _mibench(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    proc = _run([sys.executable, "-m", "mibench", *args], cwd=cwd)
    assert proc.returncode == 0, f"mibench {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _installed_version() -> str | None:
    try:
        return importlib.metadata.version("mibench")
    except importlib.metadata.PackageNotFoundError:
        return None


def _pyproject() -> dict:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    return tomllib.loads((REPO / "pyproject.toml").read_text())


# ------------------------------------------------------------------------------------------ CLI
def test_help_lists_commands_and_examples(tmp_path):
    out = _mibench("--help", cwd=tmp_path).stdout
    assert "examples:" in out
    for cmd in cli.COMMANDS:
        assert cmd.name in out


@pytest.mark.parametrize("name", [cmd.name for cmd in cli.COMMANDS])
def test_subcommand_help_has_examples(tmp_path, name):
    out = _mibench(name, "--help", cwd=tmp_path).stdout
    assert "examples:" in out
    command = next(cmd for cmd in cli.COMMANDS if cmd.name == name)
    for example, _ in command.examples:
        assert example in out


def test_every_example_parses():
    """Examples in the help texts are real command lines: they must at least parse."""
    parser = cli.build_parser()
    for cmd in cli.COMMANDS:
        assert cmd.examples, f"command {cmd.name!r} has no examples"
        for example, _ in cmd.examples:
            words = shlex.split(example)
            assert words[0] == "mibench", example
            parser.parse_args(words[1:])


@pytest.mark.parametrize("example", [ex for ex, _ in next(c for c in cli.COMMANDS if c.name == "ls").examples])
def test_ls_examples_run(tmp_path, example):
    _mibench(*shlex.split(example)[1:], cwd=tmp_path)


def test_ls_models_table(tmp_path):
    out = _mibench("ls", cwd=tmp_path).stdout
    for family in FAMILIES:
        layout = GraphLayout(**family.reference_sizes)
        assert family.name in out
        assert family.reference_model in out
        assert f"{layout.n_forward:,}" in out
        assert f"{layout.n_backward:,}" in out
        assert f"{layout.n_edges:,}" in out
    for name, edges in MIB_EDGE_COUNTS.items():
        family = next(f for f in FAMILIES if f.name == name)
        assert GraphLayout(**family.reference_sizes).n_edges == edges, name


def test_ls_does_not_import_torch(tmp_path):
    code = (
        "import sys, mibench.cli; mibench.cli.main(['ls']); "
        "assert 'torch' not in sys.modules, 'mibench ls imported torch'; "
        "assert 'transformers' not in sys.modules, 'mibench ls imported transformers'; "
        "assert 'ray' not in sys.modules, 'mibench ls imported ray'"
    )
    proc = _run([sys.executable, "-c", code], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_no_command_prints_help(tmp_path):
    out = _mibench(cwd=tmp_path).stdout
    assert out.startswith("usage: mibench")


def test_version_matches_package(tmp_path):
    out = _mibench("--version", cwd=tmp_path).stdout.strip()
    assert out == f"mibench {mibench.__version__}"
    installed = _installed_version()
    if installed is not None:  # the distribution's metadata reads the same attribute at build time
        assert installed == mibench.__version__, "installed metadata is stale: reinstall with `pip install -e .`"


def test_console_script(tmp_path):
    script = Path(sys.executable).parent / ("mibench.exe" if os.name == "nt" else "mibench")
    if not script.exists():
        pytest.skip("the mibench console script is not installed next to this interpreter")
    for args in (["--help"], ["ls"]):
        proc = _run([str(script), *args], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr
    assert "gpt2" in proc.stdout


# -------------------------------------------------------------------------------- folder mapping
def test_tasks_and_methods_import_as_mibench_subpackages(tmp_path):
    """tasks/ and methods/ import as mibench.tasks / mibench.methods from an install (editable or not).

    Run outside the clone: from the clone's root, a regular install's ``mibench`` is shadowed by the
    source tree, which has no ``mibench/tasks`` folder (only the editable install maps it there).
    """
    if _installed_version() is None:
        pytest.skip("mibench is not installed (pip install -e . or pip install .)")
    code = (
        "import mibench.tasks, mibench.methods, pathlib\n"
        "assert pathlib.Path(mibench.tasks.__file__).parent.name == 'tasks', mibench.tasks.__file__\n"
        "assert pathlib.Path(mibench.methods.__file__).parent.name == 'methods', mibench.methods.__file__\n"
    )
    proc = _run([sys.executable, "-c", code], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr


def test_installed_layout_has_no_top_level_tasks_or_methods(tmp_path):
    """Outside the clone (so the clone's root is not on sys.path) only mibench.* names exist."""
    if _installed_version() is None:
        pytest.skip("mibench is not installed (pip install -e . or pip install .)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    code = (
        "import importlib.util as u, mibench.tasks, mibench.methods\n"
        "for name in ('tasks', 'methods'):\n"
        "    assert u.find_spec(name) is None, f'top-level {name!r} is importable: {u.find_spec(name)}'\n"
        "print(mibench.tasks.__file__)\n"
    )
    proc = _run([sys.executable, "-c", code], cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr


def _packages_on_disk() -> set[str]:
    """Every folder holding Python code under the package roots, as the dotted name it installs as."""
    found = set()
    for folder, package in PACKAGE_ROOTS.items():
        root = REPO / folder
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if d != "__pycache__" and not d.startswith(".")]
            if any(f.endswith(".py") for f in filenames):
                rel = Path(dirpath).relative_to(root)
                found.add(".".join([package, *rel.parts]))
    return found


def test_pyproject_lists_every_package():
    config = _pyproject()["tool"]["setuptools"]
    assert config["package-dir"] == {k: v for v, k in PACKAGE_ROOTS.items() if k != v}
    listed = set(config["packages"])
    on_disk = _packages_on_disk()
    missing = sorted(on_disk - listed)
    assert not missing, f"add these to [tool.setuptools] packages in pyproject.toml: {missing}"
    stale = sorted(listed - on_disk)
    assert not stale, f"listed in pyproject.toml but no Python files on disk: {stale}"


def test_wheel_ships_mapped_folders_and_data(tmp_path):
    """Build a wheel from a copy of the sources and check what a regular `pip install .` would get."""
    pytest.importorskip("setuptools", minversion="77")
    src = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", "build", "dist")
    for folder in PACKAGE_ROOTS:
        shutil.copytree(REPO / folder, src / folder, ignore=ignore)
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO / name, src / name)
    out = tmp_path / "dist"
    code = f"from setuptools import build_meta; print(build_meta.build_wheel({str(out)!r}))"
    proc = _run([sys.executable, "-c", code], cwd=src)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    wheel = out / proc.stdout.strip().splitlines()[-1]
    names = set(zipfile.ZipFile(wheel).namelist())

    top_level = {n.split("/", 1)[0] for n in names if not n.split("/", 1)[0].endswith(".dist-info")}
    assert top_level == {"mibench"}, f"unexpected top-level names in the wheel: {sorted(top_level)}"
    assert {"mibench/tasks/__init__.py", "mibench/methods/__init__.py", "mibench/cli/__init__.py"} <= names

    patterns = [p.removeprefix("**/") for p in _pyproject()["tool"]["setuptools"]["package-data"]["*"]]
    expected = set()
    for folder, package in PACKAGE_ROOTS.items():
        for path in (src / folder).rglob("*"):
            if path.is_file() and (path.suffix == ".py" or any(fnmatch.fnmatch(path.name, p) for p in patterns)):
                rel = path.relative_to(src / folder).as_posix()
                expected.add(package.replace(".", "/") + "/" + rel)
    missing = sorted(expected - names)
    assert not missing, f"files missing from the wheel: {missing}"

    dist_info = next(n.split("/", 1)[0] for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(f"{dist_info}/entry_points.txt").decode()
    assert "mibench = mibench.cli:main" in entry_points
