"""Where a run's examples come from: the task's generator (the default) or MIB's official datasets.

``--data official`` reads the rows of the task card's ``mib-bench/*`` dataset, from the hub or from a local
copy (``--data-dir``), through :mod:`mibench.data.official`; the task's causal model and span schema stay
the task's own, so both tracks run unchanged on either source.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mibench.errors import MibenchError

#: ``--data`` choices: generated examples (the default, offline) or MIB's published datasets.
DATA_SOURCES = ("procedural", "official")


def load_run_task(request: Any, card: Any):
    """The task that gives the run its examples (``request.data``: see :data:`DATA_SOURCES`)."""
    from mibench.data.registry import load_task

    if request.data not in DATA_SOURCES:
        raise MibenchError(f"unknown data source {request.data!r}; choose one of {', '.join(DATA_SOURCES)}")
    official_options = {"data_dir": request.data_dir, "data_config": request.data_config,
                        "data_revision": request.data_revision}
    task = load_task(card.id)
    if request.data == "procedural":
        given = [name for name, value in official_options.items() if value is not None]
        if given:
            flags = ", ".join("--" + name.replace("_", "-") for name in given)
            raise MibenchError(f"{flags}: options of the official data; add --data official")
        return task
    from mibench.data.official import OfficialData, OfficialSource

    return OfficialData(task, OfficialSource(data_dir=request.data_dir, config=request.data_config,
                                             revision=request.data_revision))


def check_counterfactual(examples: Sequence[Any], kind: str, task_id: str, split: str) -> None:
    """Every example must carry the ``kind`` counterfactual; say which kinds the data has when one does not."""
    for example in examples:
        if kind not in example.counterfactuals:
            raise MibenchError(f"task {task_id!r}, split {split!r}: example {example.id} has no {kind!r} "
                               f"counterfactual (it has {', '.join(sorted(example.counterfactuals))}); "
                               "choose one with --counterfactual")
