"""Write a run's files into a hidden staging folder and publish them only when the run has finished.

An interrupted or failed run (Ctrl-C, an error while scoring) leaves nothing behind: no scores file
without its record, no half a folder of featurizers. Publishing moves each file into place with
``os.replace`` and the record last, so a folder holding ``record.json`` is always complete.
"""

from __future__ import annotations

import os
import shutil
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
    staging = Path(tempfile.mkdtemp(prefix=".run-", suffix=".partial", dir=root))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if created and not any(root.iterdir()):
            root.rmdir()  # a failed first run leaves no empty output folder either


def publish(staging: Path, final: Path) -> None:
    """Move every file of ``staging`` to the same place under ``final`` (the record last)."""
    files = sorted((p for p in staging.rglob("*") if p.is_file()), key=lambda p: (p.name == RECORD_NAME, str(p)))
    for path in files:
        target = final / path.relative_to(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(path, target)
