"""``mibench submission export``: turn mibench runs into a folder in MIB's own leaderboard layout.

Circuit track (importance mode, one file per cell)::

    <output>/ioi_gpt2/importances.json          the run's scores.json, in MIB's magnitude convention
    <output>/arc-easy_gemma2/importances.json

Causal track (one folder per task, model and variable; three files per model unit)::

    <output>/4_answer_MCQA_Qwen2ForCausalLM_answer_pointer/
        ResidualStream(Layer-3,Token-last_token)_featurizer           torch.save({"model_info", "state_dict"})
        ResidualStream(Layer-3,Token-last_token)_inverse_featurizer
        ResidualStream(Layer-3,Token-last_token)_indices              JSON: null

The featurizer files are the ones ``Featurizer.save_modules`` of MIB's causal code writes. MIB's loader rebuilds
only subspace and identity featurizers, so every linear featurizer is written as the orthonormal subspace it
swaps (``SubspaceFeaturizerModule`` with ``rotation_matrix`` = the swapped basis, indices ``null``). An
interchange in that subspace is exactly mibench's interchange:

* a DAS subspace ``W`` with all features swapped is ``W`` itself;
* a mask over the neurons (DBM) is the standard basis vectors of the kept neurons;
* PCA keeps the selected components, because the stored mean cancels in ``x_b + (f_s - f_b) V^T``.

The full vector with every feature swapped is written as MIB's identity featurizer, and so is a site that
swaps nothing (a learned mask that kept no feature), with indices ``[]``. Writing the selection
into the basis, rather than into the ``_indices`` file, also avoids a bug in MIB's evaluator, which ignores
submitted indices. SAE featurizers, and plugin featurizers without a linear basis, cannot be expressed
in MIB's files and are refused by name.

A model that is not one of MIB's four keeps mibench's name in the folder names (see
:mod:`mibench.submissions.mib_names`): mibench's checker reads such folders, MIB's leaderboard does not.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mibench.errors import MibenchError
from mibench.io_utils import atomic_path, atomic_write_text
from mibench.submissions.mib_names import (
    LOADABLE_FEATURIZERS,
    causal_folder,
    circuit_folder,
    is_mib_model,
    unit_id,
)

RECORD_NAME = "record.json"
IMPORTANCES_FILE = "importances.json"
#: How far from orthonormal a basis may be and still be written (float32 rounding of a trained rotation).
ORTHONORMAL_TOLERANCE = 1e-4


class ExportError(MibenchError):
    """Runs that cannot be exported; the message names the file (and field) at fault."""


@dataclass
class ExportedCell:
    """One folder of the export and the run it came from."""

    folder: Path
    task: str
    model: str
    record: Path
    units: int = 0  # causal: model units written


@dataclass
class ExportReport:
    track: str
    method: str
    output: Path
    cells: list[ExportedCell] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


# ------------------------------------------------------------------ finding runs
def find_records(paths: Iterable[str | Path]) -> list[Path]:
    """Every ``record.json`` in ``paths`` (a record file, a run folder, or a folder of runs), sorted."""
    found: set[Path] = set()
    for path in map(Path, paths):
        if path.is_file():
            if path.name != RECORD_NAME:
                raise ExportError(f"{path}: not a results record (expected a {RECORD_NAME} or a folder of runs)")
            found.add(path)
        elif path.is_dir():
            found.update(p for p in path.rglob(RECORD_NAME) if p.is_file())
        else:
            raise ExportError(f"{path}: no such file or folder")
    if not found:
        raise ExportError(f"no {RECORD_NAME} under {', '.join(map(str, paths))}: run 'mibench evaluate' first")
    return sorted(found)


def _read(path: Path):
    from mibench.results.causal_record import read_causal_record
    from mibench.results.record import read_record

    try:
        track = json.loads(path.read_text(encoding="utf-8")).get("track", "circuit")
    except (OSError, json.JSONDecodeError, AttributeError) as exc:
        raise ExportError(f"{path}: cannot read results record: {exc}") from exc
    return read_causal_record(path) if track == "causal" else read_record(path)


def _select(paths: list[Path], method: str | None, seed: int | None) -> list[tuple[Path, Any]]:
    runs = [(p, _read(p)) for p in paths]
    chosen = [(p, r) for p, r in runs
              if (method is None or r.method.id == method) and (seed is None or r.seed == seed)]
    if not chosen:
        wanted = " and ".join(x for x in (method and f"method {method!r}", seed is not None and f"seed {seed}") if x)
        found = ", ".join(sorted({r.method.id for _, r in runs}))
        raise ExportError(f"no record matches {wanted} (records found for: {found})")
    tracks = sorted({r.track for _, r in chosen})
    methods = sorted({r.method.id for _, r in chosen})
    if len(tracks) > 1:
        raise ExportError(f"the records mix tracks ({', '.join(tracks)}): export one track at a time")
    if len(methods) > 1:
        raise ExportError(f"the records come from {len(methods)} methods ({', '.join(methods)}): a submission is "
                          "one method -- choose one with --method")
    return chosen


def _prepare_output(output: Path) -> None:
    if output.exists() and (not output.is_dir() or any(output.iterdir())):
        raise ExportError(f"{output}: already exists and is not an empty folder; export into a new folder")
    output.mkdir(parents=True, exist_ok=True)


def _claim(cells: dict[str, ExportedCell], name: str, cell: ExportedCell) -> None:
    if name in cells:
        raise ExportError(f"{cell.record} and {cells[name].record} both give folder {name}: keep one run per "
                          "task and model (choose with --seed, or pass only the runs to export)")
    cells[name] = cell


# ------------------------------------------------------------------ circuit track
def _export_circuit(runs: list[tuple[Path, Any]], output: Path, report: ExportReport) -> None:
    from mibench.graph.io import load_circuit

    cells: dict[str, ExportedCell] = {}
    for path, record in runs:
        if record.method.spans:
            raise ExportError(f"{path}: method.spans: a position-aware run scores mibench's span graph, which "
                              "MIB's layout cannot hold")
        scores_name = record.artifacts.get("scores")
        if scores_name is None:
            raise ExportError(f"{path}: artifacts.scores: the run wrote no scores (it scored a file or circuits); "
                              "export the run that produced the scores")
        name = circuit_folder(record.task.id, record.model.id)
        _claim(cells, name, ExportedCell(output / name, record.task.id, record.model.id, path))
        source = path.parent / scores_name
        load_circuit(source)  # a readable MIB file (raises CircuitFileError naming the file and field)
        cells[name].folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(cells[name].folder / IMPORTANCES_FILE) as tmp:
            shutil.copyfile(source, tmp)
    report.cells = list(cells.values())


# ------------------------------------------------------------------ causal track
def mib_featurizer_files(interchange: Any, where: str) -> tuple[dict[str, Any], dict[str, Any], list[int] | None]:
    """``(model_info, state_dict, indices)`` of MIB's ``save_modules`` for a mibench interchange.

    ``where`` names the site file in errors. See the module docstring for the conversion. A site that swaps
    nothing (a learned mask that kept no feature) is the identity featurizer with indices ``[]``.
    """
    import torch

    from mibench.causal.featurizer import IdentityFeaturizer, PCAFeaturizer, SubspaceFeaturizer

    featurizer, selection = interchange.featurizer, interchange.selection
    selected = selection.selected()
    d_model = featurizer.d_model
    if len(selected) == 0 or (isinstance(featurizer, IdentityFeaturizer) and len(selected) == d_model):
        info = {"featurizer_class": "IdentityFeaturizerModule",
                "inverse_featurizer_class": LOADABLE_FEATURIZERS["IdentityFeaturizerModule"],
                "n_features": d_model, "additional_config": {}}
        return info, {}, (None if len(selected) else [])
    if isinstance(featurizer, IdentityFeaturizer):
        basis = torch.eye(d_model)
    elif isinstance(featurizer, SubspaceFeaturizer):
        basis = featurizer.basis.detach()
    elif isinstance(featurizer, PCAFeaturizer):
        basis = featurizer.components.detach()
    else:
        raise ExportError(f"{where}: featurizer: {type(featurizer).__name__} has no linear basis; MIB's loader "
                          "rebuilds only subspace and identity featurizers (SAE featurizers cannot be submitted "
                          "as files)")
    rotation = basis[:, selected].to(torch.float32).cpu().contiguous()
    gram = rotation.T @ rotation
    if not torch.allclose(gram, torch.eye(gram.shape[0]), atol=ORTHONORMAL_TOLERANCE):
        raise ExportError(f"{where}: featurizer: the selected basis vectors are not orthonormal (max deviation "
                          f"{(gram - torch.eye(gram.shape[0])).abs().max().item():.2g}), so MIB's orthogonal "
                          "rotation layer would change them")
    info = {"featurizer_class": "SubspaceFeaturizerModule",
            "inverse_featurizer_class": LOADABLE_FEATURIZERS["SubspaceFeaturizerModule"],
            "n_features": int(rotation.shape[1]),
            "additional_config": {"rotation_matrix": rotation.clone(), "requires_grad": False}}
    return info, rotation_state_dict(rotation), None


def rotation_state_dict(rotation: Any) -> dict[str, Any]:
    """The ``state_dict`` of MIB's ``SubspaceFeaturizerModule`` (and its inverse) for ``rotation`` ``[d, k]``.

    MIB wraps pyvene's ``LowRankRotateLayer`` (one parameter ``weight`` ``[d, k]``) in
    ``torch.nn.utils.parametrizations.orthogonal`` and stores it as ``rotate``. The same construction here
    gives the same keys (``rotate.parametrizations.weight.original``, ``...weight.0.base``) and values, so
    MIB's ``load_state_dict`` accepts the file and reproduces ``rotation``.
    """
    import torch
    from torch import nn

    class _RotateLayer(nn.Module):  # pyvene's LowRankRotateLayer: a [d, k] weight, nothing else stored
        def __init__(self, weight: torch.Tensor) -> None:
            super().__init__()
            self.weight = nn.Parameter(weight.clone())

    holder = nn.Module()
    holder.rotate = nn.utils.parametrizations.orthogonal(_RotateLayer(rotation))
    return {k: v.detach().clone() for k, v in holder.state_dict().items()}


def _export_causal(runs: list[tuple[Path, Any]], output: Path, report: ExportReport) -> None:
    import torch

    from mibench.causal.storage import load_interchange

    cells: dict[str, ExportedCell] = {}
    for path, record in runs:
        folder_name = record.artifacts.get("featurizers")
        if folder_name is None:
            raise ExportError(f"{path}: artifacts.featurizers: the run saved no featurizers "
                              "(run 'mibench evaluate --track causal' without --no-save)")
        name = causal_folder(record.task.id, record.model.id, record.model.family, record.task.variable)
        cell = ExportedCell(output / name, record.task.id, record.model.id, path)
        _claim(cells, name, cell)
        cell.folder.mkdir(parents=True, exist_ok=True)
        for card_path in sorted((path.parent / folder_name).glob("*.json")):
            card, interchange = load_interchange(card_path)
            info, state, indices = mib_featurizer_files(interchange, str(card_path))
            stem = cell.folder / unit_id(card.layer, card.role)
            for suffix in ("_featurizer", "_inverse_featurizer"):
                with atomic_path(f"{stem}{suffix}") as tmp:
                    torch.save({"model_info": info, "state_dict": state}, tmp)
            atomic_write_text(f"{stem}_indices", json.dumps(indices))
            cell.units += 1
        if cell.units == 0:
            raise ExportError(f"{path.parent / folder_name}: no featurizer cards (L<layer>_<role>.json) to export")
    report.cells = list(cells.values())


# ------------------------------------------------------------------ entry point
def export_submission(paths: Iterable[str | Path], output: str | Path, *, method: str | None = None,
                      seed: int | None = None) -> ExportReport:
    """Write the runs under ``paths`` (one method, one run per task and model) in MIB's layout to ``output``."""
    runs = _select(find_records(list(paths)), method, seed)
    output = Path(output)
    first = runs[0][1]
    report = ExportReport(track=first.track, method=first.method.id, output=output)
    _prepare_output(output)
    if first.track == "causal":
        _export_causal(runs, output, report)
    else:
        _export_circuit(runs, output, report)
    others = sorted({c.model for c in report.cells if not is_mib_model(c.model)})
    if others:
        report.warnings.append(f"model(s) {', '.join(others)} are not MIB's (gpt2, qwen2.5, gemma2, llama3): "
                               "mibench reads these folders, MIB's leaderboard does not")
    return report
