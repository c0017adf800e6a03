"""The causal-track results record: one JSON per (method, task, variable, model, split, seed).

It shares the circuit record's provenance blocks (environment, model, timings, eligibility) and adds what
an interchange-intervention evaluation needs to be trusted and compared: the variable, the token roles
and layers scored, how many (base, counterfactual) pairs survived the model-correctness filter per kind,
the IIA of every site per kind, the per-layer best, "average" and "best" with bootstrap standard errors,
the sites that were requested but not scored, and where each trained featurizer was saved.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from mibench.results.record import (FORMAT_VERSION, EnvironmentInfo, ModelInfo, PluginStamp, _Strict, model_key,
                                   read_validated)


class CausalTaskInfo(_Strict):
    id: str
    version: str
    split: str
    variable: str
    counterfactuals: list[str]
    positions: list[str]
    layers: list[int]
    test_pairs: dict[str, int]
    train_pairs: int | None = None
    train_split: str | None = None
    dropped: dict[str, int] = Field(default_factory=dict)
    data_hash: str
    limited: bool = False
    #: as :attr:`mibench.results.record.TaskInfo.data_revision`
    data_revision: str | None = None


class CausalMethodInfo(_Strict):
    id: str
    arguments: dict[str, Any] = Field(default_factory=dict)
    source: Literal["method", "featurizers"] = "method"
    folder: str | None = None
    plugin: PluginStamp | None = None


class SiteRecord(_Strict):
    layer: int
    role: str
    iia: float
    iia_by_kind: dict[str, float]
    n_features: int
    n_selected: int
    train_loss: list[float] = Field(default_factory=list)
    seconds: float


class LayerBest(_Strict):
    layer: int
    iia: float
    role: str


class CauseIsolateScores(_Strict):
    """Cause, isolate and their mean (disentanglement); None where the evaluated pairs hold no pair of a type."""

    cause: float | None
    isolate: float | None
    disentanglement: float | None


class CauseIsolateMetrics(_Strict):
    """RAVEL-style cause / isolate for the record's variable (see :mod:`mibench.causal.isolation`).

    ``best`` is read at ``best_site``, the site of IIA "best"; ``average`` is the mean over layers at each
    layer's best-IIA position, present only when IIA "average" is. ``examples`` says which examples were
    evaluated (e.g. MIB's rebalanced mix); the pair counts are over every test kind.
    """

    examples: str
    cause_pairs: int
    isolate_pairs: int
    best_site: str
    best: CauseIsolateScores
    average: CauseIsolateScores | None = None


class CausalMetrics(_Strict):
    average: float | None
    average_stderr: float | None
    best: float
    best_stderr: float | None
    per_layer: list[LayerBest]
    #: requested (layer, role) sites without a featurizer: reported, never filled in with the full vector
    missing_sites: list[str] = Field(default_factory=list)
    #: IIA of an intervention that changes nothing, on exactly the evaluated pairs: the share whose label is
    #: the model's own answer (the floor under every site's IIA). None in records written before it existed.
    noop_iia: float | None = None
    #: only for tasks that define cause and isolate pairs (RAVEL); None otherwise and in older records
    cause_isolate: CauseIsolateMetrics | None = None


class CausalScorerInfo(_Strict):
    version: str
    bootstrap_replicates: int
    checker: str


class CausalRecord(_Strict):
    format_version: Literal["1"] = FORMAT_VERSION
    track: Literal["causal"] = "causal"
    created: str
    invocation: list[str]
    environment: EnvironmentInfo
    model: ModelInfo
    task: CausalTaskInfo
    method: CausalMethodInfo
    scorer: CausalScorerInfo
    seed: int
    timings: dict[str, float]
    sites: list[SiteRecord]
    metrics: CausalMetrics
    artifacts: dict[str, str] = Field(default_factory=dict)
    comparability_key: str
    leaderboard_eligible: bool
    eligibility_notes: list[str] = Field(default_factory=list)


def causal_comparability_key(task: CausalTaskInfo, model: ModelInfo, scorer: CausalScorerInfo) -> str:
    """Records share a leaderboard column only if task major version, split, variable, scorer and model agree.

    The token roles are *not* part of the key: which positions to intervene at is the method's choice (MIB
    lets submissions bring their own), so methods that chose differently still compete in one column. The
    record lists the roles it scored, and ``metrics.missing_sites`` the requested sites it did not.
    """
    major = task.version.split(".")[0]
    return f"{task.id}@{major}|{task.split}|{task.variable}|iia@{scorer.version}|{model_key(model)}"


def read_causal_record(path: str | Path) -> CausalRecord:
    """Load and validate a causal record; problems name the file and the field."""
    return read_validated(path, CausalRecord)
