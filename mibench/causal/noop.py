"""The no-op floor: the IIA an intervention that changes nothing gets on the evaluated pairs.

A pair counts as correct when the intervened model outputs the causal model's counterfactual label. When
the counterfactual does not change the localised variable (MCQA's ``randomLetter`` kind, or a source that
happens to share the base's value), the label *is* the base's own answer, and the filter kept only pairs
the unmodified model answers correctly, so doing nothing scores 1 on them. IIA alone hides that floor: a
featurizer at 0.333 may have moved nothing at all.

The floor is scored exactly like a site: the unmodified model on the base sequences (prompt plus label
tokens, teacher forcing) must predict every label token, and kinds are averaged unweighted as IIA averages
them. It depends only on the kept test pairs, which are filtered once per run, before and independently of
any site, so it is one number per record.
"""

from __future__ import annotations

from collections.abc import Mapping

from mibench.causal.iia import SiteResult
from mibench.causal.pairs import PairSet, answers_correct
from mibench.engine.residual import ResidualRunner

#: The pseudo-site the floor is reported as (it is no layer and no token position of the model).
NOOP_LAYER, NOOP_ROLE = -1, "no-op"


def noop_result(runner: ResidualRunner, test_sets: Mapping[str, PairSet], batch_size: int = 64) -> SiteResult:
    """Per kind and pair, whether the unmodified model already outputs the interchange label."""
    correct = {kind: answers_correct(runner, pairs.base, batch_size) for kind, pairs in test_sets.items()}
    return SiteResult(NOOP_LAYER, NOOP_ROLE, correct)
