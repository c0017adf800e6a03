"""RAVEL's own view of a featurizer: *cause* and *isolate* next to IIA, and MIB's per-attribute rebalancing.

RAVEL (Huang et al., 2024) asks two things of features that localise an attribute A (say ``Country``):

* **cause**: on pairs whose base prompt asks for A, interchanging the features must make the model say the
  source city's A (this is IIA restricted to those pairs);
* **isolate**: on pairs whose base prompt asks for another attribute B, interchanging A's features must
  leave the answer alone (the base city's B), i.e. the features must not also carry B.

The causal model's label already encodes both (:mod:`mibench.tasks.ravel.causal`: the label changes only
when the base asks for the intervened attribute), so plain IIA over a mixed set averages them with
weights set by the mix. Reporting them apart shows *why* a featurizer scores what it scores: full-vector
patching of the entity token causes everything and isolates nothing. RAVEL's disentanglement score is the
mean of the two.

MIB's baselines fix the mix per target attribute (:func:`rebalanced`): every example whose base asks for
the target (N of them) plus N // 2 randomly chosen examples for each other attribute, about 50/25/25 %.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from mibench.data.example import Example
from mibench.tasks.ravel.entities import ATTRIBUTES


def rebalanced(examples: Sequence[Example], variable: str, seed: int = 0) -> list[Example]:
    """MIB's rebalancing for target ``variable``: all examples asking for it, plus N // 2 of each other
    attribute's (chosen with ``random.Random(seed)``), in their original order."""
    if variable not in ATTRIBUTES:
        raise ValueError(f"unknown RAVEL attribute {variable!r} (attributes: {', '.join(ATTRIBUTES)})")
    by_attribute: dict[str, list[int]] = {a: [] for a in ATTRIBUTES}
    for index, example in enumerate(examples):
        by_attribute[example.variables["queried_attribute"]].append(index)
    n = len(by_attribute[variable])
    rng = random.Random(seed)
    keep = set(by_attribute[variable])
    for attribute in ATTRIBUTES:
        if attribute != variable:
            pool = by_attribute[attribute]
            keep.update(rng.sample(pool, min(len(pool), n // 2)))
    return [examples[i] for i in sorted(keep)]


@dataclass(frozen=True)
class Disentanglement:
    """Cause and isolate accuracy of one site (each a mean over counterfactual kinds, like IIA), and their mean."""

    cause: float
    isolate: float
    cause_pairs: int
    isolate_pairs: int

    @property
    def score(self) -> float:
        return (self.cause + self.isolate) / 2


def disentanglement(correct: Mapping[str, Iterable[bool]], example_ids: Mapping[str, Sequence[str]],
                    queried: Mapping[str, str], variable: str) -> Disentanglement:
    """Split one site's per-pair results into cause and isolate pairs.

    ``correct[kind]`` and ``example_ids[kind]`` are aligned per pair (a site result's ``correct`` and its
    pair set's ``example_ids``); ``queried`` maps an example id to the attribute its base prompt asks for.
    A kind without pairs of one type does not enter that type's mean.
    """
    means: dict[str, list[float]] = {"cause": [], "isolate": []}
    counts = {"cause": 0, "isolate": 0}
    for kind, outcomes in correct.items():
        ids = example_ids[kind]
        groups: dict[str, list[bool]] = {"cause": [], "isolate": []}
        outcomes = [bool(o) for o in outcomes]
        if len(outcomes) != len(ids):
            raise ValueError(f"kind {kind!r}: {len(outcomes)} results for {len(ids)} pairs")
        for example_id, ok in zip(ids, outcomes):
            groups["cause" if queried[example_id] == variable else "isolate"].append(ok)
        for name, values in groups.items():
            if values:
                means[name].append(sum(values) / len(values))
                counts[name] += len(values)
    nan = float("nan")
    return Disentanglement(
        cause=sum(means["cause"]) / len(means["cause"]) if means["cause"] else nan,
        isolate=sum(means["isolate"]) / len(means["isolate"]) if means["isolate"] else nan,
        cause_pairs=counts["cause"], isolate_pairs=counts["isolate"])
