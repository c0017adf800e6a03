"""A content hash of a model's weights, so a retrained or edited model can never share a leaderboard column.

A zoo model or local folder has no hub revision: before this hash, every version of ``gpt2-tasks`` had the
same comparability key (``gpt2-tasks@local``), and a retrained model's records would have been ranked
against its predecessor's. The hash identifies the weights themselves:

* loaded from files (a zoo model, a local folder, a hub snapshot in the local cache): sha256 over each
  weight file's name and bytes, in name order. It does not depend on the dtype or device the run loaded the
  model in, so a bfloat16 and a float32 run of one checkpoint share the hash (the record's ``dtype`` tells
  them apart);
* handed over already loaded (the Python API), where no file is known to hold exactly these weights:
  sha256 over the state dict (names, dtypes, shapes, bytes). Such records form their own column unless the
  weights are bit-identical in that dtype.

Hashing reads every byte once (about 1 s per GB); a process hashes each unchanged file once.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch

#: Files that hold weights, by suffix. Index files (``*.index.json``) only map names to files and are skipped.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
#: sha256 hex digits kept: 64 bits is enough to tell checkpoints apart, short enough to read in a key.
DIGEST_CHARS = 16

_FILE_DIGESTS: dict[tuple[str, int, int], str] = {}


def weight_files(folder: str | os.PathLike) -> list[Path]:
    """The weight files directly inside ``folder`` (sorted by name)."""
    folder = Path(folder)
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name.endswith(WEIGHT_SUFFIXES))


def _file_digest(path: Path) -> str:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _FILE_DIGESTS:
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 22), b""):
                digest.update(block)
        _FILE_DIGESTS[key] = digest.hexdigest()
    return _FILE_DIGESTS[key]


def files_sha256(files: list[Path]) -> str:
    """``sha256:<16 hex>`` over each file's name and content digest, in the given (sorted) order."""
    if not files:
        raise ValueError("no weight files to hash")
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.name.encode() + b"\0" + _file_digest(path).encode() + b"\0")
    return "sha256:" + digest.hexdigest()[:DIGEST_CHARS]


def state_dict_sha256(model: torch.nn.Module) -> str:
    """``sha256:<16 hex>`` over the state dict as loaded (names, dtypes, shapes and bytes, in name order).
    Tied weights appear once per name, as ``state_dict`` lists them."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode() + b"\0")
        digest.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return "sha256:" + digest.hexdigest()[:DIGEST_CHARS]


def weights_sha256(model: torch.nn.Module, source: str | os.PathLike | None) -> str:
    """The hash of the files ``model`` was loaded from when ``source`` is a folder holding them (see the
    module docstring), else of its state dict."""
    if source is not None and Path(source).is_dir():
        files = weight_files(source)
        if files:
            return files_sha256(files)
    return state_dict_sha256(model)


def cached_snapshot_folder(repo_id: str, revision: str | None) -> str | None:
    """The local snapshot folder of a hub model that ``from_pretrained`` just read, if the hub cache has one."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return None
    found = try_to_load_from_cache(repo_id, "config.json", revision=revision)
    return str(Path(found).parent) if isinstance(found, str) else None
