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


# ---------------------------------------------------------------------------------------- crossing edges
def _tiny_batch(seed=0, B=3, T=9):
    from mibench.circuits.batches import CircuitBatch

    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, 100, (B, T), generator=g)
    cf = torch.randint(1, 100, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    answers, cf_answers = torch.randint(1, 100, (2, B), generator=g)
    spans = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 4]).repeat(B, 1)  # 5 spans, the answer position alone
    return CircuitBatch(clean, cf, mask, answers, cf_answers, [str(i) for i in range(B)]), spans


def _exact_crossing(runner, batch, spans, layer, head, kv, s_kv, s_q, ablated):
    """The metric change when head ``head``'s queries at span ``s_q`` read ablated keys/values at ``s_kv``."""
    from mibench.circuits.metrics import logit_difference

    captured = {}

    def watch(at, q, k, v):
        if at == layer:
            captured["qkv"] = (q, k, v)

    def edit(at, z):
        if at != layer:
            return z
        q, k, v = captured["qkv"]
        select = (spans == s_kv)[:, None, :, None]
        k2, v2 = (torch.where(select, ablated[0], k), v) if kv == 0 else (k, torch.where(select, ablated[1], v))
        changed = runner.attention(layer, q, k2, v2, batch.attention_mask)
        out = z.clone()
        rows = spans == s_q
        out[:, head][rows] = changed[:, head][rows]
        return out

    def metric(**hooks):
        logits = runner.forward(batch.clean_ids, batch.attention_mask,
                                read_positions=batch.last_positions.unsqueeze(1), **hooks)[:, 0]
        return -logit_difference(logits, batch.answers, batch.cf_answers).sum()

    with torch.no_grad():
        return float(metric(head_edit=edit, watch_attention=watch) - metric())


@pytest.mark.parametrize("family, ablation", [("gpt2", "patching"), ("llama", "patching"), ("gpt2", "mean"),
                                              ("llama", "zero")])
def test_crossing_scores_are_exact_where_the_metric_is_linear_in_the_head_output(family, ablation):
    """Last layer, no final norm, its MLP silenced: the metric is linear in the head outputs, so the score
    equals exact patching (the attention pattern itself is recomputed exactly, not linearised)."""
    from mibench.circuits.crossing import crossing_attribution, mean_key_values, record_key_values
    from mibench.engine.residual import ResidualRunner
    from mibench.models.adapter import adapter_for
    from mibench.models.tiny import tiny_model

    model = tiny_model(family, dtype=torch.float64)
    with torch.no_grad():
        if family == "gpt2":
            model.transformer.ln_f = torch.nn.Identity()
            model.transformer.h[1].mlp.c_proj.weight.zero_()
        else:
            model.model.norm = torch.nn.Identity()
            model.model.layers[1].mlp.down_proj.weight.zero_()
    runner = ResidualRunner(adapter_for(model))
    batch, spans = _tiny_batch()
    reference = mean_key_values(runner, [(batch.cf_ids, batch.attention_mask)]) if ablation == "mean" else None
    scores = crossing_attribution(runner, batch, spans, 5, ablation=ablation, reference=reference)
    assert scores.shape == (2, 4, 2, 5, 5) and (scores.tril() == 0).all()
    if ablation == "patching":
        ablated = record_key_values(runner, batch.cf_ids, batch.attention_mask)[1]
    elif ablation == "mean":
        ablated = reference[1]
    else:
        k, v = record_key_values(runner, batch.clean_ids, batch.attention_mask)[1]
        ablated = (torch.zeros_like(k), torch.zeros_like(v))
    checked = 0
    for head in range(4):
        for kv in (0, 1):
            for s_kv, s_q in ((0, 1), (1, 2), (0, 4), (2, 4)):
                exact = _exact_crossing(runner, batch, spans, 1, head, kv, s_kv, s_q, ablated)
                assert scores[1, head, kv, s_kv, s_q] == pytest.approx(exact, rel=1e-6, abs=1e-9)
                checked += abs(exact) > 1e-6
    assert checked > 10  # the edges really matter


def test_crossing_scores_approximate_exact_patching_at_earlier_layers():
    from mibench.circuits.crossing import crossing_attribution, record_key_values
    from mibench.engine.residual import ResidualRunner
    from mibench.models.adapter import adapter_for
    from mibench.models.tiny import tiny_model

    model = tiny_model("gpt2", dtype=torch.float64, initializer_range=0.05)
    runner = ResidualRunner(adapter_for(model))
    batch, spans = _tiny_batch(1)
    scores = crossing_attribution(runner, batch, spans, 5)
    ablated = record_key_values(runner, batch.cf_ids, batch.attention_mask)[0]
    estimates, exacts = [], []
    for head in range(4):
        for kv in (0, 1):
            estimates.append(float(scores[0, head, kv, 0, 4]))
            exacts.append(_exact_crossing(runner, batch, spans, 0, head, kv, 0, 4, ablated))
    estimates, exacts = torch.tensor(estimates), torch.tensor(exacts)
    assert torch.corrcoef(torch.stack([estimates, exacts]))[0, 1] > 0.95
    assert (estimates - exacts).abs().max() < 0.2 * exacts.abs().max()


# ------------------------------------------------------------------------------------------- end to end
@pytest.mark.slow
@pytest.mark.parametrize("task", ["ioi", "mcqa", "arithmetic_addition"])
def test_peap_runs_from_the_cli_and_its_scores_rescore(tmp_path, task):
    from mibench.cli import main
    from mibench.graph.positional import positional_counts
    from mibench.results.record import read_record

    quick = ["--task", task, "--limit", "24", "--bootstrap", "20", "--batch-size", "12", "--quiet"]
    assert main(["evaluate", "--method", "peap", "--attribution-examples", "12", "--output-dir",
                 str(tmp_path / "runs"), *quick]) == 0
    (record_file,) = (tmp_path / "runs").rglob("record.json")
    record = read_record(record_file)
    spans = span_names(get_card(task).span_schema)
    layout = load_model("gpt2-tasks").adapter.layout
    assert record.method.position_aware and record.method.spans == spans
    assert record.model.n_edges == positional_counts(layout, len(spans))["edges"]
    assert record.metrics.signed.nominal_sizes[-1] == record.model.n_edges
    assert record.metrics.absolute.faithfulness[-1] == pytest.approx(1.0)
    assert record.metrics.baseline is not None and record.metrics.baseline.nominal_sizes == record.metrics.signed.nominal_sizes
    assert record.metrics.cmd == record.metrics.cmd and record.metrics.cpr == record.metrics.cpr  # not NaN
    scores = record_file.parent / "scores.json"
    assert main(["score", str(scores), "--output-dir", str(tmp_path / "again"), *quick]) == 0
    (again,) = (tmp_path / "again").rglob("record.json")
    rescored = read_record(again)
    assert rescored.method.position_aware and rescored.metrics.cpr == pytest.approx(record.metrics.cpr, abs=1e-9)
    assert rescored.metrics.cmd == pytest.approx(record.metrics.cmd, abs=1e-9)
