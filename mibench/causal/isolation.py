"""Cause and isolate: IIA split into the pairs where the variable should move the output and the rest.

RAVEL (Huang et al., 2024) judges features that localise an attribute on two kinds of pairs: *cause*
pairs, whose base asks for that attribute (interchanging must make the model give the source's value), and
*isolate* pairs, whose base asks for something else (interchanging must leave the answer alone). Plain IIA
averages the two with weights set by the data mix; reported apart they show *why* a featurizer scores what
it scores (full-vector patching of the entity token causes everything and isolates nothing). The
disentanglement score is their mean.

A task opts in through its causal model (``CausalModel.cause_isolate``, a
:class:`~mibench.causal.causal_model.CauseIsolateView`): it says which pairs are cause pairs and which
examples a run evaluates (RAVEL: MIB's rebalanced mix). The pipeline never names a task.

Which sites: the numbers are read at the sites IIA's headline numbers come from
(:func:`mibench.causal.iia.aggregate`), not re-maximised: **best** at the site of IIA "best" (the first layer,
in layer order, whose best-position IIA is the maximum, at that layer's best position) and **average** as
the mean over layers of the values at each layer's best-IIA position, present only when IIA "average" is.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mibench.causal.causal_model import CauseIsolateView
from mibench.data.example import Example

if TYPE_CHECKING:  # torch-free at import: task modules that opt in import this one
    from mibench.causal.iia import Aggregate, SiteResult
    from mibench.causal.pairs import PairSet
    from mibench.results.causal_record import CauseIsolateMetrics


@dataclass(frozen=True)
class CauseIsolate:
    """Cause and isolate accuracy of one site (each a mean over counterfactual kinds, like IIA), and their mean.

    A kind without pairs of one type does not enter that type's mean; ``None`` when no kind has any.
    """

    cause: float | None
    isolate: float | None
    cause_pairs: int
    isolate_pairs: int

    @property
    def score(self) -> float | None:
        """RAVEL's disentanglement score: the mean of cause and isolate."""
        if self.cause is None or self.isolate is None:
            return None
        return (self.cause + self.isolate) / 2


def cause_isolate(correct: Mapping[str, Iterable[bool]], example_ids: Mapping[str, Sequence[str]],
                  is_cause: Mapping[str, bool]) -> CauseIsolate:
    """Split one site's per-pair results into cause and isolate pairs.

    ``correct[kind]`` and ``example_ids[kind]`` are aligned per pair (a site result's ``correct`` and its
    pair set's ``example_ids``); ``is_cause`` maps an example id to whether its pairs are cause pairs.
    """
    means: dict[bool, list[float]] = {True: [], False: []}
    counts = {True: 0, False: 0}
    for kind, outcomes in correct.items():
        ids = example_ids[kind]
        outcomes = [bool(o) for o in outcomes]
        if len(outcomes) != len(ids):
            raise ValueError(f"kind {kind!r}: {len(outcomes)} results for {len(ids)} pairs")
        groups: dict[bool, list[bool]] = {True: [], False: []}
        for example_id, ok in zip(ids, outcomes):
            groups[is_cause[example_id]].append(ok)
        for cause, values in groups.items():
            if values:
                means[cause].append(sum(values) / len(values))
                counts[cause] += len(values)

    def mean(values: list[float]) -> float | None:
        return sum(values) / len(values) if values else None

    return CauseIsolate(cause=mean(means[True]), isolate=mean(means[False]), cause_pairs=counts[True],
                        isolate_pairs=counts[False])


@dataclass(frozen=True)
class CauseIsolateSummary:
    """Cause / isolate at IIA's best site and averaged over layers at each layer's best-IIA position."""

    best_site: tuple[int, str]
    best: CauseIsolate
    average: tuple[float | None, float | None, float | None] | None  # (cause, isolate, disentanglement)


def summarise(results: Sequence[SiteResult], summary: Aggregate, example_ids: Mapping[str, Sequence[str]],
              is_cause: Mapping[str, bool]) -> CauseIsolateSummary:
    """Cause / isolate at the sites IIA's "best" and "average" are read at (see the module docstring)."""
    if not summary.per_layer:
        raise ValueError("no scored site: cause / isolate need at least one")
    by_site = {(r.layer, r.role): r for r in results}
    at = {layer: cause_isolate(by_site[(layer, role)].correct, example_ids, is_cause)
          for layer, role in summary.best_role.items()}
    best_layer = max(summary.per_layer, key=lambda layer: summary.per_layer[layer])  # first maximum, as max()
    average = None
    if summary.average is not None:
        values = list(at.values())
        average = (_mean_or_none([v.cause for v in values]), _mean_or_none([v.isolate for v in values]),
                   _mean_or_none([v.score for v in values]))
    return CauseIsolateSummary((best_layer, summary.best_role[best_layer]), at[best_layer], average)


def _mean_or_none(values: list[float | None]) -> float | None:
    """Mean over layers; None if any layer lacks the value (a partial mean would not be comparable)."""
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)


def cause_isolate_metrics(view: CauseIsolateView, results: Sequence[SiteResult], summary: Aggregate,
                          test_sets: Mapping[str, PairSet], examples: Sequence[Example],
                          variable: str) -> CauseIsolateMetrics:
    """The record block: cause / isolate / disentanglement of ``variable`` at IIA's sites."""
    from mibench.results.causal_record import CauseIsolateMetrics, CauseIsolateScores

    is_cause = {e.id: view.is_cause(e.variables, variable) for e in examples}
    result = summarise(results, summary, {kind: s.example_ids for kind, s in test_sets.items()}, is_cause)
    best, (layer, role) = result.best, result.best_site
    average = None
    if result.average is not None:
        cause, isolate, score = result.average
        average = CauseIsolateScores(cause=cause, isolate=isolate, disentanglement=score)
    return CauseIsolateMetrics(
        examples=view.examples, cause_pairs=best.cause_pairs, isolate_pairs=best.isolate_pairs,
        best_site=f"L{layer}/{role}",
        best=CauseIsolateScores(cause=best.cause, isolate=best.isolate, disentanglement=best.score),
        average=average)
