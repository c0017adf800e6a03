"""Atomic file writes, and an exclusive lock for work that only one process should do.

Every artifact mibench writes (circuit files, results records, leaderboard tables) is written to a
temporary file in the *same directory* and then moved over the destination with ``os.replace``. On POSIX
and Windows that rename is atomic within one file system, so a reader -- or a crashed / interrupted
writer -- can only ever see the old complete file or the new complete file, never a truncated one.
The temporary file must live next to the target because a rename across file systems is a copy.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _default_file_mode() -> int:
    """The permission bits ``open(path, "w")`` would give a new file (``mkstemp`` uses 0600)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write to; on success it atomically replaces ``path``.

    If the body raises, the temporary file is deleted and ``path`` is left untouched (still the old file,
    or still absent). The parent directory must exist. The yielded file already exists (empty), so writers
    that open it with ``"w"``/``"wb"`` or hand the path to a library (``torch.save``, safetensors) both work.
    """
    target = Path(path)
    fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # Flush the data to disk before the rename, or a power loss could leave an empty file in place.
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, _default_file_mode())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Write ``text`` to ``path`` atomically (``newline=""``: the text is written exactly as given)."""
    with atomic_path(path) as tmp, open(tmp, "w", encoding=encoding, newline="") as handle:
        handle.write(text)


@contextlib.contextmanager
def exclusive_lock(path: str | os.PathLike[str]) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``path`` (created if missing) for the body; others wait.

    Why: two runs of a sweep on one machine can need the same expensive cached product (an optimal-ablation
    fit takes many minutes on a CPU). With the lock, the second waits for the first and then reads its cache
    entry instead of fitting it again. The lock is ``flock`` on POSIX, released when the holder exits or
    dies, so a killed run never leaves the cache locked. Where ``fcntl`` is missing (Windows) the body runs
    unlocked: at worst the work is done twice, and the atomic writes keep the result whole either way.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
