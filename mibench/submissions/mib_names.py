"""The names MIB's leaderboard uses for tasks, models and featurizer files, and how mibench's map onto them.

Both halves of MIB's submission layout are named here, once, for ``mibench submission export`` (which writes
them) and ``mibench submission check --layout mib`` (which reads them back):

* circuit track -- one folder per cell, ``<task>_<model>/importances.json`` with MIB's task spellings
  (``ioi``, ``mcqa``, ``arithmetic-addition``, ``arc-easy``, ...) and short model names (``gpt2``,
  ``qwen2.5``, ``gemma2``, ``llama3``);
* causal track -- one folder per (task, model, variable), ``<TASK>_<ModelClass>_<variable>`` (e.g.
  ``4_answer_MCQA_Qwen2ForCausalLM_answer_pointer``), holding per model unit
  ``ResidualStream(Layer-<L>,Token-<position>)_featurizer``, ``..._inverse_featurizer`` and ``..._indices``.

A model that is not one of MIB's four (for example an embedded zoo model) keeps mibench's name, ``/``
written ``__``. mibench reads such folders, and MIB's leaderboard does not accept them. Torch-free.
"""

from __future__ import annotations

import re

from mibench.submissions.models import MIB_MODEL_ALIASES

#: mibench task id -> MIB's circuit-track folder spelling (other tasks: the id with ``-`` for ``_``).
MIB_CIRCUIT_TASKS: dict[str, str] = {
    "ioi": "ioi",
    "mcqa": "mcqa",
    "arithmetic_addition": "arithmetic-addition",
    "arithmetic_subtraction": "arithmetic-subtraction",
    "arc_easy": "arc-easy",
    "arc_challenge": "arc-challenge",
}
#: mibench task id -> MIB's causal-track task prefix (``verify_submission.py``'s TASKS).
MIB_CAUSAL_TASKS: dict[str, str] = {
    "ioi": "ioi_task",
    "mcqa": "4_answer_MCQA",
    "arc_easy": "ARC_easy",
    "arithmetic": "arithmetic",
    "ravel": "ravel_task",
}
#: mibench model family -> the HF class name MIB's causal folders use.
MIB_MODEL_CLASSES: dict[str, str] = {
    "gpt2": "GPT2LMHeadModel",
    "qwen2": "Qwen2ForCausalLM",
    "gemma2": "Gemma2ForCausalLM",
    "llama": "LlamaForCausalLM",
}
#: The hub id of MIB's model of each class (graph and hidden sizes come from it).
MIB_CLASS_MODELS: dict[str, str] = {
    "GPT2LMHeadModel": "gpt2",
    "Qwen2ForCausalLM": "Qwen/Qwen2.5-0.5B",
    "Gemma2ForCausalLM": "google/gemma-2-2b",
    "LlamaForCausalLM": "meta-llama/Llama-3.1-8B",
}
#: mibench token role -> MIB's token-position id (other roles keep their name).
MIB_POSITIONS: dict[str, str] = {"END": "last_token"}
#: The file-name suffixes of one model unit in a causal folder.
UNIT_SUFFIXES: tuple[str, ...] = ("_featurizer", "_inverse_featurizer", "_indices")
#: ``ResidualStream(Layer-3,Token-last_token)``; MIB's loaders accept any one separator character.
RESIDUAL_UNIT = re.compile(r"ResidualStream\(Layer.(\d+),Token.([^)]+)\)")
#: What MIB's evaluator can rebuild from a featurizer file (``Featurizer.load_modules``).
LOADABLE_FEATURIZERS: dict[str, str] = {
    "SubspaceFeaturizerModule": "SubspaceInverseFeaturizerModule",
    "IdentityFeaturizerModule": "IdentityInverseFeaturizerModule",
}


def mib_model_name(model_id: str) -> str:
    """MIB's short name of a model (``Qwen/Qwen2.5-0.5B`` -> ``qwen2.5``), else mibench's, ``/`` -> ``__``."""
    short = {hub: name for name, hub in MIB_MODEL_ALIASES.items()}
    if model_id in MIB_MODEL_ALIASES:
        return model_id
    return short.get(model_id, model_id.replace("/", "__"))


def is_mib_model(model_id: str) -> bool:
    """Whether MIB's leaderboard evaluates this model."""
    return model_id in MIB_MODEL_ALIASES or model_id in MIB_MODEL_ALIASES.values()


def circuit_folder(task: str, model_id: str) -> str:
    """``<task>_<model>`` as MIB spells it (``arc-easy_gemma2``)."""
    return f"{MIB_CIRCUIT_TASKS.get(task, task.replace('_', '-'))}_{mib_model_name(model_id)}"


def causal_model_part(model_id: str, family: str) -> str:
    """The model part of a causal folder: MIB's class name for MIB's models, else mibench's model name."""
    if is_mib_model(model_id):
        return MIB_MODEL_CLASSES[family]
    return model_id.replace("/", "__")


def causal_folder(task: str, model_id: str, family: str, variable: str) -> str:
    """``<TASK>_<ModelClass>_<variable>`` (``4_answer_MCQA_Qwen2ForCausalLM_answer``)."""
    return f"{MIB_CAUSAL_TASKS.get(task, task)}_{causal_model_part(model_id, family)}_{variable}"


def unit_id(layer: int, role: str) -> str:
    """MIB's id of a residual-stream unit at ``layer`` and mibench token role ``role``."""
    return f"ResidualStream(Layer-{layer},Token-{MIB_POSITIONS.get(role, role)})"
