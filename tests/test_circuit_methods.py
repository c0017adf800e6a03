"""Circuit methods against independent oracles on tiny random models (float64).

* EAP is the derivative of the patched metric: it matches central finite differences of the engine's
  fractional edge masks, and equals exact patching wherever the metric is linear in the patched input
  (edges into the logits of a model whose final norm is removed).
* Exact patching of single edges matches HF forwards with one destination input shifted by hooks.
* Integrated gradients converge to exact patching of what they integrate: EAP-IG-inputs summed over the
  input's outgoing edges -> ablating the input node; EAP-IG-activations summed over one layer's heads ->
  ablating that layer's heads.
* NAP at node level is the sum of the node's EAP edge scores (additive residual stream); IFR is a
  normalised distribution over sources; random scores are seeded.
"""

from __future__ import annotations

import pytest
import torch

from mibench.circuits.attribution import attribute, interpolation_points
from mibench.circuits.batches import CircuitBatch
from mibench.circuits.exact import exact_patching
from mibench.circuits.flow_routes import information_flow_routes
from mibench.circuits.method import AttributionContext, load_method
from mibench.circuits.metrics import logit_difference
from mibench.engine import CircuitMask, PatchingEngine
from mibench.engine.ablation import Ablation
from mibench.errors import MibenchError, UnknownNameError
from mibench.method_registry import list_method_cards
from mibench.models.adapter import adapter_for
from mibench.models.tiny import tiny_model
from tests import hf_oracles


def _setup(family: str = "gpt2", seed: int = 0, batch: int = 4, seq: int = 8, **overrides):
    model = tiny_model(family, n_layers=2, dtype=torch.float64, **overrides)
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(3, 101, (batch, seq), generator=gen)
    cf = clean.clone()
    cf[:, 1:3] = torch.randint(3, 101, (batch, 2), generator=gen)
    mask = torch.ones(batch, seq, dtype=torch.long)
    answers = torch.randint(3, 101, (batch,), generator=gen)
    cf_answers = torch.randint(3, 101, (batch,), generator=gen)
    data = CircuitBatch(clean, cf, mask, answers, cf_answers, [f"ex{i}" for i in range(batch)])
    return model, PatchingEngine(adapter_for(model)), data


def _mean_ld(engine, data, keep: torch.Tensor) -> float:
    ablation = Ablation.patching(engine, data.cf_ids, data.attention_mask)
    with torch.no_grad():
        out = engine.forward(data.clean_ids, data.attention_mask, mask=CircuitMask(keep), ablation=ablation,
                             logit_positions=data.last_positions)
    return float(logit_difference(out.logits, data.answers, data.cf_answers).mean())


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_eap_is_the_derivative_of_the_patched_metric(family):
    model, engine, data = _setup(family)
    scores = attribute(engine, [data]).edge_scores
    real = engine._real_edges.nonzero().tolist()
    gen = torch.Generator().manual_seed(1)
    picks = [real[i] for i in torch.randperm(len(real), generator=gen)[:12].tolist()]
    # Llama's rotary tables are computed in float32 by HF, which puts ~1e-7 noise on the metric across
    # code paths; eps = 1e-3 keeps that noise and the O(eps^2) truncation error both below 1e-3.
    eps = 1e-3
    for u, v in picks:
        keep_plus = torch.ones(engine.layout.n_forward, engine.layout.n_backward, dtype=torch.float64)
        keep_minus = keep_plus.clone()
        keep_plus[u, v] = 1 + eps
        keep_minus[u, v] = 1 - eps
        # score = dL/d(ablation strength) with L = -LD and strength = 1 - keep
        finite = (_mean_ld(engine, data, keep_plus) - _mean_ld(engine, data, keep_minus)) / (2 * eps)
        assert scores[u, v].item() == pytest.approx(finite, rel=2e-3, abs=1e-4), (u, v)


