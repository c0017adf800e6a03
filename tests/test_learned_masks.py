"""Learned edge masks (UGS, Edge Pruning) on tiny float64 models, against independent oracles.

* The KL objective's gradient with respect to fractional, stacked keep-masks equals central finite
  differences of the engine's masked forward; Edge Pruning's whole objective (hard-concrete masks with fixed
  noise, Lagrangian) is differentiated exactly in ``log_alpha``.
* UGS's sampler has the reference code's gradient: ``samples x p (1 - p)`` for every edge with a fractional
  sample.
* Dangling-edge pruning equals a plain graph search.
"""

from __future__ import annotations

import itertools

import pytest
import torch

from mibench.circuits.learned_masks import (
    EdgeParameters,
    MaskStep,
    head_edge_totals,
    kl_from_full,
    prune_dangling,
)
from mibench.circuits.method import AttributionContext, load_method
from mibench.engine.ablation import Ablation
from mibench.graph.graph import real_edge_mask
from mibench.methods.edge_pruning.method import hard_concrete, keep_log_odds, sparsity_penalty
from mibench.methods.ugs.method import sample_uniform_masks
from tests.tiny_batches import tiny_engine_and_batch


def _setup(batch: int = 3, seq: int = 6):
    return tiny_engine_and_batch(batch, seq)


def _step(engine, data) -> MaskStep:
    ablation = Ablation.patching(engine, data.cf_ids, data.attention_mask)
    with torch.no_grad():
        logits = engine.forward(data.clean_ids, data.attention_mask, logit_positions=data.last_positions).logits
    return MaskStep(data, ablation, torch.log_softmax(logits, -1))


def test_kl_gradient_in_stacked_fractional_masks_equals_finite_differences():
    engine, data = _setup()
    step = _step(engine, data)
    layout = engine.layout
    gen = torch.Generator().manual_seed(1)
    keep = torch.rand(2, layout.n_forward, layout.n_backward, generator=gen, dtype=torch.float64)
    keep.requires_grad_(True)
    weights = torch.tensor([1.0, 0.5], dtype=torch.float64)  # the two circuits enter the loss differently

    def loss(k):
        return (kl_from_full(engine, step, k).view(2, data.size).double().mean(1) * weights).sum()

    with engine.frozen_parameters():
        loss(keep).backward()
    real = real_edge_mask(layout).nonzero().tolist()
    picks = [real[i] for i in torch.randperm(len(real), generator=gen)[:5].tolist()]
    eps = 1e-5
    for c, (u, v) in itertools.product((0, 1), picks):
        plus, minus = keep.detach().clone(), keep.detach().clone()
        plus[c, u, v] += eps
        minus[c, u, v] -= eps
        with torch.no_grad():
            finite = (loss(plus) - loss(minus)).item() / (2 * eps)
        assert keep.grad[c, u, v].item() == pytest.approx(finite, rel=1e-4, abs=1e-9), (c, u, v)
    assert float(keep.grad[:, ~real_edge_mask(layout)].abs().max()) == 0.0


def test_edge_pruning_objective_gradient_equals_finite_differences():
    engine, data = _setup()
    step = _step(engine, data)
    layout = engine.layout
    gen = torch.Generator().manual_seed(2)
    edges = EdgeParameters(layout, lambda shape: torch.randn(shape, generator=gen), "cpu", torch.float64)
    uniform = torch.rand(edges.values.shape, generator=gen, dtype=torch.float64).clamp(1e-3, 1 - 1e-3)
    lambdas = torch.tensor([0.3, 0.7], dtype=torch.float64)

    def loss(log_alpha):
        z = hard_concrete(log_alpha, uniform)
        return kl_from_full(engine, step, z).double().mean() + sparsity_penalty(z, edges, 0.5, lambdas)

    with engine.frozen_parameters():
        loss(edges.values).backward()
    z = hard_concrete(edges.values.detach(), uniform)
    interior = ((z > 1e-3) & (z < 1 - 1e-3) & edges.real).nonzero().tolist()
    assert len(interior) > 8
    eps = 1e-6
    for u, v in interior[:8]:
        plus, minus = edges.values.detach().clone(), edges.values.detach().clone()
        plus[u, v] += eps
        minus[u, v] -= eps
        with torch.no_grad():
            finite = (loss(plus) - loss(minus)).item() / (2 * eps)
        assert edges.values.grad[u, v].item() == pytest.approx(finite, rel=1e-4, abs=1e-9), (u, v)


