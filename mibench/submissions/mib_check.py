"""``mibench submission check --layout mib``: read a folder in MIB's own leaderboard layout back.

This is the layout ``mibench submission export`` writes and MIB's leaderboard accepts. It has no
``submission.yaml``, and folder names carry the tasks and models (:mod:`mibench.submissions.mib_names`).

* Circuit track: ``<task>_<model>/`` folders, optionally inside ``abs-True`` / ``abs-False`` folders
  that pin the ranking. Each holds one ``importances.json`` / ``.pt`` (importance mode) or the nine
  circuits of the multiple-circuit mode. Every file is read with mibench's reader for the named model's
  graph, and every importances file must have something to rank. The submission needs at least 2 tasks
  and 2 models, as MIB's leaderboard requires.
* Causal track: ``<TASK>_<ModelClass>_<variable>/`` folders, possibly one sub-folder deeper. Each model
  unit ``ResidualStream(Layer-L,Token-P)`` (or ``AttentionHead(Layer-L,Head-H,Token-P)``) has an
  ``_indices`` file (JSON ``null`` or a list of feature indices). Its ``_featurizer`` /
  ``_inverse_featurizer`` pair is read with ``torch.load(weights_only=True)`` and holds
  ``{"model_info", "state_dict"}`` with a class MIB's loader rebuilds. A subspace's ``rotation_matrix``
  must be ``[d_model, n_features]`` with orthonormal columns. Layers and heads must exist in the model.

Submitted Python files (``featurizer.py``, ``token_position.py``) are never run. They are reported as
warnings, because MIB's evaluator imports them and mibench cannot vouch for them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mibench.errors import MibenchError
from mibench.submissions.card import Problem
from mibench.submissions.check import (
    MIN_MODELS,
    MIN_TASKS,
    Cell,
    check_circuits,
    check_importances,
    folder_entries,
)
from mibench.submissions.mib_names import (
    LOADABLE_FEATURIZERS,
    MIB_CAUSAL_TASKS,
    MIB_CIRCUIT_TASKS,
    MIB_CLASS_MODELS,
    RESIDUAL_UNIT,
    UNIT_SUFFIXES,
    is_mib_model,
)
from mibench.submissions.models import ModelTarget, known_models, resolve_model

#: Top-level files MIB's causal layout may hold beside the unit folders.
CAUSAL_TOP_FILES = ("featurizer.py", "token_position.py", "ioi_linear_params.json", "README.md")
HEAD_UNIT = re.compile(r"AttentionHead\(Layer.(\d+),Head.(\d+),Token.([^)]+)\)")
#: Feature classes MIB's ``verify_submission.py`` accepts (SAE modules are rebuilt from sae_lens, not files).
ALLOWED_CLASSES = frozenset({*LOADABLE_FEATURIZERS, *LOADABLE_FEATURIZERS.values(), "SAEFeaturizerModule",
                             "SAEInverseFeaturizerModule"})
ORTHONORMAL_TOLERANCE = 1e-3


@dataclass
class MibLayoutReport:
    path: Path
    track: str
    cells: list[Cell] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def _is_abs_folder(name: str) -> bool:
    lower = name.lower()
    return "abs" in lower and ("true" in lower or "false" in lower)


def _split_prefix(name: str, prefixes: list[str]) -> tuple[str, str] | None:
    """``(prefix, rest)`` for the longest ``prefix`` with ``name == prefix + "_" + rest``."""
    for prefix in sorted(prefixes, key=len, reverse=True):
        if name.startswith(prefix + "_") and len(name) > len(prefix) + 1:
            return prefix, name[len(prefix) + 1 :]
    return None


def _model(name: str, where: str, problems: list[Problem]) -> ModelTarget | None:
    try:
        return resolve_model(name.replace("__", "/"))
    except MibenchError as exc:
        problems.append(Problem(where, None, str(exc)))
        return None


# ------------------------------------------------------------------ circuit track
def _circuit_task_spellings() -> dict[str, str]:
    from mibench.data.registry import list_cards

    spellings = {task: task for task in (card.id for card in list_cards())}
    spellings.update({task.replace("_", "-"): task for task in list(spellings)})
    spellings.update({mib: task for task, mib in MIB_CIRCUIT_TASKS.items()})
    return spellings


def _check_circuit_layout(report: MibLayoutReport) -> None:
    problems, spellings = report.problems, _circuit_task_spellings()
    folders: list[Path] = []
    for item in folder_entries(report.path):
        if item.is_file():
            if item.name != "README.md":
                problems.append(Problem(str(item), None, "unexpected file: circuit files belong in <task>_<model>/ "
                                        "folders (e.g. ioi_gpt2/importances.json)"))
        elif _is_abs_folder(item.name):
            folders += [p for p in folder_entries(item) if p.is_dir()]
            problems += [Problem(str(p), None, "unexpected file in a ranking folder") for p in folder_entries(item)
                         if p.is_file()]
        else:
            folders.append(item)
    for folder in folders:
        parsed = _split_prefix(folder.name, list(spellings))
        if parsed is None:
            problems.append(Problem(str(folder), None, "does not name a cell: expected <task>_<model> with a task "
                                    f"such as {', '.join(MIB_CIRCUIT_TASKS.values())} (e.g. ioi_gpt2)"))
            continue
        model = _model(parsed[1], str(folder), problems)
        if model is None:
            continue
        cell = Cell(task=spellings[parsed[0]], model=model, folder=folder)
        report.cells.append(cell)
        files = [p for p in folder_entries(folder) if p.is_file()]
        if len(files) == 1 and files[0].stem == "importances":
            check_importances(cell, None, problems)
        else:
            check_circuits(cell, problems)
    _check_coverage(report)


def _check_coverage(report: MibLayoutReport) -> None:
    tasks = {c.task for c in report.cells}
    models = {c.model.name for c in report.cells}
    if len(tasks) < MIN_TASKS:
        report.problems.append(Problem(str(report.path), None, f"MIB's leaderboard needs at least {MIN_TASKS} "
                                       f"tasks; the folder covers {len(tasks)} ({', '.join(sorted(tasks))})"))
    if len(models) < MIN_MODELS:
        report.problems.append(Problem(str(report.path), None, f"MIB's leaderboard needs at least {MIN_MODELS} "
                                       f"models; the folder covers {len(models)} ({', '.join(sorted(models))})"))
    others = sorted(m for m in models if not is_mib_model(m.replace("__", "/")))
    if others:
        report.warnings.append(f"{report.path}: model(s) {', '.join(others)} are not MIB's (gpt2, qwen2.5, gemma2, "
                               "llama3): mibench reads these folders, MIB's leaderboard does not")


# ------------------------------------------------------------------ causal track
def _causal_cell(folder: Path, problems: list[Problem]) -> tuple[str, ModelTarget, str] | None:
    """``(mibench task, model, variable)`` from ``<TASK>_<ModelClass>_<variable>``."""
    from mibench.data.registry import get_card

    tasks = {mib: task for task, mib in MIB_CAUSAL_TASKS.items()}
    parsed = _split_prefix(folder.name, list(tasks))
    if parsed is None:
        problems.append(Problem(str(folder), None, "does not name a unit folder: expected <TASK>_<ModelClass>_"
                                f"<variable> with TASK one of {', '.join(tasks)}"))
        return None
    task = tasks[parsed[0]]
    names = [*MIB_CLASS_MODELS, *(m.replace("/", "__") for m in known_models())]
    split = _split_prefix(parsed[1], names)
    if split is None:
        problems.append(Problem(str(folder), None, f"the model part is not a known model class or name (known: "
                                f"{', '.join(MIB_CLASS_MODELS)}, or a mibench model name)"))
        return None
    model = _model(MIB_CLASS_MODELS.get(split[0], split[0]), str(folder), problems)
    variables = get_card(task).causal.variables
    if split[1] not in variables:
        problems.append(Problem(str(folder), None, f"variable {split[1]!r} is not one of task {task!r}'s "
                                f"({', '.join(variables)})"))
        return None
    return (task, model, split[1]) if model is not None else None


def _unit_files(folder: Path, problems: list[Problem]) -> dict[str, dict[str, Path]]:
    units: dict[str, dict[str, Path]] = {}
    for item in folder_entries(folder):
        suffix = next((s for s in sorted(UNIT_SUFFIXES, key=len, reverse=True) if item.name.endswith(s)), None)
        if item.is_dir() or suffix is None:
            problems.append(Problem(str(item), None, "unexpected entry: a unit folder holds <unit>_featurizer, "
                                    "<unit>_inverse_featurizer and <unit>_indices files"))
            continue
        units.setdefault(item.name[: -len(suffix)], {})[suffix] = item
    return units


def _load_featurizer_file(path: Path, problems: list[Problem]) -> dict[str, Any] | None:
    import pickle

    import torch

    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        problems.append(Problem(str(path), None, "not a plain torch data file: torch.load(weights_only=True) "
                                "refused it (the file is corrupt, or references code, which mibench never runs)"))
        return None
    except Exception as exc:  # corrupt or not a torch file: torch raises many types
        problems.append(Problem(str(path), None, f"not a readable torch file ({type(exc).__name__}: {exc})"))
        return None
    if not isinstance(data, dict) or not {"model_info", "state_dict"} <= set(data):
        problems.append(Problem(str(path), None, "expected a dict with 'model_info' and 'state_dict' (MIB's "
                                "Featurizer.save_modules format)"))
        return None
    if not isinstance(data["model_info"], dict) or not isinstance(data["state_dict"], dict):
        problems.append(Problem(str(path), "model_info", "model_info and state_dict must be dicts"))
        return None
    return data


def _check_featurizer(path: Path, data: dict[str, Any], d_model: int, custom_code: bool,
                      problems: list[Problem]) -> int | None:
    """Problems with one featurizer file; returns its number of features when known."""
    import torch

    info = data["model_info"]
    key = "inverse_featurizer_class" if path.name.endswith("_inverse_featurizer") else "featurizer_class"
    cls = info.get(key)
    if cls not in ALLOWED_CLASSES:
        if custom_code and isinstance(cls, str):
            return None  # a class of the submitted featurizer.py (reported once, as a warning)
        problems.append(Problem(str(path), f"model_info.{key}", f"{cls!r} is not a class MIB's loader rebuilds "
                                f"({', '.join(sorted(ALLOWED_CLASSES))})"))
        return None
    n_features = info.get("n_features")
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 1:
        problems.append(Problem(str(path), "model_info.n_features", f"expected a positive integer, got {n_features!r}"))
        return None
    if info.get("featurizer_class") != "SubspaceFeaturizerModule":
        if info.get("featurizer_class") == "IdentityFeaturizerModule" and n_features != d_model:
            problems.append(Problem(str(path), "model_info.n_features", f"an identity featurizer has d_model = "
                                    f"{d_model} features, not {n_features}"))
        return n_features
    config = info.get("additional_config")
    rotation = config.get("rotation_matrix") if isinstance(config, dict) else None
    field_name = "model_info.additional_config.rotation_matrix"
    if not isinstance(rotation, torch.Tensor) or rotation.dim() != 2:
        problems.append(Problem(str(path), field_name, "expected a [d_model, n_features] tensor"))
        return None
    if tuple(rotation.shape) != (d_model, n_features):
        problems.append(Problem(str(path), field_name, f"shape {list(rotation.shape)}, expected [{d_model}, "
                                f"{n_features}] (d_model of the model, n_features of model_info)"))
        return None
    rotation = rotation.double()
    gram = rotation.T @ rotation
    deviation = (gram - torch.eye(n_features, dtype=gram.dtype)).abs().max().item()
    if not torch.isfinite(rotation).all() or deviation > ORTHONORMAL_TOLERANCE:
        problems.append(Problem(str(path), field_name, f"columns are not orthonormal (max deviation {deviation:.2g}); "
                                "MIB's orthogonal rotation layer would replace them"))
    if not isinstance(config.get("requires_grad"), bool):
        problems.append(Problem(str(path), "model_info.additional_config.requires_grad", "expected true/false"))
    return n_features


def _check_indices(path: Path, n_features: int | None, problems: list[Problem]) -> None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        problems.append(Problem(str(path), None, f"not JSON ({exc}); expected null or a list of feature indices"))
        return
    if value is None:
        return
    if not isinstance(value, list):
        problems.append(Problem(str(path), None, f"expected null or a list of feature indices, got {type(value).__name__}"))
        return
    for i, index in enumerate(value):
        if isinstance(index, bool) or not isinstance(index, int) or index < 0 or (
                n_features is not None and index >= n_features):
            limit = f"0..{n_features - 1}" if n_features is not None else "a non-negative integer"
            problems.append(Problem(str(path), f"[{i}]", f"{index!r} is not a feature index ({limit})"))
            return


def _check_unit(name: str, files: dict[str, Path], folder: Path, model: ModelTarget, custom_code: bool,
                problems: list[Problem]) -> None:
    layout = model.layout
    match = RESIDUAL_UNIT.fullmatch(name) or HEAD_UNIT.fullmatch(name)
    if match is None:
        problems.append(Problem(str(folder / name), None, "not a model unit id: expected "
                                "ResidualStream(Layer-<L>,Token-<position>) or AttentionHead(Layer-<L>,Head-<H>,"
                                "Token-<position>)"))
        return
    layer = int(match.group(1))
    if layer >= layout.n_layers:
        problems.append(Problem(str(folder / name), None, f"layer {layer} does not exist (the model has "
                                f"{layout.n_layers}: 0..{layout.n_layers - 1})"))
    width = layout.d_model
    if match.re is HEAD_UNIT:
        head = int(match.group(2))
        if head >= layout.n_heads:
            problems.append(Problem(str(folder / name), None, f"head {head} does not exist (the model has "
                                    f"{layout.n_heads} per layer)"))
        width = layout.d_model // layout.n_heads
    if "_indices" not in files:
        problems.append(Problem(str(folder / f"{name}_indices"), None, "missing (every unit needs its indices file, "
                                "null for all features)"))
    pair = [files.get(s) for s in ("_featurizer", "_inverse_featurizer")]
    if (pair[0] is None) != (pair[1] is None):
        missing = folder / f"{name}{'_featurizer' if pair[0] is None else '_inverse_featurizer'}"
        problems.append(Problem(str(missing), None, "missing: the featurizer and inverse featurizer come as a pair"))
    counts = []
    for path in (p for p in pair if p is not None):
        data = _load_featurizer_file(path, problems)
        if data is not None:
            counts.append(_check_featurizer(path, data, width, custom_code, problems))
    if "_indices" in files:
        _check_indices(files["_indices"], next((c for c in counts if c is not None), None), problems)


def _check_causal_layout(report: MibLayoutReport) -> None:
    problems = report.problems
    custom_code = (report.path / "featurizer.py").is_file()
    for item in folder_entries(report.path):
        if item.is_file():
            if item.name not in CAUSAL_TOP_FILES:
                problems.append(Problem(str(item), None, f"unexpected file (beside the unit folders MIB allows "
                                        f"{', '.join(CAUSAL_TOP_FILES)})"))
            elif item.suffix == ".py":
                report.warnings.append(f"{item}: not checked: mibench never runs submitted code (MIB's evaluator "
                                       "imports it)")
            continue
        parsed = _causal_cell(item, problems)
        if parsed is None:
            continue
        task, model, variable = parsed
        inner = folder_entries(item)
        folder = inner[0] if len(inner) == 1 and inner[0].is_dir() else item  # MIB: one sub-folder deeper is fine
        cell = Cell(task=task, model=model, folder=folder, variables={variable: folder})
        report.cells.append(cell)
        units = _unit_files(folder, problems)
        if not units:
            problems.append(Problem(str(folder), None, "no model units (<unit>_indices files)"))
        for name, files in sorted(units.items()):
            _check_unit(name, files, folder, model, custom_code, problems)


# ------------------------------------------------------------------ entry point
def detect_track(path: Path) -> str:
    """``causal`` if a folder (or one of its sub-folders) holds unit files (``..._indices`` and friends),
    else ``circuit``."""
    def has_units(folder: Path) -> bool:
        return any(p.name.endswith(UNIT_SUFFIXES) for p in folder.iterdir())

    for folder in (p for p in path.iterdir() if p.is_dir()):
        if has_units(folder) or any(has_units(p) for p in folder.iterdir() if p.is_dir()):
            return "causal"
    return "circuit"


def check_mib_layout(path: str | Path) -> MibLayoutReport:
    """Every problem with a folder in MIB's leaderboard layout (either track, told apart by its folder names)."""
    path = Path(path)
    if not path.is_dir():
        return MibLayoutReport(path, "circuit", problems=[Problem(str(path), None, "not a folder")])
    from mibench.submissions.file_rules import link_problems

    report = MibLayoutReport(path, detect_track(path))
    report.problems += link_problems(path)
    if report.problems:
        return report
    if report.track == "causal":
        _check_causal_layout(report)
    else:
        _check_circuit_layout(report)
    return report
