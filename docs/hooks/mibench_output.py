"""MkDocs hook: pages quote the ``mibench`` command line's own output, produced at build time.

A line ``<!-- mibench-help: evaluate -->`` becomes the output of ``mibench evaluate --help`` in a text block,
and ``<!-- mibench-table: ls tasks -->`` the Markdown table ``mibench ls tasks --format github`` prints. The
CLI reference and the lists of models, tasks and methods therefore cannot drift from the code: a command
that fails, or prints nothing, fails the build.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys

from mkdocs.exceptions import PluginError

MARKER = re.compile(r"^<!-- mibench-(help|table):(.*?) -->$", re.MULTILINE)


def _run(arguments: list[str]) -> str:
    # python -m mibench runs the CLI of the mibench importable from this interpreter; COLUMNS pins argparse's wrap
    env = {**os.environ, "COLUMNS": "100"}
    proc = subprocess.run([sys.executable, "-m", "mibench", *arguments], capture_output=True, text=True, env=env,
                          timeout=120)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise PluginError(f"mibench {shlex.join(arguments)} failed (exit {proc.returncode}): {proc.stderr[-2000:]}")
    return proc.stdout.rstrip()


def _expand(match: re.Match) -> str:
    kind, command = match.group(1), shlex.split(match.group(2))
    if kind == "help":
        return "```text\n" + _run([*command, "--help"]) + "\n```"
    return _run([*command, "--format", "github"])


def on_page_markdown(markdown: str, **kwargs) -> str:
    return MARKER.sub(_expand, markdown)