def test_eap_equals_exact_patching_where_the_metric_is_linear():
    model, engine, data = _setup("gpt2")
    model.transformer.ln_f = torch.nn.Identity()  # logits become linear in the final residual
    eap = attribute(engine, [data]).edge_scores
    exact = exact_patching(engine, [data]).edge_scores
    logits_col = engine.layout.logits_backward_index
    torch.testing.assert_close(eap[:, logits_col], exact[:, logits_col], rtol=1e-6, atol=1e-9)
    assert eap[:, logits_col].abs().max() > 1e-3  # not vacuous
    # elsewhere the metric is nonlinear, but the two still agree in sign on the large scores
    big = exact.abs() > exact.abs().max() * 0.3
    assert (torch.sign(eap[big]) == torch.sign(exact[big])).float().mean() > 0.7


def test_exact_patching_matches_hf_hook_oracle():
    model, engine, data = _setup("gpt2")
    exact = exact_patching(engine, [data], items_per_forward=7).edge_scores
    _, clean_nodes = hf_oracles.capture_nodes(model, data.clean_ids, data.attention_mask)
    _, cf_nodes = hf_oracles.capture_nodes(model, data.cf_ids, data.attention_mask)
    clean_logits = model(data.clean_ids, attention_mask=data.attention_mask).logits
    last = data.last_positions
    rows = torch.arange(data.size)

    def ld(logits):
        return logit_difference(logits[rows, last], data.answers, data.cf_answers).mean()

    layout = engine.layout
    cases = [("input", ("q", 1, 2), layout.qkv_backward_index(1, 2, "q")),
             ("a0.h1", ("k", 1, 0), layout.qkv_backward_index(1, 0, "k")),
             ("m0", ("v", 1, 3), layout.qkv_backward_index(1, 3, "v")),
             ("a1.h2", ("mlp", 1), layout.mlp_backward_index(1)),
             ("m1", ("logits",), layout.logits_backward_index)]
    names = layout.forward_names
    for source, destination, col in cases:
        delta = hf_oracles.edge_shift(model, clean_nodes, cf_nodes, source)
        patched = hf_oracles.forward_with_edge_delta(model, data.clean_ids, data.attention_mask, destination, delta)
        expected = float(ld(clean_logits.detach()) - ld(patched))
        assert exact[names.index(source), col].item() == pytest.approx(expected, rel=1e-6, abs=1e-9)


def test_eap_ig_inputs_converges_to_ablating_the_input_node():
    model, engine, data = _setup("gpt2")
    graph = attribute(engine, [data], interpolation="inputs", steps=200, rule="midpoint")
    integrated = graph.edge_scores[0].sum().item()  # every edge out of `input`
    node_exact = exact_patching(engine, [data], level="node").node_scores[0].item()
    assert integrated == pytest.approx(node_exact, rel=1e-3)
    one_step = attribute(engine, [data], interpolation="inputs", steps=1, rule="right")
    torch.testing.assert_close(one_step.edge_scores, attribute(engine, [data]).edge_scores)  # alpha=1 is EAP


def test_eap_ig_activations_converges_to_ablating_a_layer():
    model, engine, data = _setup("llama")
    layout = engine.layout
    graph = attribute(engine, [data], interpolation="activations", steps=100, rule="midpoint")
    start = layout.attn_forward_start(1)
    heads = slice(start, start + layout.n_heads)
    keep = torch.ones(layout.n_forward, layout.n_backward, dtype=torch.float64)
    keep[heads] = 0.0
    exact = _mean_ld(engine, data, torch.ones_like(keep)) - _mean_ld(engine, data, keep)
    assert graph.edge_scores[heads].sum().item() == pytest.approx(exact, rel=2e-3)


def test_pooled_activations_differ_from_own_group_credit():
    _, engine, data = _setup("gpt2")
    own = attribute(engine, [data], interpolation="activations", steps=2)
    pooled = attribute(engine, [data], interpolation="activations", steps=2, pooled=True)
    assert not torch.allclose(own.edge_scores, pooled.edge_scores)


