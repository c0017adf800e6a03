"""Cause / isolate / disentanglement in causal records (RAVEL's view of a featurizer).

Unit tests build site results by hand, so which pairs are cause pairs, which site IIA calls best, and the
values read there are known in advance. End to end, full-vector patching on the zoo model trained on RAVEL
is checked against closed forms that follow from the data alone.
"""

from __future__ import annotations

import pytest
import torch

from mibench.causal.iia import SiteResult, aggregate
from mibench.causal.isolation import cause_isolate, cause_isolate_metrics, summarise
from mibench.data.registry import load_task

IDS = ["a", "b", "c", "d"]  # a, b: cause pairs; c, d: isolate pairs
IS_CAUSE = {"a": True, "b": True, "c": False, "d": False}


def _site(layer: int, role: str, pattern: list[int]) -> SiteResult:
    return SiteResult(layer, role, {"k": torch.tensor(pattern, dtype=torch.bool)})


class _View:
    examples = "every example (hand-built)"

    def evaluated_examples(self, examples, variable):
        return list(examples)

    def is_cause(self, base, variable):
        return base["asks"] == variable


class _Pairs:
    def __init__(self, ids):
        self.example_ids = ids


class _Example:
    def __init__(self, example_id, asks):
        self.id, self.variables = example_id, {"asks": asks}


def test_a_type_without_pairs_is_none_and_so_is_the_score():
    result = cause_isolate({"k": [True, False]}, {"k": ["a", "b"]}, IS_CAUSE)
    assert (result.cause, result.isolate, result.score) == (0.5, None, None)
    assert (result.cause_pairs, result.isolate_pairs) == (2, 0)


def test_read_at_the_sites_of_iia_best_and_average_not_re_maximised():
    results = [
        _site(0, "entity", [1, 1, 0, 0]),  # IIA 0.50: causes, never isolates
        _site(0, "END", [1, 0, 1, 1]),     # IIA 0.75 -> layer 0's best position
        _site(1, "entity", [1, 1, 1, 1]),  # IIA 1.00 -> layer 1's best, and IIA "best"
        _site(1, "END", [0, 0, 1, 1]),     # IIA 0.50: the best isolation, but not where IIA is read
    ]
    summary = aggregate(results, [0, 1], ["entity", "END"], n_layers=2, bootstrap=0)
    out = summarise(results, summary, {"k": IDS}, IS_CAUSE)
    assert out.best_site == (1, "entity") and (out.best.cause, out.best.isolate, out.best.score) == (1.0, 1.0, 1.0)
    # average over layers at each layer's best-IIA position: L0/END (0.5, 1.0) and L1/entity (1.0, 1.0)
    assert out.average == pytest.approx((0.75, 1.0, 0.875))


def test_ties_take_the_first_layer_and_a_missing_layer_leaves_no_average():
    results = [_site(2, "END", [1, 0, 1, 1]), _site(3, "END", [0, 1, 1, 1])]  # equal IIA
    summary = aggregate(results, [2, 3], ["END"], n_layers=4, bootstrap=0)  # layers 0 and 1 not scored
    out = summarise(results, summary, {"k": IDS}, IS_CAUSE)
    assert out.best_site == (2, "END") and out.average is None and summary.average is None


def test_the_record_block_names_the_site_the_examples_and_the_pair_counts():
    results = [_site(0, "entity", [1, 0, 0, 1]), _site(0, "END", [0, 0, 0, 0])]
    summary = aggregate(results, [0], ["entity", "END"], n_layers=1, bootstrap=0)
    examples = [_Example("a", "Country"), _Example("b", "Country"), _Example("c", "Language"),
                _Example("d", "Continent")]
    block = cause_isolate_metrics(_View(), results, summary, {"k": _Pairs(IDS)}, examples, "Country")
    assert block.best_site == "L0/entity" and block.examples == _View.examples
    assert (block.cause_pairs, block.isolate_pairs) == (2, 2)
    assert (block.best.cause, block.best.isolate, block.best.disentanglement) == (0.5, 0.5, 0.5)
    assert block.average is not None and block.average.disentanglement == 0.5  # one layer: the model's only one


def test_ravel_opts_in_through_its_causal_model_and_other_tasks_do_not():
    view = load_task("ravel").causal_model().cause_isolate
    assert view is not None and "rebalanced" in view.examples
    assert view.is_cause({"queried_attribute": "Country"}, "Country")
    assert not view.is_cause({"queried_attribute": "Language"}, "Country")
    assert all(load_task(t).causal_model().cause_isolate is None for t in ("mcqa", "ioi", "arithmetic_addition"))


@pytest.mark.slow
def test_full_vector_on_ravel_records_cause_and_isolate_that_match_closed_forms(tmp_path):
    """At the last layer's END position the output becomes the source's own answer, so cause (isolate) is the
    share of cause (isolate) pairs whose label is the source's answer, per kind, averaged over kinds."""
    from mibench.causal.pairs import build_pairs, filter_correct, own_answers
    from mibench.cli import main
    from mibench.engine.residual import ResidualRunner
    from mibench.models.loading import load_model
    from mibench.results.causal_record import read_causal_record
    from mibench.tasks.ravel.disentanglement import REBALANCE_SEED, rebalanced

    model, limit, variable = "gpt2-medium-tasks", 90, "Country"
    loaded = load_model(model)
    runner = ResidualRunner(loaded.adapter)
    final = runner.n_layers - 1
    assert main(["evaluate", "--track", "causal", "--method", "full-vector", "--task", "ravel", "--variable", variable,
                 "--model", model, "--output-dir", str(tmp_path), "--limit", str(limit), "--layers", str(final),
                 "--positions", "END", "--bootstrap", "10", "--quiet"]) == 0
    (path,) = tmp_path.rglob("record.json")
    record = read_causal_record(path)
    block = record.metrics.cause_isolate
    assert block is not None and "rebalanced" in block.examples and block.best_site == f"L{final}/END"

    task = load_task("ravel")
    causal_model = task.causal_model()
    examples = rebalanced(task.examples("test", limit), variable, seed=REBALANCE_SEED)
    by_id = {e.id: e for e in examples}
    shares = {"cause": [], "isolate": []}
    for kind in record.task.counterfactuals:
        pairs = build_pairs(examples, kind, variable, causal_model, loaded.tokenizer, ["END"])
        kept = filter_correct(pairs, runner, base_answers=own_answers(examples, pairs, loaded.tokenizer))
        assert len(kept) == record.task.test_pairs[kind]
        for name, want in (("cause", True), ("isolate", False)):
            hits = [label == by_id[i].counterfactual(kind).answer for i, label in zip(kept.example_ids, kept.labels)
                    if (by_id[i].variables["queried_attribute"] == variable) == want]
            shares[name].append(sum(hits) / len(hits))
    assert block.best.cause == pytest.approx(sum(shares["cause"]) / len(shares["cause"]), abs=1e-12)
    assert block.best.isolate == pytest.approx(sum(shares["isolate"]) / len(shares["isolate"]), abs=1e-12)
    # a prompt_template source asks for the country too, so it says the label; an attribute source never does
    kinds = record.task.counterfactuals
    assert shares["cause"][kinds.index("prompt_template")] == 1.0 and shares["cause"][kinds.index("attribute")] == 0.0
    assert block.cause_pairs + block.isolate_pairs == sum(record.task.test_pairs.values())
