"""Which runs already have their record: what makes a sweep resumable.

A record on disk stands for a run when the run would reproduce it: the same code commit (``environment.
git_commit``, '+dirty' included), the same evaluation data (``task.data_hash``), the same seed, and the same
settings -- method, resolved method arguments, level and ablation or variable, model and revision, split,
limit, counterfactual, dtype, bootstrap replicates, attribution/train examples, layers and positions, read from
the record's own fields and its ``invocation`` (a ``mibench evaluate`` command line, whether the sweep or a
person ran it). Equal settings and commit mean an equal comparability key. Only complete records exist on
disk (they are written atomically), so an interrupted run is simply missing and is run again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mibench.errors import MibenchError
from mibench.sweep.expand import Run

RECORD_NAME = "record.json"
#: ``mibench evaluate`` settings that can change a record's numbers, per track (batch size and device cannot,
#: beyond floating-point noise; output folder and display flags do not).
SHARED_SETTINGS = ("task", "revision", "split", "limit", "seed", "bootstrap", "dtype")
TRACK_SETTINGS = {
    "circuit": ("counterfactual", "attribution_examples", "no_baseline"),
    "causal": ("variable", "layers", "positions", "train_examples", "sae_dir"),
}


def current_commit() -> str | None:
    from mibench.results.environment import git_commit

    return git_commit()


class RecordIndex:
    """The records already under the output folders of some runs, looked up by run."""

    def __init__(self, runs: list[Run]) -> None:
        self._records: dict[tuple, list[tuple[Path, Any]]] = {}
        self._hashes: dict[tuple, str] = {}
        self.commit = current_commit()
        for output_dir, task in sorted({(run.output_dir, run.task) for run in runs}):
            for path in sorted((Path(output_dir) / task).glob(f"*/*/{RECORD_NAME}")):
                record = _read(path)
                if record is not None:
                    key = (record.track, record.task.id, record.model.id, record.method.id, record.seed)
                    self._records.setdefault(key, []).append((path, record))

    def find(self, run: Run) -> Path | None:
        """The record ``run`` would reproduce, if one exists."""
        for path, record in self._records.get((run.track, run.task, run.model, run.method, run.seed), []):
            if (record.environment.git_commit == self.commit and self.commit is not None
                    and record.task.data_hash == self._data_hash(run) and _same_settings(record, run)):
                return path
        return None

    def _data_hash(self, run: Run) -> str:
        """The hash a fresh record of ``run`` would carry (the evaluation examples it would use: on the causal
        track, in the mix the task fixes per variable, as :func:`~mibench.pipeline.causal.causal_examples`)."""
        variable = run.variable if run.track == "causal" else None
        key = (run.task, run.options.split or "test", run.options.limit, variable)
        if key not in self._hashes:
            from mibench.data.registry import load_task
            from mibench.pipeline.causal import causal_examples
            from mibench.pipeline.header import data_hash

            task = load_task(run.task)
            examples = (task.examples(key[1], key[2]) if variable is None
                        else causal_examples(task, task.causal_model(), key[1], key[2], variable))
            self._hashes[key] = data_hash(examples)
        return self._hashes[key]


def _read(path: Path):
    """The validated record at ``path``, or None when it is unusable (then the run is simply made again)."""
    from mibench.results.causal_record import read_causal_record
    from mibench.results.record import read_record

    try:
        import json

        track = json.loads(path.read_text(encoding="utf-8")).get("track", "circuit")
        return read_causal_record(path) if track == "causal" else read_record(path)
    except (MibenchError, OSError, ValueError, AttributeError):
        return None


def _same_settings(record, run: Run) -> bool:
    from mibench.method_registry import get_method_card, parse_method_args, resolve_arguments
    from mibench.sweep.execute import evaluate_namespace

    try:
        made = evaluate_namespace(list(record.invocation))
    except MibenchError:
        return False  # a record made some other way (a scored file, a submission) is not a run of the sweep
    wanted = evaluate_namespace(run.argv())
    names = SHARED_SETTINGS + TRACK_SETTINGS[run.track]
    if made.track != run.track or any(getattr(made, name) != getattr(wanted, name) for name in names):
        return False
    if (made.model or _default_model()) != run.model:
        return False
    arguments = resolve_arguments(get_method_card(run.method), parse_method_args(wanted.method_arg))
    if record.method.arguments != arguments:
        return False
    if run.track == "circuit":
        return record.method.level == run.level and record.method.ablation == run.ablation
    return record.task.variable == run.variable


def _default_model() -> str:
    from mibench.zoo.catalog import DEFAULT_MODEL

    return DEFAULT_MODEL
