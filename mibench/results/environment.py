"""What a results record says about where it was produced: versions, commit, hardware."""

from __future__ import annotations

import importlib.metadata
import os
import platform
import subprocess
import sys
from pathlib import Path

PACKAGES = ("torch", "transformers", "tokenizers", "numpy", "datasets", "pyvene", "safetensors")


def package_versions() -> dict[str, str]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


#: Paths whose changes do not make a checkout "modified": the published records and the tables and plots built
#: from them are the harness's own output. Re-publishing overwrites records run by run and rebuilds the tables
#: at the end of each track, so every run after the first (or every run of a second track published in the same
#: checkout) would otherwise count as produced from a modified checkout.
OUTPUT_PATHS = ("leaderboard/records", "leaderboard/plots", "leaderboard/leaderboard.md", "leaderboard/leaderboard.tex",
                "leaderboard/leaderboard.csv", "leaderboard/index.html")


def git_commit() -> str | None:
    """The commit of the mibench checkout in use (None for an installed wheel); '+dirty' if its code or data are
    modified (changes under :data:`OUTPUT_PATHS` do not count)."""
    return checkout_commit(Path(__file__).resolve().parents[2])


def checkout_commit(root: Path) -> str | None:
    """HEAD of the git checkout at ``root``, with '+dirty' as :func:`git_commit` (None if it is not one)."""
    if not (root / ".git").exists():
        return None
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                                timeout=10, check=True).stdout.strip()
        excluded = [f":(exclude){path}" for path in OUTPUT_PATHS]
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", *excluded],
                               cwd=root, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if dirty else "")


def hardware(device: str) -> dict[str, object]:
    info: dict[str, object] = {
        "device": device,
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "cpu_count": os.cpu_count(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available() and device.startswith("cuda"):
            info["gpu"] = torch.cuda.get_device_name(torch.device(device))
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    return info


def python_version() -> str:
    return sys.version.split()[0]