def test_ugs_sampler_gradient_is_the_reference_estimator():
    gen = torch.Generator().manual_seed(3)
    theta = torch.randn(5, 7, generator=gen, dtype=torch.float64, requires_grad=True)
    uniform = torch.rand(12, 5, 7, generator=gen, dtype=torch.float64)
    samples = sample_uniform_masks(theta, uniform)
    p = torch.sigmoid(theta.detach())
    expected_value = (0.5 - (uniform - p) / (p * (1 - p))).clamp(0, 1)
    torch.testing.assert_close(samples.detach(), expected_value)
    samples.sum().backward()
    fractional = ((expected_value > 1e-3) & (expected_value < 1 - 1e-3)).any(0)
    expected_grad = torch.where(fractional, 12 * p * (1 - p), torch.zeros_like(p))
    torch.testing.assert_close(theta.grad, expected_grad)


def test_keep_log_odds_is_minus_log_probability_of_a_zero_mask():
    log_alpha = torch.linspace(-6, 30, 10, dtype=torch.float64)
    gen = torch.Generator().manual_seed(4)
    uniform = torch.rand(200000, 1, generator=gen, dtype=torch.float64)
    zero_share = (hard_concrete(log_alpha[:3], uniform) == 0).double().mean(0)
    torch.testing.assert_close(torch.exp(-keep_log_odds(log_alpha[:3])), zero_share, atol=3e-3, rtol=0)
    assert bool((keep_log_odds(log_alpha).diff() > 0).all())  # no saturation into ties


def _reachable(kept: torch.Tensor, layout) -> torch.Tensor:
    """Plain search: the edges on some input -> logits path of kept edges."""
    owner = layout.backward_owner
    edges = [(u, v) for u, v in kept.nonzero().tolist()]
    fed, changed = {0}, True
    while changed:
        changed = False
        for u, v in edges:
            if u in fed and owner[v] not in fed:
                fed.add(owner[v])
                changed = True
    useful, changed = {layout.n_forward}, True
    while changed:
        changed = False
        for u, v in edges:
            if owner[v] in useful and u not in useful:
                useful.add(u)
                changed = True
    out = torch.zeros_like(kept)
    for u, v in edges:
        out[u, v] = u in fed and owner[v] in useful
    return out


def test_prune_dangling_equals_graph_search():
    engine, _ = _setup()
    layout = engine.layout
    gen = torch.Generator().manual_seed(5)
    kept = (torch.rand(6, layout.n_forward, layout.n_backward, generator=gen) < 0.25) & real_edge_mask(layout)
    pruned = prune_dangling(kept, layout)
    for c in range(kept.shape[0]):
        assert torch.equal(pruned[c], _reachable(kept[c], layout)), c


def test_head_edge_totals_sum_in_and_out_edges():
    engine, _ = _setup()
    layout = engine.layout
    values = torch.rand(layout.n_forward, layout.n_backward, dtype=torch.float64) * real_edge_mask(layout)
    totals = head_edge_totals(values, layout)
    head = layout.head_forward_index(1, 1)
    cols = [layout.qkv_backward_index(1, 1, kind) for kind in "qkv"]
    expected = values[head].sum() + values[:, cols].sum()
    assert totals[layout.n_heads + 1].item() == pytest.approx(expected.item())


@pytest.mark.parametrize("name,arguments", [
    ("ugs", {"steps": 3, "samples": 2, "prompts_per_step": 2}),
    ("edge-pruning", {"steps": 3, "sparsity_warmup": 2, "lr_warmup": 1, "prompts_per_step": 2}),
])
def test_methods_return_positive_edge_scores(name, arguments):
    engine, data = _setup()
    method = load_method(name, arguments)
    graph = method.score(AttributionContext(engine, [data], ablation="patching", seed=0))
    real = graph.real_edge_mask
    assert bool((graph.edge_scores[real] > 0).all()) and bool((graph.edge_scores[~real] == 0).all())
    if name == "ugs":
        assert bool((graph.edge_scores[real] < 1).all())
