"""The embedded model zoo's catalog: which trained models ship inside the package, read without torch.

Each model is a Hugging Face folder under ``mibench/zoo/models/<name>/`` (``config.json``,
``model.safetensors``, tokenizer files) plus the ``zoo_card.json`` written by :mod:`training.zoo`.
This module only reads JSON files and file sizes, so listing the zoo is instant and needs no torch::

    >>> from mibench.zoo.catalog import DEFAULT_MODEL, list_models, model_path
    >>> [m.name for m in list_models()]
    ['gpt2-medium-tasks', 'gpt2-tasks', 'llama-tasks']
    >>> model_path(DEFAULT_MODEL)             # a folder mibench.models.loading.load_model accepts
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Where the zoo's model folders live inside the installed package.
ZOO_DIR = Path(__file__).resolve().parent / "models"
#: Planted-circuit models (trained by :mod:`training.planted`; each ships ``ground_truth/<task>.json``).
PLANTED_DIR = Path(__file__).resolve().parent / "known_circuits"
#: The GPT-2-architecture zoo model, used where a command needs a model and none is given.
DEFAULT_MODEL = "gpt2-tasks"
#: The leaderboard-grade zoo model: GPT-2, 4 layers x 12 heads, width 192, 3,135 MIB edges (so MIB's smallest
#: circuit size, 0.1 %, still holds 3 edges), trained on every procedural task including RAVEL. Listed like
#: any other model once its folder is in ``models/``.
MEDIUM_MODEL = "gpt2-medium-tasks"
CARD_FILE = "zoo_card.json"
#: The sub-folder of a model folder that holds its known circuits, one ``<task>.json`` (MIB's circuit JSON) each.
GROUND_TRUTH_DIR = "ground_truth"


class UnknownZooModel(KeyError):
    """A name that is not one of the shipped zoo models."""

    def __str__(self) -> str:  # KeyError quotes its argument; show the message as written
        return str(self.args[0])


@dataclass(frozen=True)
class ZooModel:
    """One shipped model: its architecture, size and the accuracies recorded when it was trained."""

    name: str
    path: Path
    family: str  # the config's model_type, e.g. "gpt2" or "llama" (the adapter family)
    layers: int
    heads: int
    kv_heads: int
    width: int
    vocab_size: int
    parameters: int
    weights_bytes: int  # model.safetensors
    size_bytes: int  # the whole folder
    accuracy: dict[str, dict[str, float]] = field(default_factory=dict)  # task -> split -> accuracy
    card: dict[str, Any] = field(default_factory=dict, repr=False)  # the full zoo_card.json

    @property
    def tasks(self) -> list[str]:
        return sorted(self.accuracy)

    @property
    def planted(self) -> bool:
        """A planted-circuit model: trained so that a known circuit implements its task."""
        return bool(self.card.get("planted"))

    @property
    def known_circuits(self) -> list[str]:
        """Tasks whose ground-truth circuit ships in the model folder (``ground_truth/<task>.json``)."""
        return known_circuit_tasks(self.path)

    def test_accuracy(self) -> dict[str, float]:
        """Test-split accuracy per task, as recorded in ``zoo_card.json``."""
        return {task: splits["test"] for task, splits in sorted(self.accuracy.items()) if "test" in splits}

    def summary(self) -> dict[str, Any]:
        """A flat, JSON-friendly row (for tables such as ``mibench ls models``)."""
        return {
            "name": self.name,
            "family": self.family,
            "layers": self.layers,
            "heads": self.heads,
            "kv_heads": self.kv_heads,
            "width": self.width,
            "parameters": self.parameters,
            "size_mb": round(self.size_bytes / 1e6, 2),
            "test_accuracy": self.test_accuracy(),
            "path": str(self.path),
        }


def _architecture(config: dict[str, Any]) -> tuple[int, int, int, int]:
    """(layers, heads, kv_heads, width) from a GPT-2 or Llama-style ``config.json``."""
    layers = config.get("num_hidden_layers", config.get("n_layer"))
    heads = config.get("num_attention_heads", config.get("n_head"))
    width = config.get("hidden_size", config.get("n_embd"))
    kv_heads = config.get("num_key_value_heads") or heads
    return int(layers), int(heads), int(kv_heads), int(width)


def _read(folder: Path) -> ZooModel:
    config = json.loads((folder / "config.json").read_text())
    card = json.loads((folder / CARD_FILE).read_text())
    layers, heads, kv_heads, width = _architecture(config)
    weights = folder / "model.safetensors"
    return ZooModel(
        name=folder.name,
        path=folder,
        family=str(config.get("model_type", card.get("arch", "?"))),
        layers=layers,
        heads=heads,
        kv_heads=kv_heads,
        width=width,
        vocab_size=int(config["vocab_size"]),
        parameters=int(card.get("parameters", 0)),
        weights_bytes=weights.stat().st_size if weights.is_file() else 0,
        size_bytes=sum(f.stat().st_size for f in folder.iterdir() if f.is_file()),
        accuracy=card.get("accuracy", {}),
        card=card,
    )


def known_circuit_tasks(folder: Path) -> list[str]:
    """Tasks whose known circuit ``folder`` holds (``ground_truth/<task>.json``), sorted; [] when none.

    Folder-level, so the catalog needs nothing above it; :mod:`mibench.zoo.ground_truth` resolves model ids.
    """
    truth = folder / GROUND_TRUTH_DIR
    return sorted(p.stem for p in truth.glob("*.json")) if truth.is_dir() else []


def _names_in(root: Path) -> list[str]:
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if (d / CARD_FILE).is_file() and (d / "config.json").is_file())


def _folder_of(name: str) -> Path:
    return (PLANTED_DIR if name in _names_in(PLANTED_DIR) else ZOO_DIR) / name


def model_names() -> list[str]:
    """Names of every shipped model, task-suite and planted (folders holding a ``zoo_card.json``), sorted."""
    return sorted({*_names_in(ZOO_DIR), *_names_in(PLANTED_DIR)})


def list_models() -> list[ZooModel]:
    """The task-suite models (trained on every procedural task), sorted by name."""
    return [_read(ZOO_DIR / name) for name in _names_in(ZOO_DIR)]


def list_planted() -> list[ZooModel]:
    """The planted-circuit models, sorted by name."""
    return [_read(PLANTED_DIR / name) for name in _names_in(PLANTED_DIR)]


def is_zoo_model(name: str) -> bool:
    """Whether ``name`` is a shipped zoo model (a bare name, not a path)."""
    return "/" not in name and "\\" not in name and name in model_names()


def zoo_model(name: str) -> ZooModel:
    """The catalog entry of a zoo model; raises :class:`UnknownZooModel` naming the available ones."""
    if not is_zoo_model(name):
        raise UnknownZooModel(f"{name!r} is not an embedded zoo model (available: {', '.join(model_names()) or 'none'})")
    return _read(_folder_of(name))


def model_path(name: str) -> Path:
    """The folder of zoo model ``name`` (a Hugging Face model folder)."""
    return zoo_model(name).path
