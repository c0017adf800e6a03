"""RAVEL's own view of a featurizer: *cause* and *isolate* next to IIA, and MIB's per-attribute rebalancing.

RAVEL (Huang et al., 2024) asks two things of features that localise an attribute A (say ``Country``):

* **cause**: on pairs whose base prompt asks for A, interchanging the features must make the model say the
  source city's A (this is IIA restricted to those pairs);
* **isolate**: on pairs whose base prompt asks for another attribute B, interchanging A's features must
  leave the answer alone (the base city's B), i.e. the features must not also carry B.

The causal model's label already encodes both (:mod:`mibench.tasks.ravel.causal`: the label changes only
when the base asks for the intervened attribute), so plain IIA over a mixed set averages them with
weights set by the mix. RAVEL's disentanglement score is the mean of the two; the generic scoring lives in
:mod:`mibench.causal.isolation`, and :class:`RavelCauseIsolate` is RAVEL's opt-in to it.

MIB's baselines fix the mix per target attribute (:func:`rebalanced`): every example whose base asks for
the target (N of them) plus N // 2 randomly chosen examples for each other attribute, about 50/25/25 %.
Causal-track runs on RAVEL train and test on that mix, as MIB does, so RAVEL IIA is comparable with MIB's
(and is not the IIA of the unbalanced split, which is mostly isolate pairs). The draw uses a fixed seed, so
every method and seed is scored on the same examples (paired comparisons need that).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from mibench.causal.isolation import CauseIsolate, cause_isolate
from mibench.data.example import Example
from mibench.tasks.ravel.entities import ATTRIBUTES


def rebalanced(examples: Sequence[Example], variable: str, seed: int = 0) -> list[Example]:
    """MIB's rebalancing for target ``variable``: all examples asking for it, plus N // 2 of each other
    attribute's (chosen with ``random.Random(seed)``), in their original order. Examples asking for
    anything else are left out (MIB's mix holds the three attributes only)."""
    if variable not in ATTRIBUTES:
        raise ValueError(f"unknown RAVEL attribute {variable!r} (attributes: {', '.join(ATTRIBUTES)})")
    by_attribute: dict[str, list[int]] = {a: [] for a in ATTRIBUTES}
    for index, example in enumerate(examples):
        by_attribute.get(example.variables["queried_attribute"], []).append(index)
    n = len(by_attribute[variable])
    rng = random.Random(seed)
    keep = set(by_attribute[variable])
    for attribute in ATTRIBUTES:
        if attribute != variable:
            pool = by_attribute[attribute]
            keep.update(rng.sample(pool, min(len(pool), n // 2)))
    return [examples[i] for i in sorted(keep)]


#: Seed of the rebalancing draw in causal-track runs (fixed: every method and seed sees the same examples).
REBALANCE_SEED = 0

def disentanglement(correct: Mapping[str, Iterable[bool]], example_ids: Mapping[str, Sequence[str]],
                    queried: Mapping[str, str], variable: str) -> CauseIsolate:
    """Split one site's per-pair results into cause and isolate pairs.

    ``correct[kind]`` and ``example_ids[kind]`` are aligned per pair (a site result's ``correct`` and its
    pair set's ``example_ids``); ``queried`` maps an example id to the attribute its base prompt asks for.
    """
    return cause_isolate(correct, example_ids, {i: attribute == variable for i, attribute in queried.items()})


class RavelCauseIsolate:
    """RAVEL's opt-in to cause / isolate scoring (:class:`mibench.causal.isolation.CauseIsolateView`)."""

    examples = (f"MIB's rebalanced mix (seed {REBALANCE_SEED}): every example whose base asks for the target "
                "attribute, plus N // 2 of each other attribute's")

    def evaluated_examples(self, examples: Sequence[Example], variable: str) -> list[Example]:
        return rebalanced(examples, variable, seed=REBALANCE_SEED)

    def is_cause(self, base: Mapping[str, Any], variable: str) -> bool:
        return base["queried_attribute"] == variable
