"""Write a run's files into a hidden staging folder and publish them only when the run has finished.

An interrupted or failed run (Ctrl-C, an error while scoring) leaves nothing behind: no scores file
without its record, no half a folder of featurizers. Publishing moves each file into place with
``os.replace`` and the record last, so a folder holding ``record.json`` is always complete.

A process killed outright (SIGKILL, a Ray worker cancelled by force) cannot remove its staging folder.
The folder's name carries the host and process id that made it, so the next run in the same output folder
removes the staging folders of processes of this host that no longer exist (never those of live ones).
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

RECORD_NAME = "record.json"


@contextmanager
def staged_folder(root: Path) -> Iterator[Path]:
    """Yield a fresh hidden folder under ``root`` (the output folder, so publishing is a rename on one file
    system); it is removed on the way out, published or not."""
    created = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    remove_abandoned_staging(root)
    staging = Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{socket.gethostname()}-{os.getpid()}-", suffix=_SUFFIX,
                                    dir=root))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(root.iterdir()):
            root.rmdir()  # a failed first run leaves no empty output folder either


_PREFIX, _SUFFIX = ".run-", ".partial"


def remove_abandoned_staging(root: Path) -> list[Path]:
    """Remove the staging folders under ``root`` left by processes of this host that have ended; returns them."""
    host = socket.gethostname()
    removed = []
    for folder in root.glob(f"{_PREFIX}*{_SUFFIX}"):
        maker = folder.name[len(_PREFIX):-len(_SUFFIX)].rsplit("-", 2)
        if len(maker) != 3 or maker[0] != host or not maker[1].isdigit() or _alive(int(maker[1])):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def publish(staging: Path, final: Path) -> None:
    """Move every file of ``staging`` to the same place under ``final`` (the record last)."""
    files = sorted((p for p in staging.rglob("*") if p.is_file()), key=lambda p: (p.name == RECORD_NAME, str(p)))
    for path in files:
        target = final / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
