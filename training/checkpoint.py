"""Checkpoints of a zoo training run: everything needed to continue it exactly where it stopped.

A run on a shared CPU can take longer than one sitting (or be stopped by its ``--minutes`` cap). With
``--checkpoint-dir`` the trainer writes ``checkpoint.pt`` there every ``--checkpoint-every`` steps and when it
stops; ``--resume`` continues from it. Continuing is *exact*: a run of n steps and a run stopped after k
steps and resumed for the other n - k produce the same weights (same torch version and thread count),
because the checkpoint holds the model and optimizer state, the step (the learning-rate schedule is a
function of it), the per-task sub-batch sizes of ``--adaptive``, torch's RNG state, every data stream's
position (its RNG states and buffered prompts), the training seconds so far and the validation history.

The file is written to a temporary name and renamed into place, so an interrupted write never leaves a
truncated checkpoint. It holds only tensors and plain Python data, so it loads with ``weights_only=True``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

CHECKPOINT_FILE = "checkpoint.pt"
#: Arguments that may differ between a run and its resumption: they do not change what is computed.
RESUMABLE_CHANGES = frozenset({"minutes", "threads", "out", "argv", "resume", "checkpoint_dir",
                               "checkpoint_every", "max_steps"})


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed: missing, unreadable, or from a run with other arguments."""


def save_checkpoint(directory: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Write ``state`` atomically to ``directory/checkpoint.pt`` and return the path."""
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / CHECKPOINT_FILE
    partial = folder / (CHECKPOINT_FILE + ".partial")
    torch.save(state, partial)
    os.replace(partial, path)
    return path


def load_checkpoint(directory: str | os.PathLike[str], args: dict[str, Any]) -> dict[str, Any]:
    """The checkpoint in ``directory``, refused if it was written by a run whose arguments differ from
    ``args`` in anything but :data:`RESUMABLE_CHANGES`."""
    path = Path(directory) / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"--resume: no checkpoint at {path}")
    try:
        state = torch.load(path, weights_only=True)
    except Exception as exc:  # a damaged or foreign file: name it
        raise CheckpointError(f"--resume: cannot read {path} ({type(exc).__name__}: {exc})") from exc
    saved = state.get("args", {})
    differing = sorted(k for k in set(saved) | set(args)
                       if k not in RESUMABLE_CHANGES and saved.get(k) != args.get(k))
    if differing:
        details = ", ".join(f"{k}: checkpoint {saved.get(k)!r}, now {args.get(k)!r}" for k in differing)
        raise CheckpointError(f"--resume: {path} comes from a run with other arguments ({details})")
    return state
