"""The results record: one JSON document per (method, task, model, split, seed), validated on write and read.

Everything needed to trust, reproduce and compare a number is in it: the invocation, mibench version and
commit, package versions, the task (id, version, split, counterfactual, data hash, examples used and
dropped), the model (id, revision, dtype, graph size), the method and its *resolved* arguments, the scorer
version, seeds, hardware, wall time per phase, and the metrics with standard errors and full curves. The
comparability key names what must be equal for two records to share a leaderboard row; records are
written atomically, so an interrupted run never leaves half a file.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mibench.errors import MibenchError
from mibench.io_utils import atomic_write_text
from mibench.validation import describe_validation_error

RecordT = TypeVar("RecordT", bound=BaseModel)

FORMAT_VERSION = "1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class EnvironmentInfo(_Strict):
    mibench_version: str
    git_commit: str | None
    python: str
    packages: dict[str, str]
    hardware: dict[str, Any]


class ModelInfo(_Strict):
    id: str
    revision: str | None = None
    dtype: str
    family: str
    n_layers: int
    n_heads: int
    d_model: int
    n_edges: int
    #: content hash of the weights (:mod:`mibench.models.weights_identity`); part of the comparability key.
    #: None only in records written before it was recorded.
    weights_sha256: str | None = None


class TaskInfo(_Strict):
    id: str
    version: str
    split: str
    counterfactual: str
    n_examples: int
    dropped: dict[str, int] = Field(default_factory=dict)
    data_hash: str
    attribution_split: str | None = None
    attribution_examples: int | None = None
    limited: bool = False
    #: the official dataset's revision the examples come from (pinned, or the commit an unpinned hub read
    #: resolved to); None for generated data and local copies
    data_revision: str | None = None


class PluginStamp(_Strict):
    """The installed plugin a submission's records were produced with (``contains: plugin`` submissions)."""

    distribution: str
    version: str
    method: str


class MethodInfo(_Strict):
    id: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    level: str
    ablation: str
    source: Literal["method", "file", "circuits"] = "method"
    file: str | None = None  # the scored file, or the folder of a multiple-circuit submission
    #: Scored and evaluated on the position-aware graph of these spans (N = that graph's edge count).
    position_aware: bool = False
    spans: list[str] | None = None
    plugin: PluginStamp | None = None


class ScorerInfo(_Strict):
    version: str
    evaluation_ablation: str = "patching"
    fractions: list[float]
    bootstrap_replicates: int


class CurveRecord(_Strict):
    ranking: str
    fractions: list[float]
    nominal_sizes: list[int]
    edge_counts: list[float]
    faithfulness: list[float]
    mean_logit_difference: list[float]


class GroundTruthRecord(_Strict):
    """The method's scores against the model's known circuit (planted-circuit models): its edges, or, for a
    node-level method, its nodes."""

    file: str  # the ground-truth circuit, relative to the model folder
    n_true: int  # ground-truth items among those ranked
    n_edges: int  # items ranked: the real edges, or the scored nodes at node level
    level: Literal["edge", "node"] = "edge"
    auroc: float  # MIB's: trapezoid over the ten sizes' (FPR, TPR) points (absolute ranking)
    fpr: list[float]
    tpr: list[float]
    auroc_full: float  # from every threshold on |score|
    curve_fpr: list[float]
    curve_tpr: list[float]


class CircuitMetrics(_Strict):
    cpr: float
    cpr_stderr: float | None
    cmd: float
    cmd_stderr: float | None
    full_logit_difference: float
    empty_logit_difference: float
    #: bootstrap standard error of full - empty (records before it was recorded: None)
    effect_stderr: float | None = None
    n_items: int
    signed: CurveRecord
    absolute: CurveRecord
    baseline: CurveRecord | None = None
    ground_truth: GroundTruthRecord | None = None


class CircuitRecord(_Strict):
    format_version: Literal["1"] = FORMAT_VERSION
    track: Literal["circuit"] = "circuit"
    created: str
    invocation: list[str]
    environment: EnvironmentInfo
    model: ModelInfo
    task: TaskInfo
    method: MethodInfo
    scorer: ScorerInfo
    seed: int
    timings: dict[str, float]
    metrics: CircuitMetrics
    artifacts: dict[str, str] = Field(default_factory=dict)
    comparability_key: str
    leaderboard_eligible: bool
    eligibility_notes: list[str] = Field(default_factory=list)


def now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat()


def model_key(model: ModelInfo) -> str:
    """The model part of both tracks' comparability keys: id, hub revision and the weights' content hash.

    The hash is what keeps a retrained zoo model (same id, no revision) out of its predecessor's columns."""
    key = f"{model.id}@{model.revision or 'local'}"
    return f"{key}#{model.weights_sha256}" if model.weights_sha256 else key


def graph_kind(position_aware: bool) -> str:
    """``mib`` for MIB's position-invariant graph, ``positional`` for the position-aware one."""
    return "positional" if position_aware else "mib"


def comparability_key(task: TaskInfo, model: ModelInfo, scorer: ScorerInfo, level: str, *,
                      position_aware: bool, n_items: int) -> str:
    """Records may share a leaderboard column only if all of these agree: task major version, split,
    counterfactual, scorer, model and weights, level, and the graph the circuit fractions are taken of (its
    kind and item count): 1 % of a 4,822-edge position-aware graph is not 1 % of MIB's 496-edge graph."""
    major = task.version.split(".")[0]
    return (f"{task.id}@{major}|{task.split}|{task.counterfactual}|scorer@{scorer.version}|{model_key(model)}"
            f"|{level}|graph@{graph_kind(position_aware)}:{n_items}")


def write_record(record: BaseModel, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, record.model_dump_json(indent=2) + "\n")
    return path


def read_record(path: str | Path) -> CircuitRecord:
    """Load and validate a circuit record; problems name the file and the field."""
    return read_validated(path, CircuitRecord)


def read_validated(path: str | Path, schema: type[RecordT]) -> RecordT:
    """Load a results record of either track and validate it against ``schema``."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise MibenchError(f"{path}: cannot read results record: {exc}") from exc
    try:
        return schema.model_validate(raw)
    except ValidationError as exc:
        raise MibenchError(f"{path}: invalid results record: {describe_validation_error(exc)}") from exc
