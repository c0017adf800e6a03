"""The circuit-track scorer: scores -> circuits at ten sizes -> faithfulness curves -> CPR and CMD.

``score_attribution`` is what ``mibench evaluate`` and ``mibench score`` both call, so a method run and a
re-scored file from anyone go through identical code. The signed ranking's curve gives CPR, the absolute
ranking's curve CMD (MIB's convention, confirmed by its maintainers). ``score_circuits`` scores MIB's
multiple-circuit submissions (nine binary circuits) with the same evaluation and areas. A baseline graph (the random
method's scores) can be evaluated in the same batched forwards for the comparison plot.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np

from mibench.circuits.areas import (
    area_weights,
    bootstrap_replicate_means,
    circuit_metrics_from_examples,
    metrics_from_means,
)
from mibench.circuits.batches import CircuitBatch
from mibench.circuits.faithfulness import evaluate_circuits
from mibench.circuits.selection import FRACTIONS, circuit_sizes, circuits_at_sizes, n_scored_items
from mibench.engine.engine import PatchingEngine
from mibench.graph.graph import Graph

#: Bumped whenever a change to selection, evaluation or the areas could change a score.
SCORER_VERSION = "1.0"


@dataclass
class Curve:
    """One ranking's faithfulness curve over the ten sizes."""

    ranking: str  # "signed", "absolute", or "submitted" (multiple-circuit mode)
    fractions: list[float]
    nominal_sizes: list[int]  # n_k = int(k * N)
    edge_counts: list[float]  # realised (weighted) edge counts after pruning
    faithfulness: list[float]
    mean_logit_difference: list[float]


@dataclass
class CircuitScore:
    level: str
    n_items: int
    n_examples: int
    full_logit_difference: float
    empty_logit_difference: float
    cpr: float
    cpr_stderr: float
    cmd: float
    cmd_stderr: float
    signed: Curve
    absolute: Curve
    baseline: Curve | None = None
    bootstrap_replicates: int = 0
    #: bootstrap standard error of ``full_logit_difference - empty_logit_difference``, the denominator of every
    #: faithfulness value (NaN without a bootstrap)
    effect_stderr: float = float("nan")
    per_example: dict[str, list[float]] = field(default_factory=dict, repr=False)
    #: the per-example metric values the numbers above are computed from, in the sidecar's layout
    #: (``full``/``empty`` ``[n]``, ``signed``/``absolute``/``baseline`` ``[K, n]``; see mibench.results.examples)
    examples: dict[str, np.ndarray] = field(default_factory=dict, repr=False)


def _curve(ranking: str, circuits: list, means: np.ndarray, faithfulness: np.ndarray, n_items: int) -> Curve:
    return Curve(
        ranking=ranking,
        fractions=list(FRACTIONS),
        nominal_sizes=circuit_sizes(n_items),
        edge_counts=[round(g.weighted_edge_count(), 4) for g in circuits],
        faithfulness=[float(x) for x in faithfulness],
        mean_logit_difference=[float(x) for x in means],
    )


