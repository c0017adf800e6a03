"""Where a model's known circuit lives: ``<model folder>/ground_truth/<task>.json`` (MIB's circuit JSON).

Planted-circuit models ship their ground truth beside their weights, so ``mibench evaluate`` can report AUROC
for any method without being told; any local model folder laid out the same way works too.

This is the lookup by model *id* (a zoo name or a local folder). It sits above :mod:`mibench.zoo.catalog`,
which owns the folder layout (:data:`~mibench.zoo.catalog.CARD_FILE`,
:data:`~mibench.zoo.catalog.GROUND_TRUTH_DIR`), so the dependency runs one way: lookup -> catalog.
"""

from __future__ import annotations

import json
from pathlib import Path

from mibench.zoo.catalog import CARD_FILE, GROUND_TRUTH_DIR, is_zoo_model, known_circuit_tasks, model_path

__all__ = ["GROUND_TRUTH_DIR", "ground_truth_counterfactual", "ground_truth_path", "ground_truth_tasks",
           "model_card", "model_folder"]


def model_folder(model: str) -> Path | None:
    """The folder of a zoo model or a local model path; None for a hub id."""
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
    return [] if folder is None else known_circuit_tasks(folder)


def ground_truth_counterfactual(model: str, task: str) -> str | None:
    """The counterfactual kind a known circuit is defined under, when the model's card names one.

    A circuit found by patching depends on the counterfactual: an edge whose sender is the same in a prompt and
    its counterfactual is never needed. A planted model's card (``zoo_card.json``: ``ground_truth.<task>.
    counterfactual``) names the kind under which every ground-truth edge carries information, and evaluation
    defaults to it.
    """
    entry = model_card(model).get("ground_truth", {}).get(task, {})
    return entry.get("counterfactual") if isinstance(entry, dict) else None


def model_card(model: str) -> dict:
    """A zoo-style model folder's ``zoo_card.json`` ({} for a hub id or a folder without one)."""
    folder = model_folder(model)
    card = folder / CARD_FILE if folder is not None else None
    return json.loads(card.read_text()) if card is not None and card.is_file() else {}
