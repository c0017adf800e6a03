"""Which model, and which graph, a submission's model name stands for -- without loading any weights.

A submission may name

* an embedded zoo model (``gpt2-tasks``): its graph comes from the model folder's ``config.json``
  (:func:`zoo_layout` is the one place the zoo plugs in), and it is evaluated offline;
* one of MIB's models, by MIB's short name (``gpt2``, ``qwen2.5``, ``gemma2``, ``llama3``) or its hub id
  (``Qwen/Qwen2.5-0.5B``): its graph comes from the reference sizes in :mod:`mibench.models.families`.

Torch-free.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any, Literal

from mibench.errors import MibenchError, close_matches
from mibench.graph.layout import GraphLayout
from mibench.models.families import FAMILIES, layout_from_config

#: MIB's short model names (submission folder names such as ``ioi_gpt2``) -> hub ids.
MIB_MODEL_ALIASES: dict[str, str] = {
    "gpt2": "gpt2",
    "qwen2.5": "Qwen/Qwen2.5-0.5B",
    "gemma2": "google/gemma-2-2b",
    "llama3": "meta-llama/Llama-3.1-8B",
}


class UnknownModelError(MibenchError, KeyError):
    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class ModelTarget:
    """A model a submission covers."""

    name: str  # as the submission writes it
    source: str  # what mibench.models.loading.load_model is given to evaluate it
    layout: GraphLayout
    kind: Literal["zoo", "reference"]


def _namespace(config: dict[str, Any]) -> SimpleNamespace:
    values = {k: _namespace(v) if k == "text_config" and isinstance(v, dict) else v for k, v in config.items()}
    return SimpleNamespace(**values)


def zoo_layout(name: str) -> GraphLayout | None:
    """The graph layout of embedded zoo model ``name`` (from its ``config.json``); None if it is not one."""
    try:
        from mibench.zoo.catalog import is_zoo_model, model_path
    except ImportError:  # a build of mibench without the zoo
        return None
    if not is_zoo_model(name):
        return None
    config_file = model_path(name) / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
        return layout_from_config(_namespace(config))
    except (OSError, ValueError) as exc:
        raise MibenchError(f"{config_file}: cannot read the zoo model's graph size: {exc}") from exc


def zoo_model_names() -> list[str]:
    try:
        from mibench.zoo.catalog import model_names
    except ImportError:
        return []
    return model_names()


def reference_layout(name: str) -> GraphLayout | None:
    """The graph layout of an MIB model named by short name or hub id; None if it is not one."""
    hub_id = MIB_MODEL_ALIASES.get(name, name)
    for family in FAMILIES:
        if family.reference_model == hub_id:
            return GraphLayout(**family.reference_sizes)
    return None


def known_models() -> list[str]:
    return [*zoo_model_names(), *MIB_MODEL_ALIASES, *(f.reference_model for f in FAMILIES
                                                      if f.reference_model not in MIB_MODEL_ALIASES)]


def resolve_model(name: str) -> ModelTarget:
    """The model a submission's model name stands for; raises :class:`UnknownModelError` naming the known ones."""
    layout = zoo_layout(name)
    if layout is not None:
        return ModelTarget(name=name, source=name, layout=layout, kind="zoo")
    layout = reference_layout(name)
    if layout is not None:
        return ModelTarget(name=name, source=MIB_MODEL_ALIASES.get(name, name), layout=layout, kind="reference")
    known = known_models()
    hint = close_matches(name, known)
    suggestion = f"; did you mean {' or '.join(repr(h) for h in hint)}?" if hint else ""
    raise UnknownModelError(f"unknown model {name!r}{suggestion} (known: {', '.join(known)})")