def score_attribution(
    engine: PatchingEngine,
    batches: Iterable[CircuitBatch],
    graph: Graph,
    *,
    baseline: Graph | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> CircuitScore:
    """Evaluate ``graph``'s scores as MIB does, with bootstrap standard errors over examples."""
    return _score(engine, batches, level=graph.level, n_items=n_scored_items(graph),
                  cpr_circuits=("signed", circuits_at_sizes(graph, absolute=False)),
                  cmd_circuits=("absolute", circuits_at_sizes(graph, absolute=True)),
                  baseline=baseline, bootstrap=bootstrap, seed=seed, on_batch=on_batch)


def score_circuits(
    engine: PatchingEngine,
    batches: Iterable[CircuitBatch],
    circuits: list[Graph],
    *,
    baseline: Graph | None = None,
    bootstrap: int = 1000,
    seed: int = 0,
    on_batch: Callable[[int], None] | None = None,
) -> CircuitScore:
    """MIB's multiple-circuit mode: nine submitted binary circuits instead of one ranking.

    The circuits are sorted by (weighted) edge count and placed on the first nine sizes of the grid; the
    complete model is the tenth point (faithfulness 1). CPR and CMD are both areas of this one curve. The
    caller checks the size limits (:mod:`mibench.submissions.check`); here exactly ``len(FRACTIONS) - 1``
    circuits are required, so a circuit is never placed on a grid point other than its own (MIB's backend
    shifted the full model onto an early point when fewer were given).
    """
    wanted = len(FRACTIONS) - 1
    if len(circuits) != wanted:
        raise ValueError(f"the multiple-circuit mode needs exactly {wanted} circuits, got {len(circuits)}")
    levels = {c.level for c in circuits}
    if len(levels) != 1:
        raise ValueError(f"the circuits mix levels: {sorted(levels)}")
    ordered = sorted(circuits, key=lambda c: c.weighted_edge_count())
    complete = ordered[-1].clone()
    complete.reset(empty=False)
    curve = ordered + [complete]
    return _score(engine, batches, level=ordered[0].level, n_items=n_scored_items(ordered[0]),
                  cpr_circuits=("submitted", curve), cmd_circuits=("submitted", curve),
                  baseline=baseline, bootstrap=bootstrap, seed=seed, on_batch=on_batch)


def _score(
    engine: PatchingEngine,
    batches: Iterable[CircuitBatch],
    *,
    level: str,
    n_items: int,
    cpr_circuits: tuple[str, list[Graph]],
    cmd_circuits: tuple[str, list[Graph]],
    baseline: Graph | None,
    bootstrap: int,
    seed: int,
    on_batch: Callable[[int], None] | None,
) -> CircuitScore:
    """Evaluate the CPR curve's and the CMD curve's circuits (and the baseline's) in one batched pass;
    areas, and their bootstrap standard errors over examples."""
    extra = circuits_at_sizes(baseline, absolute=True) if baseline is not None else []
    evaluation = evaluate_circuits(engine, list(batches), cpr_circuits[1] + cmd_circuits[1] + extra,
                                   on_batch=on_batch)
    baseline_circuits = (extra, n_scored_items(baseline)) if baseline is not None else None
    return summarise(evaluation, level=level, n_items=n_items, cpr_circuits=cpr_circuits,
                     cmd_circuits=cmd_circuits, baseline_circuits=baseline_circuits, bootstrap=bootstrap, seed=seed)


def summarise(evaluation, *, level: str, n_items: int, cpr_circuits: tuple[str, list], cmd_circuits: tuple[str, list],
              baseline_circuits: tuple[list, int] | None, bootstrap: int, seed: int) -> CircuitScore:
    """Curves, CPR, CMD and bootstrap errors from an evaluation of ``cpr + cmd (+ baseline)`` circuits in that
    order (any circuit type with a ``weighted_edge_count``: position-aware circuits use this too).

    The point estimates are :func:`circuit_metrics_from_examples` of the per-example arrays kept in
    ``CircuitScore.examples`` (what the record's sidecar holds), so the sidecar recomputes the record exactly."""
    (cpr_ranking, for_cpr), (cmd_ranking, for_cmd) = cpr_circuits, cmd_circuits
    k = len(FRACTIONS)
    per_circuit = evaluation.circuits  # [C, n]
    examples = {"full": evaluation.full, "empty": evaluation.empty, "signed": per_circuit[:k],
                "absolute": per_circuit[k : 2 * k]}
    if baseline_circuits is not None:
        examples["baseline"] = per_circuit[2 * k :]
    point = circuit_metrics_from_examples(examples)
    full, empty = float(point.full), float(point.empty)
    cpr_curve = _curve(cpr_ranking, for_cpr, point.signed_means, point.signed, n_items)
    cmd_curve = _curve(cmd_ranking, for_cmd, point.absolute_means, point.absolute, n_items)
    baseline_curve = None
    if baseline_circuits is not None:
        extra, baseline_items = baseline_circuits
        baseline_curve = _curve("absolute", extra, point.baseline_means, point.baseline, baseline_items)

    cpr_se = cmd_se = effect_se = float("nan")
    if bootstrap > 1 and per_circuit.shape[1] > 1:
        stacked = np.concatenate([per_circuit[: 2 * k], evaluation.full[None], evaluation.empty[None]])
        replicates = bootstrap_replicate_means(stacked, bootstrap, seed)  # [R, 2k + 2]
        resampled = metrics_from_means(replicates[:, :k], replicates[:, k : 2 * k], replicates[:, 2 * k],
                                       replicates[:, 2 * k + 1])
        cpr_se = float(np.std(resampled.cpr, ddof=1))
        cmd_se = float(np.std(resampled.cmd, ddof=1))
        effect_se = float(np.std(resampled.full - resampled.empty, ddof=1))
    return CircuitScore(
        level=level,
        n_items=n_items,
        n_examples=len(evaluation.example_ids),
        full_logit_difference=full,
        empty_logit_difference=empty,
        cpr=float(point.cpr),
        cpr_stderr=cpr_se,
        cmd=float(point.cmd),
        cmd_stderr=cmd_se,
        signed=cpr_curve,
        absolute=cmd_curve,
        baseline=baseline_curve,
        bootstrap_replicates=bootstrap,
        effect_stderr=effect_se,
        per_example={"example_ids": evaluation.example_ids, "full": evaluation.full.tolist(),
                     "empty": evaluation.empty.tolist()},
        examples=examples,
    )


__all__ = ["SCORER_VERSION", "CircuitScore", "Curve", "score_attribution", "score_circuits", "summarise",
           "area_weights"]
