"""Where a model's known circuit lives: ``<model folder>/ground_truth/<task>.json`` (MIB's circuit JSON).

Planted-circuit models ship their ground truth beside their weights, so ``mibench evaluate`` can report AUROC
for any method without being told; any local model folder laid out the same way works too.
"""

from __future__ import annotations

from pathlib import Path

GROUND_TRUTH_DIR = "ground_truth"


def model_folder(model: str) -> Path | None:
    """The folder of a zoo model or a local model path; None for a hub id."""
    from mibench.zoo.catalog import is_zoo_model, model_path

    if is_zoo_model(model):
        return model_path(model)
    folder = Path(model)
    return folder if folder.is_dir() else None


def ground_truth_path(model: str, task: str) -> Path | None:
    folder = model_folder(model)
    if folder is None:
        return None
    path = folder / GROUND_TRUTH_DIR / f"{task}.json"
    return path if path.is_file() else None


def ground_truth_tasks(model: str) -> list[str]:
    """Tasks for which ``model`` ships a known circuit (for listings)."""
    folder = model_folder(model)
    if folder is None or not (folder / GROUND_TRUTH_DIR).is_dir():
        return []
    return sorted(p.stem for p in (folder / GROUND_TRUTH_DIR).glob("*.json"))
