"""The parts of a results record that do not depend on the track: provenance, model, eligibility, data hash.

Both tracks' records carry the same header (who ran what, where, with which model, on which data, and
whether the number may be ranked); it is built here once, so the two tracks cannot drift apart on what
makes a record leaderboard-eligible.
"""

from __future__ import annotations

import hashlib
import os
import sys
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mibench import __version__
from mibench.results.environment import git_commit, hardware, package_versions, python_version
from mibench.results.record import EnvironmentInfo, ModelInfo, now

#: Splits whose scores may be ranked; every other split is for development.
ELIGIBLE_SPLITS = ("test", "private_test")


@dataclass(kw_only=True)
class RunRequest:
    """What every run of either track is told (CLI flags map 1:1); the tracks' requests add their own."""

    task: str
    model: str
    split: str = "test"
    limit: int | None = None
    batch_size: int = 32
    seed: int = 0
    bootstrap: int = 1000
    device: str = "cpu"
    dtype: str | None = None
    revision: str | None = None
    output_dir: str = "results"
    progress: bool | None = None  # None: only when stderr is a terminal
    invocation: list[str] = field(default_factory=lambda: list(sys.argv))
    #: A model already loaded by the caller (a :class:`~mibench.models.loading.LoadedModel`, see
    #: :mod:`mibench.api`): used as is instead of loading ``model``, which then only names it in the record.
    preloaded: Any = None
    #: Where examples come from (see :mod:`mibench.pipeline.data`): generated, or MIB's official datasets read
    #: from the hub (``data_config``/``data_revision`` override the card's) or a local copy under ``data_dir``.
    data: str = "procedural"
    data_dir: str | None = None
    data_config: str | None = None
    data_revision: str | None = None


class PhaseTimer:
    """Wall time per named phase (``load_model``, ``evaluation``, ...), recorded in ``timings``."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = round(self.seconds.get(name, 0.0) + time.perf_counter() - start, 3)


def eligibility_notes(split: str, limit: int | None, commit: str | None) -> list[str]:
    """Why a record may not be ranked (empty: it may). The one place this is decided, for both tracks."""
    notes = []
    if split not in ELIGIBLE_SPLITS:
        notes.append(f"split {split!r} is not a test split")
    if limit is not None:
        notes.append(f"evaluated on the first {limit} examples only (--limit)")
    if commit and commit.endswith("+dirty"):
        notes.append("produced from a modified checkout")
    return notes


def model_info(request: RunRequest, loaded: Any, *, n_edges: int | None = None) -> ModelInfo:
    """The record's model block; ``n_edges`` defaults to the position-invariant graph's edge count."""
    layout = loaded.adapter.layout
    return ModelInfo(
        id=request.model, revision=request.revision, dtype=str(loaded.adapter.dtype).replace("torch.", ""),
        family=getattr(loaded.model.config, "model_type", "unknown"), n_layers=layout.n_layers,
        n_heads=layout.n_heads, d_model=layout.d_model, n_edges=layout.n_edges if n_edges is None else n_edges,
        weights_sha256=loaded.weights_sha256,
    )


def record_header(request: RunRequest, model: ModelInfo, timer: PhaseTimer) -> dict[str, Any]:
    """The shared fields of a record of either track (the track adds task, method, scorer, metrics and key)."""
    commit = git_commit()
    notes = eligibility_notes(request.split, request.limit, commit)
    return {
        "created": now(), "invocation": request.invocation,
        "environment": EnvironmentInfo(mibench_version=__version__, git_commit=commit, python=python_version(),
                                       packages=package_versions(), hardware=hardware(request.device)),
        "model": model, "seed": request.seed, "timings": timer.seconds,
        "leaderboard_eligible": not notes, "eligibility_notes": notes,
    }


def data_hash(examples: Iterable[Any]) -> str:
    """sha256 over every used example's prompts and answers: two records with equal hashes saw equal data."""
    digest = hashlib.sha256()
    for example in examples:
        digest.update(example.id.encode())
        digest.update(example.prompt.encode())
        digest.update(example.answer.encode())
        for kind in sorted(example.counterfactuals):
            cf = example.counterfactuals[kind]
            digest.update(kind.encode() + cf.prompt.encode() + cf.answer.encode())
    return "sha256:" + digest.hexdigest()[:16]


def safe_name(name: str) -> str:
    """``name`` as one path component (hub ids' ``/`` become ``__``)."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name.strip("/").replace("/", "__"))


def run_folder(request: RunRequest, task_id: str, run_name: str) -> Path:
    """``<output-dir>/<task>/<model>/<run>``; a local model folder is named by its last component."""
    model = request.model
    model_name = safe_name(Path(model).name if os.path.isdir(model) else model)
    return Path(request.output_dir) / task_id / model_name / run_name


def shows_progress(request: RunRequest) -> bool:
    """Whether a run draws progress bars: as ``request.progress`` says, by default when stderr is a terminal."""
    return request.progress if request.progress is not None else sys.stderr.isatty()


def progress_bar(request: RunRequest, total: int, description: str, unit: str = "ex"):
    """A tqdm bar on stderr (see :func:`shows_progress`)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=description, unit=unit, disable=not shows_progress(request), leave=False)
