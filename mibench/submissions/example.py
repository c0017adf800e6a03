"""Write a complete importances submission with seeded random scores (the ``submissions/example-random`` folder).

    python -m mibench.submissions.example submissions/example-random --models gpt2-tasks llama-tasks --tasks ioi mcqa

The same arguments always write the same bytes, so the committed example can be regenerated and compared.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from mibench.errors import MibenchError
from mibench.submissions.card import CARD_FILE
from mibench.submissions.check import cell_folder_names
from mibench.submissions.models import resolve_model

CARD_TEMPLATE = """\
# A minimal valid submission: random edge scores for two models and two tasks.
# Regenerate with: python -m mibench.submissions.example {folder} --models {models} --tasks {tasks}
method: Random scores (example)
description: >-
  Every edge gets an independent standard-normal score (seed {seed}). A format example and a floor
  to compare methods with, not a method.
authors: [mibench maintainers]
paper: null
license: CC0-1.0
contact: open an issue in the mibench repository
track: circuit
contains: importances
models: [{model_list}]
tasks: [{task_list}]
level: edge
"""


def write_random_submission(folder: str | Path, models: Sequence[str], tasks: Sequence[str], *, seed: int = 0,
                            suffix: str = ".json") -> list[Path]:
    """Write ``submission.yaml`` and one ``<task>_<model>/importances<suffix>`` per cell; returns the files."""
    import torch

    from mibench.graph.graph import Graph
    from mibench.graph.io import save_circuit

    layouts = {model: resolve_model(model).layout for model in models}  # fail before writing anything
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    card = CARD_TEMPLATE.format(folder=f"submissions/{folder.name}", models=" ".join(models), tasks=" ".join(tasks), seed=seed,
                                model_list=", ".join(models), task_list=", ".join(tasks))
    (folder / CARD_FILE).write_text(card, encoding="utf-8")
    written = [folder / CARD_FILE]
    generator = torch.Generator().manual_seed(seed)
    for model in models:
        for task in tasks:
            graph = Graph(layouts[model])
            scores = torch.randn(graph.edge_scores.shape, generator=generator)
            graph.edge_scores = torch.where(graph.real_edge_mask, scores, torch.zeros(()))
            path = folder / cell_folder_names(task, model)[0] / f"importances{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_circuit(graph, path)
            written.append(path)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder")
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--tasks", nargs="+", required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--suffix", default=".json", choices=(".json", ".pt", ".safetensors"))
    args = parser.parse_args(argv)
    try:
        written = write_random_submission(args.folder, args.models, args.tasks, seed=args.seed, suffix=args.suffix)
    except MibenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