@pytest.mark.parametrize("interpolation", ["none", "inputs", "activations"])
def test_node_scores_sum_edge_scores_and_neurons_sum_to_nodes(interpolation):
    """A source's output feeds each destination additively, so its node score is the sum of its edge scores,
    for every way of taking the gradient (activations: each source credited by its own group's runs)."""
    _, engine, data = _setup("gpt2")
    args = {"interpolation": interpolation, "steps": 3}
    edges = attribute(engine, [data], **args).edge_scores
    nodes = attribute(engine, [data], level="node", **args).node_scores
    neurons = attribute(engine, [data], level="neuron", **args).neuron_scores
    torch.testing.assert_close(nodes, edges.sum(1), rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(neurons.sum(1), nodes, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("interpolation,level", [("inputs", "edge"), ("activations", "edge"), ("inputs", "node"),
                                                 ("activations", "neuron")])
def test_stacked_interpolation_points_give_the_same_scores(interpolation, level):
    """Several interpolation points share one forward when they fit the engine's memory budget; one point
    per forward (a budget of one byte) must give the same scores."""
    model, stacked_engine, data = _setup("llama", seed=5)
    one_point_engine = PatchingEngine(adapter_for(model), max_delta_bytes=1)
    args = {"level": level, "interpolation": interpolation, "steps": 3, "rule": "midpoint"}
    stacked = attribute(stacked_engine, [data], **args)
    one_point = attribute(one_point_engine, [data], **args)
    name = {"edge": "edge_scores", "node": "node_scores", "neuron": "neuron_scores"}[level]
    torch.testing.assert_close(getattr(stacked, name), getattr(one_point, name), rtol=1e-6, atol=1e-9)
    assert getattr(stacked, name).abs().sum() > 0


def test_interpolation_points():
    assert interpolation_points(4, "left") == [0.0, 0.25, 0.5, 0.75]
    assert interpolation_points(4, "right") == [0.25, 0.5, 0.75, 1.0]
    assert interpolation_points(2, "midpoint") == [0.25, 0.75]


def test_ifr_scores_are_distributions_over_sources():
    _, engine, data = _setup("llama")
    scores = information_flow_routes(engine, [data]).edge_scores
    assert (scores >= 0).all()
    layout = engine.layout
    # each receiver's importances sum to 1 per position, hence after averaging too
    for col in (layout.qkv_backward_index(1, 0, "q"), layout.mlp_backward_index(0), layout.logits_backward_index):
        assert scores[:, col].sum().item() == pytest.approx(1.0, abs=1e-6)


def test_mean_and_zero_ablation_attribution_run_and_differ():
    _, engine, data = _setup("gpt2")
    method = load_method("eap")
    results = {}
    for ablation in ("patching", "mean", "zero"):
        results[ablation] = method.score(AttributionContext(engine, [data], ablation=ablation)).edge_scores
    assert not torch.allclose(results["patching"], results["mean"])
    assert not torch.allclose(results["mean"], results["zero"])


def test_every_builtin_method_loads_and_scores():
    _, engine, data = _setup("gpt2")
    cards = list_method_cards("circuit")
    assert {c.id for c in cards} >= {"eap", "eap-ig-inputs", "eap-ig-activations", "exact", "ifr", "nap",
                                     "nap-ig", "random"}
    for card in cards:
        if card.position_aware:  # needs a task's span schema: tests/test_peap.py runs it
            continue
        for level in card.levels:
            graph = load_method(card.id).score(AttributionContext(engine, [data], level=level, seed=3))
            assert graph.level == level
            scores = {"edge": graph.edge_scores, "node": graph.node_scores, "neuron": graph.neuron_scores}[level]
            assert torch.isfinite(scores).all() and scores.abs().sum() > 0, card.id


def test_random_scores_are_seeded():
    _, engine, data = _setup("gpt2")
    method = load_method("random")
    a = method.score(AttributionContext(engine, [data], seed=1)).edge_scores
    b = method.score(AttributionContext(engine, [data], seed=1)).edge_scores
    c = method.score(AttributionContext(engine, [data], seed=2)).edge_scores
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_unknown_method_and_argument_suggest_names():
    with pytest.raises(UnknownNameError, match="eap-ig-inputs"):
        load_method("eap-ig-input")
    with pytest.raises(UnknownNameError, match="ig_steps"):
        load_method("eap-ig-inputs", {"ig_step": "3"})
    with pytest.raises(MibenchError, match="not a valid int"):
        load_method("eap-ig-inputs", {"ig_steps": "many"})
    assert load_method("eap-ig-inputs", {"ig_steps": "7"}).arguments["ig_steps"] == 7


def test_methods_refuse_unsupported_levels():
    with pytest.raises(MibenchError, match="edge level"):
        load_method("eap").check("neuron", "patching")
