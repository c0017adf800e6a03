"""The README stays a short front page, and the documentation pages it and mkdocs.yml point to exist.

The site itself is built by `mkdocs build --strict` in CI (.ci/run), which fails on any broken link, anchor,
snippet or docstring; these checks are the cheap ones that need no MkDocs install.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"


def test_readme_is_a_short_front_page():
    assert README.stat().st_size < 10_000, "README.md is over 10 KB: move the detail to a page under docs/"


def test_readme_keeps_the_quick_start_commands_ci_runs():
    # the same patterns .ci/run reads the commands with
    text = README.read_text()
    assert re.search(r"(?m)^pip install torch==[^ ]+ && .*&& mibench (ls|evaluate .*)$", text)
    assert re.search(r"(?m)^pip install torch==[^ ]+ && .*&& pytest -q$", text)


def test_readme_links_resolve():
    text = README.read_text()
    targets = [t.split("#")[0] for t in re.findall(r"\]\(([^)\s]+)\)", text) if "://" not in t]
    assert targets, "the README links to its documentation pages"
    missing = [t for t in targets if not (REPO / t).exists()]
    assert not missing, f"README.md links to missing files: {missing}"


def _nav_pages(entries) -> list[str]:
    pages = []
    for entry in entries:
        values = entry.values() if isinstance(entry, dict) else [entry]
        for value in values:
            pages += _nav_pages(value) if isinstance(value, list) else [value]
    return pages


def test_every_nav_page_exists():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    pages = _nav_pages(config["nav"])
    missing = [p for p in pages if not (REPO / "docs" / p).is_file()]
    assert not missing, f"mkdocs.yml nav names missing pages: {missing}"
