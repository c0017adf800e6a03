"""Comparisons the per-column tables cannot make, kept as small JSON files and rendered as their own sections.

Position-aware methods (PEAP) are ranked on the position-aware graph and position-invariant ones (EAP) on
MIB's graph, in separate tables: a circuit size is a fraction of the scored graph, so the tables never put
the two side by side. ``benchmarks/peap_vs_eap.py --json FILE`` measures them at *matched edge budgets*
(PEAP circuits with exactly as many edges as EAP's at each size) and writes a :class:`PeapVsEap` file;
``mibench leaderboard build`` renders every such file in the comparisons folder (by default
``comparisons/`` beside the records folder, i.e. ``leaderboard/comparisons/``) as a section of its own.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from mibench.errors import MibenchError
from mibench.io_utils import atomic_write_text
from mibench.validation import describe_validation_error

PEAP_VS_EAP_FORMAT = "mibench-peap-vs-eap/1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Scores(_Strict):
    """CPR and CMD of one method on its own graph, with bootstrap standard errors."""

    cpr: float
    cpr_stderr: float | None
    cmd: float
    cmd_stderr: float | None


class MatchedBudget(_Strict):
    """Faithfulness of both methods' absolute-ranking circuits with the same number of edges."""

    fraction: float  # the size as a fraction of the position-invariant graph
    edges: int  # the edge budget both circuits get
    eap: float
    peap: float


class PositionSumming(_Strict):
    """Haklay et al.'s two effects of summing span scores, on the top ``fraction`` of invariant edges."""

    fraction: float
    k: int  # edges in the top set
    cancellation: float  # share of the top set by sum |span score| that is not in the top set by |sum|
    overestimation: float  # share of the top set by |sum| that is not in the top set by max |span score|


class PeapVsEap(_Strict):
    """One run of ``benchmarks/peap_vs_eap.py`` on a task and model."""

    format: Literal["mibench-peap-vs-eap/1"] = PEAP_VS_EAP_FORMAT
    task: str
    model: str
    counterfactual: str
    attribution_examples: int
    test_examples: int
    spans: list[str]
    invariant_edges: int
    positional_edges: int
    eap: Scores
    peap: Scores
    matched: list[MatchedBudget]
    position_summing: list[PositionSumming]
    #: provenance, so a reader can tell which data and weights the numbers come from (None in older files)
    task_version: str | None = None
    data_hash: str | None = None
    weights_sha256: str | None = None
    git_commit: str | None = None


def write_comparison(comparison: PeapVsEap, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, comparison.model_dump_json(indent=2) + "\n")
    return path


def read_comparisons(folder: str | Path) -> list[PeapVsEap]:
    """Every ``*.json`` in ``folder`` (none if the folder does not exist), in file-name order.

    A file that is not a valid comparison raises :class:`MibenchError` naming the file and the field: unlike a
    record, which arrives by pull request and is listed as unreadable, these files are written by the benchmark
    in this repository, so a broken one is a mistake to fix before publishing."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    comparisons = []
    for path in sorted(folder.glob("*.json")):
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MibenchError(f"{path}: cannot read comparison: {exc}") from None
        try:
            comparisons.append(PeapVsEap.model_validate(raw))
        except ValidationError as exc:
            raise MibenchError(f"{path}: invalid comparison: {describe_validation_error(exc)}") from None
    return comparisons
