"""The span-schema suggester: per-position attribution against node-level EAP, and suggestions that fit."""

from __future__ import annotations

import pytest
import torch
import yaml

from mibench.circuits.attribution import attribute
from mibench.circuits.batches import build_batches
from mibench.circuits.schema_suggest import position_node_attribution, position_saliency, suggest_schema
from mibench.cli import main
from mibench.data.card import SpanSchema
from mibench.data.registry import load_task
from mibench.engine import PatchingEngine
from mibench.engine.ablation import mean_ablation
from mibench.models.loading import load_model


@pytest.fixture(scope="module")
def zoo():
    loaded = load_model("gpt2-tasks")
    return loaded, PatchingEngine(loaded.adapter)


def _batch(loaded, task="ioi", n=12):
    examples = load_task(task).examples("validation", n)
    return examples, build_batches(examples, loaded.tokenizer, "s2_io_flip", n).batches[0]


def test_per_position_attribution_sums_to_node_level_eap(zoo):
    """Summed over positions (and averaged over examples) it is exactly the node-level attribution mibench
    already checks against finite differences, for mean ablation and counterfactual patching alike."""
    loaded, engine = zoo
    _, batch = _batch(loaded)
    means = mean_ablation(engine, [(batch.clean_ids, batch.attention_mask)])
    for ablation, reference in (("mean", means), ("patching", None)):
        per_position = position_node_attribution(engine, batch, ablation, reference)
        nodes = attribute(engine, [batch], level="node", ablation=ablation, reference=means).node_scores
        assert torch.allclose(per_position.sum((0, 2)).float() / batch.size, nodes, rtol=1e-4, atol=1e-6)


def test_patching_saliency_is_zero_before_the_first_token_that_differs(zoo):
    loaded, engine = zoo
    _, batch = _batch(loaded)
    saliency = position_saliency(engine, batch, "patching")
    for row in range(batch.size):
        first = int((batch.clean_ids[row] != batch.cf_ids[row]).nonzero()[0])
        assert saliency[row, :first].abs().max() == 0 and saliency[row, first:].max() > 0
    padded = batch.attention_mask == 0
    assert (position_saliency(engine, batch)[padded] == 0).all()


def test_suggestions_fit_the_data_and_keep_the_roles_that_matter(zoo):
    loaded, engine = zoo
    task = load_task("ioi")
    examples = task.examples("validation", 32)
    suggestion = suggest_schema(engine, loaded.tokenizer, examples, list(task.card.schema_roles),
                                counterfactual="s2_io_flip")
    assert suggestion.report.ok and suggestion.examples == 32
    assert suggestion.schema.anchors[-1] == "END" and "S2" in suggestion.schema.anchors
    assert [r.saliency for r in suggestion.roles] == sorted((r.saliency for r in suggestion.roles), reverse=True)
    assert all(role in suggestion.left_out for role in task.card.schema_roles
               if role not in suggestion.schema.anchors)
    # overlapping roles are never both anchors (arithmetic's op2 and op2_last are the same tokens)
    arithmetic = load_task("arithmetic_addition")
    loose = suggest_schema(engine, loaded.tokenizer, arithmetic.examples("validation", 24),
                           list(arithmetic.card.schema_roles), counterfactual="random", threshold=0.0)
    assert not {"op2", "op2_last"} <= set(loose.schema.anchors) and loose.report.ok
    assert "overlaps" in loose.left_out.get("op2_last", loose.left_out.get("op2", ""))


def test_schema_commands(capsys):
    assert main(["schema", "check", "--task", "arithmetic_addition", "--examples", "20"]) == 0
    out = capsys.readouterr().out
    assert "the schema fits 60 of 60 prompts" in out and "operator" in out
    assert "position-aware graph on gpt2-tasks: 6 spans" in out
    assert main(["schema", "suggest", "--task", "mcqa", "--examples", "16"]) == 0
    out = capsys.readouterr().out
    proposed = yaml.safe_load(out.split("prompts):\n", 1)[1])
    assert SpanSchema.model_validate(proposed["span_schema"]).anchors[-1] == "END"
    assert main(["schema", "check", "--task", "nope"]) == 2
