"""PEAP's non-crossing edges: per-span edge attribution against position-invariant EAP."""

from __future__ import annotations

import pytest
import torch

from mibench.circuits.attribution import attribute, attribute_by_span
from mibench.circuits.batches import build_batches
from mibench.data.registry import get_card, load_task
from mibench.data.span_schema import span_names, token_spans
from mibench.engine import PatchingEngine
from mibench.models.loading import load_model


@pytest.fixture(scope="module")
def ioi_setup():
    loaded = load_model("gpt2-tasks")
    engine = PatchingEngine(loaded.adapter)
    task = load_task("ioi")
    examples = task.examples("validation", 12)
    batches = build_batches(examples, loaded.tokenizer, "s2_io_flip", 6).batches
    schema = get_card("ioi").span_schema
    by_id = {e.id: e for e in examples}

    def span_ids_of(batch):
        ids = torch.full(batch.clean_ids.shape, -1, dtype=torch.long)
        for row, example_id in enumerate(batch.example_ids):
            example = by_id[example_id]
            for s, (start, end) in enumerate(token_spans(loaded.tokenizer, example.prompt, example.spans, schema)):
                ids[row, start:end] = s
        return ids

    return engine, batches, span_names(schema), span_ids_of


@pytest.mark.parametrize("interpolation", ["none", "inputs"])
def test_summing_spans_gives_eap_and_one_span_is_eap(ioi_setup, interpolation):
    engine, batches, spans, span_ids_of = ioi_setup
    eap = attribute(engine, batches, interpolation=interpolation, steps=3).edge_scores
    by_span = attribute_by_span(engine, batches, spans, span_ids_of, interpolation=interpolation, steps=3)
    assert torch.allclose(by_span.edge_scores.sum(0), eap, rtol=1e-4, atol=1e-6)
    one = attribute_by_span(engine, batches, ["all"], lambda b: torch.where(b.attention_mask.bool(), 0, -1),
                            interpolation=interpolation, steps=3)
    assert torch.allclose(one.edge_scores[0], eap, rtol=1e-5, atol=1e-7)
    assert (by_span.edge_scores[:-1, :, engine.layout.logits_backward_index] == 0).all()


def test_reducers_bound_each_other(ioi_setup):
    engine, batches, spans, span_ids_of = ioi_setup
    scores = {r: attribute_by_span(engine, batches, spans, span_ids_of, reducer=r).edge_scores
              for r in ("sum", "avg", "abs_sum", "max_abs")}
    assert (scores["abs_sum"] >= scores["sum"].abs() - 1e-6).all()  # no cancellation in abs_sum
    assert (scores["max_abs"] <= scores["abs_sum"] + 1e-6).all() and (scores["max_abs"] >= 0).all()
    single = torch.tensor([spans.index(n) for n in ("N1", "and", "N2", "S2", "END")])  # one-token spans
    assert torch.allclose(scores["avg"][single], scores["sum"][single], atol=1e-6)
    assert torch.allclose(scores["max_abs"][single], scores["abs_sum"][single], atol=1e-6)
