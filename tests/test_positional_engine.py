"""Position-aware circuit evaluation against independent oracles: HF logits, the counterfactual run, the
patching engine on position-invariant circuits, and single crossing edges patched by hand."""

from __future__ import annotations

import pytest
import torch

from mibench.engine import PatchingEngine
from mibench.engine.ablation import Ablation
from mibench.engine.masks import CircuitMask
from mibench.engine.positional import PositionalMask, PositionalPatcher
from mibench.engine.residual import ResidualRunner
from mibench.graph.positional import PositionalGraph
from mibench.models.adapter import adapter_for
from mibench.models.tiny import tiny_model

B, T = 3, 9
SPANS = torch.tensor([0, 0, 1, 1, 1, 2, 2, 3, 4])
N_SPANS = 5


def _setup(family, seed=0):
    model = tiny_model(family, dtype=torch.float64)
    engine = PatchingEngine(adapter_for(model))
    g = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, 100, (B, T), generator=g)
    cf = torch.randint(1, 100, (B, T), generator=g)
    mask = torch.ones(B, T, dtype=torch.long)
    spans = SPANS.repeat(B, 1)
    patcher = PositionalPatcher(engine)
    ablation = Ablation.patching(engine, cf, mask)
    kv = patcher.ablated_key_values(ablation, cf, mask)
    graph = PositionalGraph(engine.layout, [f"s{i}" for i in range(N_SPANS)])
    last = torch.full((B,), T - 1)
    return model, engine, patcher, ablation, kv, graph, clean, cf, mask, spans, last


@pytest.mark.parametrize("family", ["gpt2", "llama", "qwen2"])
def test_everything_kept_is_the_model_and_nothing_kept_is_the_counterfactual(family):
    model, engine, patcher, ablation, kv, graph, clean, cf, mask, spans, last = _setup(family)
    full = patcher.forward(clean, mask, spans, PositionalMask.full(graph), ablation, kv, last)
    empty = patcher.forward(clean, mask, spans, PositionalMask.empty(graph), ablation, kv, last)
    with torch.no_grad():
        hf_clean = model(input_ids=clean, attention_mask=mask).logits[:, -1]
        hf_cf = model(input_ids=cf, attention_mask=mask).logits[:, -1]
    # float64 weights; RoPE tables are float32 in HF and here alike, which bounds the agreement
    assert (full - hf_clean).abs().max() <= 1e-5
    assert (empty - hf_cf).abs().max() <= 1e-5


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_a_position_invariant_circuit_on_every_span_matches_the_patching_engine(family):
    model, engine, patcher, ablation, kv, graph, clean, cf, mask, spans, last = _setup(family, 1)
    g = torch.Generator().manual_seed(2)
    circuits = (torch.rand(3, engine.layout.n_forward, engine.layout.n_backward, generator=g) < 0.5).double()
    expected = engine.forward(clean, mask, mask=CircuitMask(circuits), ablation=ablation,
                              logit_positions=last).logits
    positional = PositionalMask(circuits.unsqueeze(1).expand(-1, N_SPANS, -1, -1).clone(),
                                torch.ones(3, *graph.crossing_scores.shape))
    ours = patcher.forward(clean, mask, spans, positional, ablation, kv, last)
    assert (ours - expected).abs().max() <= 1e-9
    ours_chunked = PositionalPatcher(engine, max_weight_elements=1).forward(clean, mask, spans, positional,
                                                                            ablation, kv, last)
    assert (ours_chunked - expected).abs().max() <= 1e-12


def test_an_edge_kept_at_one_span_only_changes_only_that_span():
    """Ablating every edge into one MLP at one span equals patching that MLP's input at those positions."""
    model, engine, patcher, ablation, kv, graph, clean, cf, mask, spans, last = _setup("gpt2", 3)
    layout = engine.layout
    col = layout.mlp_backward_index(1)
    edges = torch.ones(1, N_SPANS, layout.n_forward, layout.n_backward)
    edges[0, 2, :, col] = 0  # the layer-1 MLP reads its ablated input at span 2 only
    ours = patcher.forward(clean, mask, spans, PositionalMask(edges, torch.ones(1, *graph.crossing_scores.shape)),
                           ablation, kv, last)
    with torch.no_grad():
        # the counterfactual residual entering block 1's MLP: its residual after block 0 plus block 1's attention
        cf_hidden = model(input_ids=cf, attention_mask=mask, output_hidden_states=True).hidden_states[1]
        block = model.transformer.h[1]

        def patch_mlp_input(module, args):
            x = args[0].clone()
            attn = block.attn(block.ln_1(cf_hidden))[0]
            cf_mid = block.ln_2(cf_hidden + attn)
            at = spans == 2
            x[at] = cf_mid[at]
            return (x,)

        handle = block.mlp.register_forward_pre_hook(patch_mlp_input)
        try:
            expected = model(input_ids=clean, attention_mask=mask).logits[:, -1]
        finally:
            handle.remove()
    assert (ours - expected).abs().max() <= 1e-9


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_one_ablated_crossing_edge_is_exact_patching_of_those_keys(family):
    from tests.test_peap import _exact_crossing
    from mibench.circuits.batches import CircuitBatch
    from mibench.circuits.metrics import logit_difference

    model, engine, patcher, ablation, kv, graph, clean, cf, mask, spans, last = _setup(family, 4)
    runner = ResidualRunner(engine.adapter)
    g = torch.Generator().manual_seed(5)
    answers, cf_answers = torch.randint(1, 100, (2, B), generator=g)
    batch = CircuitBatch(clean, cf, mask, answers, cf_answers, [str(i) for i in range(B)])
    full = PositionalMask.full(graph)
    base = patcher.forward(clean, mask, spans, full, ablation, kv, last)
    for layer, head, which, s_kv, s_q in ((0, 1, 0, 0, 4), (1, 2, 1, 1, 4), (0, 0, 1, 2, 3), (1, 0, 0, 2, 4)):
        crossing = full.crossing.clone()
        crossing[0, layer, head, which, s_kv, s_q] = 0
        logits = patcher.forward(clean, mask, spans, PositionalMask(full.edges, crossing), ablation, kv, last)
        change = float((-logit_difference(logits, answers, cf_answers)).sum()
                       - (-logit_difference(base, answers, cf_answers)).sum())
        exact = _exact_crossing(runner, batch, spans, layer, head, which, s_kv, s_q, kv[layer])
        assert change == pytest.approx(exact, rel=1e-7, abs=1e-10)
        assert abs(exact) > 1e-6


def test_gemma2_is_refused_with_the_reason():
    engine = PatchingEngine(adapter_for(tiny_model("gemma2")))
    with pytest.raises(Exception, match="post-attention norm"):
        PositionalPatcher(engine)
