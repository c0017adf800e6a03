"""The patching engine against independent oracles, on tiny random models of every family.

Oracles: the plain HF forward (all edges kept), the HF counterfactual forward (no edges kept), HF forwards
with node outputs replaced by hooks (node masks, zero and mean ablation), HF forwards with one destination
input shifted by hooks (single-edge ablations), running each circuit alone (stacked masks), and central
finite differences (mask gradients).
"""

from __future__ import annotations

from functools import lru_cache

import pytest
import torch

from mibench.engine import CircuitMask, PatchingEngine
from mibench.engine.ablation import Ablation, mean_ablation, patching_with_clean_run
from mibench.models.adapter import adapter_for
from mibench.models.tiny import TINY_FAMILIES, tiny_model
from tests import hf_oracles

ATOL = 1e-5
GQA_FAMILIES = ("llama", "qwen2", "gemma2")


@lru_cache(maxsize=None)
def _model(family: str, dtype: torch.dtype = torch.float32, **overrides):
    return tiny_model(family, n_layers=3, dtype=dtype, **overrides)


def _engine(family: str, **kwargs) -> PatchingEngine:
    return PatchingEngine(adapter_for(_model(family)), **kwargs)


def _batch(seed: int = 0, batch: int = 3, seq: int = 9):
    """Clean and counterfactual ids of equal length; row 1 is right-padded."""
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(1, 101, (batch, seq), generator=gen)
    cf = torch.randint(1, 101, (batch, seq), generator=gen)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, seq - 2 :] = 0
    return clean, cf, mask


def _real(x: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    return x[attention_mask.bool()]


def _max_diff(a, b, attention_mask) -> float:
    return (_real(a, attention_mask) - _real(b, attention_mask)).abs().max().item()


def _random_mask(layout, seed: int, density: float = 0.5) -> CircuitMask:
    gen = torch.Generator().manual_seed(seed)
    return CircuitMask((torch.rand(layout.n_forward, layout.n_backward, generator=gen) < density).float())


# ------------------------------------------------------------- all / none
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_all_edges_kept_reproduces_hf_logits(family):
    engine = _engine(family)
    clean, cf, am = _batch()
    reference = _model(family)(clean, attention_mask=am).logits.detach()
    with torch.no_grad():
        plain = engine.forward(clean, am).logits
        ablation = Ablation.patching(engine, cf, am)
        kept = engine.forward(clean, am, mask=CircuitMask.full(engine.layout), ablation=ablation).logits
    assert _max_diff(plain, reference, am) <= ATOL
    assert _max_diff(kept, reference, am) <= ATOL


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_no_edges_kept_reproduces_counterfactual_logits(family):
    engine = _engine(family)
    clean, cf, am = _batch()
    reference_cf = _model(family)(cf, attention_mask=am).logits.detach()
    reference_clean = _model(family)(clean, attention_mask=am).logits.detach()
    with torch.no_grad():
        ablation = Ablation.patching(engine, cf, am)
        empty = engine.forward(clean, am, mask=CircuitMask.empty(engine.layout), ablation=ablation).logits
    assert _max_diff(empty, reference_cf, am) <= ATOL
    assert _max_diff(reference_clean, reference_cf, am) > 1e-2  # the check above is not vacuous


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_clean_and_counterfactual_recorded_in_one_forward_match_hf(family):
    """The stacked clean + counterfactual run gives each run's own HF logits and recorded sources."""
    engine = _engine(family)
    clean, cf, am = _batch()
    with torch.no_grad():
        ablation, clean_out, cf_out = patching_with_clean_run(engine, clean, cf, am, logit_positions="all")
        separate = Ablation.patching(engine, cf, am)
        clean_sources = engine.forward(clean, am, record=True).sources
    for ours, reference in ((clean_out.logits, _model(family)(clean, attention_mask=am).logits),
                            (cf_out.logits, _model(family)(cf, attention_mask=am).logits)):
        assert _max_diff(ours, reference.detach(), am) <= ATOL
    torch.testing.assert_close(ablation.sources.stacked(), separate.sources.stacked(), atol=ATOL, rtol=0)
    torch.testing.assert_close(clean_out.sources.stacked(), clean_sources.stacked(), atol=ATOL, rtol=0)
    assert ablation.kind == "patching" and torch.equal(ablation.attention_mask, am)


# -------------------------------------------------------------- node level
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_node_mask_matches_hf_node_patching(family):
    engine = _engine(family)
    model = _model(family)
    clean, cf, am = _batch(seed=1)
    _, cf_nodes = hf_oracles.capture_nodes(model, cf, am)
    gen = torch.Generator().manual_seed(3)
    keep = torch.rand(engine.layout.n_forward, generator=gen) < 0.5
    names = engine.layout.forward_names
    oracle = hf_oracles.forward_with_node_values(
        model, clean, am, {names[i]: cf_nodes[names[i]] for i in range(len(names)) if not keep[i]})
    with torch.no_grad():
        ablation = Ablation.patching(engine, cf, am)
        out = engine.forward(clean, am, mask=CircuitMask.from_nodes(engine.layout, keep), ablation=ablation).logits
    assert _max_diff(out, oracle, am) <= ATOL


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_parameter_gradients_through_a_masked_forward_match_hf(family):
    """Training through the engine (planted circuits): a masked forward with gradients enabled gives the same
    parameter gradients as an HF forward with the ablated nodes' outputs replaced by hooks. Evaluation's
    in-place buffers and skipped nodes must not be used then, even when the mask itself needs no gradient."""
    engine = _engine(family)
    model = _model(family)
    clean, cf, am = _batch(seed=4)
    _, cf_nodes = hf_oracles.capture_nodes(model, cf, am)
    names = engine.layout.forward_names
    keep = torch.ones(engine.layout.n_forward, dtype=torch.bool)
    keep[torch.randperm(len(names) - 1, generator=torch.Generator().manual_seed(5))[: len(names) // 2] + 1] = False
    weights = torch.randn(clean.shape[-1], generator=torch.Generator().manual_seed(6))

    def gradients(logits) -> list[torch.Tensor]:
        model.zero_grad(set_to_none=True)
        (logits[am.bool()].tanh().sum(-1) * weights.expand_as(am)[am.bool()]).sum().backward()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad.clone() for p in model.parameters()]
        model.zero_grad(set_to_none=True)
        return grads

    oracle = gradients(hf_oracles.forward_with_node_values(
        model, clean, am, {names[i]: cf_nodes[names[i]] for i in range(len(names)) if not keep[i]}, grad=True))
    ablation = Ablation.patching(engine, cf, am)
    mask = CircuitMask.from_nodes(engine.layout, keep)
    got = gradients(engine.forward(clean, am, mask=mask, ablation=ablation).logits)
    scale = max(float(g.abs().max()) for g in oracle)
    assert scale > 0
    assert max(float((a - b).abs().max()) for a, b in zip(got, oracle)) <= 1e-4 * scale


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_zero_ablation_of_every_node_matches_hf(family):
    engine = _engine(family)
    model = _model(family)
    clean, _, am = _batch(seed=2)
    _, nodes = hf_oracles.capture_nodes(model, clean, am)
    oracle = hf_oracles.forward_with_node_values(model, clean, am, {n: torch.zeros_like(v) for n, v in nodes.items()})
    with torch.no_grad():
        out = engine.forward(clean, am, mask=CircuitMask.empty(engine.layout), ablation=Ablation.zero()).logits
    assert _max_diff(out, oracle, am) <= ATOL


@pytest.mark.parametrize("family", ["gpt2", "gemma2"])
def test_mean_ablation_means_and_forward_match_hf(family):
    engine = _engine(family)
    model = _model(family)
    clean, cf, am = _batch(seed=4)
    reference = [(cf, am), (clean, am)]
    ablation = mean_ablation(engine, reference)
    # Means of the HF-captured node outputs over real tokens.
    names = engine.layout.forward_names
    total = {n: 0.0 for n in names}
    for ids, mask in reference:
        _, nodes = hf_oracles.capture_nodes(model, ids, mask)
        for n in names:
            total[n] = total[n] + (nodes[n] * mask[..., None]).sum((0, 1))
    count = sum(int(m.sum()) for _, m in reference)
    means = {n: total[n] / count for n in names}
    stacked = ablation.sources.stacked()  # [1, n_forward, 1, d]
    for i, n in enumerate(names):
        torch.testing.assert_close(stacked[0, i, 0], means[n], atol=1e-5, rtol=1e-5)
    oracle = hf_oracles.forward_with_node_values(
        model, clean, am, {n: means[n].expand(*clean.shape, -1) for n in names})
    with torch.no_grad():
        out = engine.forward(clean, am, mask=CircuitMask.empty(engine.layout), ablation=ablation).logits
    assert _max_diff(out, oracle, am) <= ATOL


# -------------------------------------------------------------- edge level
def _edge_cases(family: str) -> list[tuple[str, str]]:
    cases = [("input", "m0"), ("a0.h1", "a1.h2<q>"), ("m0", "logits"), ("a1.h3", "m1"), ("input", "a2.h0<q>"),
             ("a2.h1", "logits")]
    if family == "gpt2":
        cases += [("m0", "a1.h1<k>"), ("a0.h0", "a2.h3<v>")]
    return cases


def _destination(name: str) -> tuple:
    if name == "logits":
        return ("logits",)
    if name.startswith("m"):
        return ("mlp", int(name[1:]))
    layer, rest = name[1:].split(".h")
    head, qkv = rest[:-3], rest[-2]
    return (qkv, int(layer), int(head))


def _edge_mask(layout, source: str, destination: str) -> CircuitMask:
    mask = CircuitMask.full(layout)
    mask.edges[layout.forward_names.index(source), layout.backward_names.index(destination)] = 0
    return mask


#: One K/V head per query head, so that a single k/v edge has an HF oracle (a grouped K/V head is shared).
MHA_VARIANTS = tuple(f"{family}-mha" for family in GQA_FAMILIES)


@pytest.mark.parametrize("family", TINY_FAMILIES + MHA_VARIANTS)
def test_single_edge_ablation_matches_hf_destination_shift(family):
    overrides = {"num_key_value_heads": 4} if family.endswith("-mha") else {}
    base_family = family.split("-")[0]
    model = _model(base_family, **overrides)
    engine = PatchingEngine(adapter_for(model))
    clean, cf, am = _batch(seed=5)
    clean_logits, clean_nodes = hf_oracles.capture_nodes(model, clean, am)
    _, cf_nodes = hf_oracles.capture_nodes(model, cf, am)
    cases = _edge_cases(base_family)
    if family.endswith("-mha"):
        cases = [("m0", "a1.h1<k>"), ("a0.h0", "a2.h3<v>"), ("input", "a1.h2<v>"), ("a1.h0", "a2.h2<k>")]
    ablation = Ablation.patching(engine, cf, am)
    for source, destination in cases:
        delta = hf_oracles.edge_shift(model, clean_nodes, cf_nodes, source)
        oracle = hf_oracles.forward_with_edge_delta(model, clean, am, _destination(destination), delta)
        with torch.no_grad():
            out = engine.forward(clean, am, mask=_edge_mask(engine.layout, source, destination),
                                 ablation=ablation).logits
        assert _max_diff(oracle, clean_logits, am) > 1e-4, (source, destination)  # the edge matters
        assert _max_diff(out, oracle, am) <= ATOL, (source, destination)


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_single_ablated_edge_changes_only_downstream(family):
    engine = _engine(family)
    layout = engine.layout
    clean, cf, am = _batch(seed=6)
    with torch.no_grad():
        ablation = Ablation.patching(engine, cf, am)
        base = engine.forward(clean, am, record=True).sources.stacked()
        mask = _edge_mask(layout, "a0.h1", "a1.h2<q>")
        patched = engine.forward(clean, am, mask=mask, ablation=ablation, record=True).sources.stacked()
    changed = (patched - base).abs().amax(dim=(0, 2, 3)) > 1e-6
    names = layout.forward_names
    # Everything up to and including layer 1's other heads is untouched; a1.h2 changes; so does what
    # reads it later (m1 and layer 2).
    untouched = [n for n in names if n in ("input", "m0", "a1.h0", "a1.h1", "a1.h3") or n.startswith("a0.")]
    assert not changed[[names.index(n) for n in untouched]].any()
    assert changed[names.index("a1.h2")]
    assert changed[names.index("m1")]


# ------------------------------------------------------- batched circuits
@pytest.mark.parametrize("family,max_delta_bytes", [(f, None) for f in TINY_FAMILIES] + [("llama", 1)])
def test_stacked_circuits_equal_each_circuit_alone(family, max_delta_bytes):
    """Also with a memory budget so small that every circuit gets its own forward (chunking)."""
    engine = _engine(family, max_delta_bytes=max_delta_bytes)
    layout = engine.layout
    clean, cf, am = _batch(seed=7)
    masks = [_random_mask(layout, seed, density) for seed, density in ((0, 0.05), (1, 0.5), (2, 0.95))]
    masks.append(CircuitMask.full(layout))
    masks.append(CircuitMask.empty(layout))
    with torch.no_grad():
        ablation = Ablation.patching(engine, cf, am)
        stacked = engine.forward(clean, am, mask=CircuitMask.stack(masks), ablation=ablation,
                                 logit_positions="last", record=True)
        together = stacked.logits
        alone = [engine.forward(clean, am, mask=m, ablation=ablation, logit_positions="last").logits for m in masks]
    assert together.shape[0] == len(masks) * clean.shape[0]
    assert stacked.sources.groups[0].shape[0] == len(masks) * clean.shape[0]
    torch.testing.assert_close(together, torch.cat(alone), atol=ATOL, rtol=0)
    assert (alone[0] - alone[2]).abs().max() > 1e-3  # the circuits really differ


@pytest.mark.parametrize("family", ["gpt2", "llama"])
def test_stacked_neuron_circuits_equal_each_alone(family):
    engine = _engine(family)
    layout = engine.layout
    clean, cf, am = _batch(seed=8)
    gen = torch.Generator().manual_seed(0)
    masks = [CircuitMask(_random_mask(layout, s).edges,
                         (torch.rand(layout.n_forward, layout.d_model, generator=gen) < 0.5).float())
             for s in range(3)]
    with torch.no_grad():
        ablation = Ablation.patching(engine, cf, am)
        together = engine.forward(clean, am, mask=CircuitMask.stack(masks), ablation=ablation).logits
        alone = torch.cat([engine.forward(clean, am, mask=m, ablation=ablation).logits for m in masks])
    torch.testing.assert_close(_real(together, am.repeat(3, 1)), _real(alone, am.repeat(3, 1)), atol=ATOL, rtol=0)


# ------------------------------------------------------------ neuron level
@pytest.mark.parametrize("family", ["gpt2", "gemma2"])
def test_neuron_masks(family):
    engine = _engine(family)
    model = _model(family)
    layout = engine.layout
    clean, cf, am = _batch(seed=9)
    clean_logits, clean_nodes = hf_oracles.capture_nodes(model, clean, am)
    _, cf_nodes = hf_oracles.capture_nodes(model, cf, am)
    edges = _random_mask(layout, 4).edges
    with torch.no_grad():
        ablation = Ablation.patching(engine, cf, am)
        edges_only = engine.forward(clean, am, mask=CircuitMask(edges), ablation=ablation).logits
        ones = engine.forward(clean, am, mask=CircuitMask(edges, torch.ones(layout.n_forward, layout.d_model)),
                              ablation=ablation).logits
    assert _max_diff(edges_only, ones, am) <= ATOL

    # Dropping some dimensions of m0 on all its edges == replacing those dimensions of m0's output.
    dims = torch.rand(layout.d_model, generator=torch.Generator().manual_seed(1)) < 0.5
    neurons = torch.ones(layout.n_forward, layout.d_model)
    neurons[layout.forward_names.index("m0")] = (~dims).float()
    value = torch.where(dims, cf_nodes["m0"], clean_nodes["m0"])
    oracle = hf_oracles.forward_with_node_values(model, clean, am, {"m0": value})
    with torch.no_grad():
        out = engine.forward(clean, am, mask=CircuitMask(CircuitMask.full(layout).edges, neurons),
                             ablation=ablation).logits
    assert _max_diff(out, oracle, am) <= ATOL
    assert _max_diff(out, clean_logits, am) > 1e-4


# --------------------------------------------------------- grouped K / V
@pytest.mark.parametrize("family", GQA_FAMILIES)
def test_grouped_kv_optimisation_gives_identical_results(family, monkeypatch):
    model = _model(family)
    grouped, ungrouped = PatchingEngine(adapter_for(model)), PatchingEngine(adapter_for(model), group_kv=False)
    layout = grouped.layout
    clean, cf, am = _batch(seed=10)
    keep = torch.rand(layout.n_forward, generator=torch.Generator().manual_seed(2)) < 0.6
    for layer in range(layout.n_layers):  # every head stays (a dropped head is not computed at all)
        start = layout.attn_forward_start(layer)
        keep[start : start + layout.n_heads] = True
    node_mask = CircuitMask.from_nodes(layout, keep)  # every head of a group reads the same input
    edge_mask = _random_mask(layout, 5)  # k/v inputs differ within groups

    import mibench.engine.engine as engine_module

    seen_kv_rows: list[int] = []
    original = engine_module._project_head_major

    def spy(normed, weight, bias):
        if weight.shape[0] == model.config.num_key_value_heads:
            seen_kv_rows.append(normed.shape[0])  # inputs are head-major: [heads, R, T, d]
        return original(normed, weight, bias)

    monkeypatch.setattr(engine_module, "_project_head_major", spy)
    with torch.no_grad():
        ablation = Ablation.patching(grouped, cf, am)
        for mask in (node_mask, edge_mask):
            seen_kv_rows.clear()
            a = grouped.forward(clean, am, mask=mask, ablation=ablation).logits
            rows_grouped = list(seen_kv_rows)
            seen_kv_rows.clear()
            b = ungrouped.forward(clean, am, mask=mask, ablation=ablation).logits
            assert _max_diff(a, b, am) <= ATOL
            assert set(seen_kv_rows) == {model.config.num_attention_heads}
            if mask is node_mask:
                assert set(rows_grouped) == {model.config.num_key_value_heads}  # the optimisation ran
    # No weight was ever repeated per query head.
    weights = adapter_for(model).attention_weights(0)
    assert weights.wk.shape[0] == model.config.num_key_value_heads
    assert weights.wk.data_ptr() == model.model.layers[0].self_attn.k_proj.weight.data_ptr()


# ------------------------------------------------------------- gradients
@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_unpatched_receiver_gradients_equal_the_per_head_copies(family):
    """Attribution's unpatched forward normalises each layer's residual once and takes per-head receiver
    gradients as batched norm VJPs. They must equal the general path, where every head reads its own
    normalised copy (forced here by a differentiable all-ones mask)."""
    model = tiny_model(family, n_layers=2, dtype=torch.float64)
    engine = PatchingEngine(adapter_for(model))
    clean, cf, am = _batch(seed=12)
    ablation = Ablation.patching(engine, cf, am)
    target = clean[:, 0]

    def receiver_grads(mask) -> dict:
        grads: dict = {}
        with engine.frozen_parameters():
            def edit(group, output):
                return output.detach().requires_grad_(True) if group.kind == "input" else output
            out = engine.forward(clean, am, mask=mask, ablation=None if mask is None else ablation,
                                 logit_positions="last", edit_sources=edit,
                                 on_receiver_grad=lambda kind, layer, g: grads.__setitem__((kind, layer), g))
            out.logits.log_softmax(-1).gather(1, target[:, None]).sum().backward()
        return grads

    shared = receiver_grads(None)
    per_head = receiver_grads(CircuitMask.full(engine.layout, requires_grad=True, dtype=torch.float64))
    n_layers = engine.layout.n_layers
    assert shared.keys() == per_head.keys() and len(shared) == 3 * n_layers + n_layers + 1  # q/k/v, MLPs, logits
    # HF's RMSNorm (Llama, Qwen2, Gemma-2) computes in float32 even in a float64 model: the two paths then
    # agree to float32 rounding only.
    atol, rtol = (1e-10, 1e-8) if family == "gpt2" else (1e-7, 1e-5)  # gradients here are ~0.1
    for key in shared:
        torch.testing.assert_close(shared[key], per_head[key], atol=atol, rtol=rtol, msg=str(key))


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_mask_gradient_is_the_edge_derivative(family):
    """d metric / d keep[u, v] by autograd equals central finite differences, and equals the
    contraction of (a~_u - a_u) with the receiver gradient exposed through ``on_receiver_grad``."""
    model = tiny_model(family, n_layers=2, dtype=torch.float64)
    engine = PatchingEngine(adapter_for(model))
    layout = engine.layout
    clean, cf, am = _batch(seed=11)
    ablation = Ablation.patching(engine, cf, am)
    target = clean[:, 0]

    def metric(mask, hook=None, record=False):
        out = engine.forward(clean, am, mask=mask, ablation=ablation, logit_positions="last",
                             on_receiver_grad=hook, record=record)
        return out.logits.log_softmax(-1).gather(1, target[:, None]).sum(), out

    mask = CircuitMask.full(layout, requires_grad=True, dtype=torch.float64)
    receiver_grads: dict = {}
    value, out = metric(mask, hook=lambda kind, layer, g: receiver_grads.__setitem__((kind, layer), g),
                        record=True)
    value.backward()
    grad = mask.edges.grad

    names_f, names_b = layout.forward_names, layout.backward_names
    # GPT-2's LayerNorm runs in float64 here, so a tiny step is exact. HF's RMSNorm (Llama, Qwen2, Gemma-2)
    # casts to float32 internally, so its finite differences need a larger step and tolerance.
    eps, rel = (1e-6, 1e-5) if family == "gpt2" else (1e-2, 5e-3)
    for source, destination in [("input", "m0"), ("a0.h1", "a1.h2<q>"), ("a0.h3", "a1.h0<k>"),
                                ("m0", "a1.h3<v>"), ("a1.h2", "logits"), ("input", "logits")]:
        u, v = names_f.index(source), names_b.index(destination)
        values = []
        for sign in (1, -1):
            shifted = CircuitMask.full(layout, dtype=torch.float64)
            shifted.edges[u, v] = 1 + sign * eps
            with torch.no_grad():
                values.append(metric(shifted)[0].item())
        finite_difference = (values[0] - values[1]) / (2 * eps)
        assert grad[u, v].item() == pytest.approx(finite_difference, rel=rel, abs=1e-8), (source, destination)

    # Contraction with receiver gradients: EAP's formula, without the mask trick.
    with torch.no_grad():
        clean_sources = out.sources.stacked()  # [B, n_forward, T, d]
        deltas = ablation.sources.stacked() - clean_sources
        if family == "gemma2":
            # Heads sit inside the post-attention RMSNorm: what reaches a destination is that norm's
            # Jacobian (at the layer's clean sum of heads) applied to the head's delta.
            for layer in range(layout.n_layers):
                heads = slice(layout.attn_forward_start(layer), layout.mlp_forward_index(layer))
                attn_sum = clean_sources[:, heads].sum(1)
                post = model.model.layers[layer].post_attention_layernorm
                for u in range(heads.start, heads.stop):
                    deltas[:, u] = torch.func.jvp(post, (attn_sum,), (deltas[:, u],))[1]
        rows = torch.arange(clean.shape[0])
        last = am.sum(-1) - 1
        for (kind, layer), g in receiver_grads.items():
            if kind == "logits":
                prev, col = layout.n_forward, [layout.logits_backward_index]
                contraction = torch.einsum("bud,bd->u", deltas[rows, :prev, last], g)[:, None]
            elif kind == "mlp":
                prev, col = layout.mlp_prev_index(layer), [layout.mlp_backward_index(layer)]
                contraction = torch.einsum("butd,btd->u", deltas[:, :prev], g)[:, None]
            else:
                prev = layout.attn_prev_index(layer)
                col = [layout.qkv_backward_index(layer, h, kind) for h in range(layout.n_heads)]
                contraction = torch.einsum("butd,bhtd->uh", deltas[:, :prev], g)
            # keep enters as (1 - keep) * D, so d/d keep = -D . g
            tolerance = {"atol": 1e-6, "rtol": 1e-5} if family == "gemma2" else {"atol": 1e-9, "rtol": 1e-7}
            torch.testing.assert_close(grad[:prev, col], -contraction, **tolerance)
    assert len(receiver_grads) == 3 * layout.n_layers + layout.n_layers + 1


# ---------------------------------------------------------------- options
def test_logit_positions_and_input_validation():
    engine = _engine("gpt2")
    clean, cf, am = _batch(seed=12)
    with torch.no_grad():
        full = engine.forward(clean, am).logits
        last = engine.forward(clean, am, logit_positions="last").logits
        chosen = engine.forward(clean, am, logit_positions=torch.tensor([0, 3, 8])).logits
        nothing = engine.forward(clean, am, logit_positions="none").logits
    lengths = am.sum(-1) - 1
    torch.testing.assert_close(last, full[torch.arange(3), lengths])
    torch.testing.assert_close(chosen, full[torch.arange(3), torch.tensor([0, 3, 8])])
    assert nothing is None
    with pytest.raises(ValueError, match="needs an ablation"):
        engine.forward(clean, am, mask=CircuitMask.empty(engine.layout))
    with pytest.raises(ValueError, match="shape"):
        engine.forward(clean, am, mask=CircuitMask(torch.ones(3, 3)), ablation=Ablation.zero())


# ------------------------------------------------------------------ graphs
def test_circuit_from_graph_matches_the_equivalent_mask():
    from mibench.graph import Graph

    engine = _engine("llama")
    layout = engine.layout
    clean, cf, am = _batch(seed=13)
    graph = Graph(layout)
    chosen = _random_mask(layout, 6, density=0.3).edges.bool()
    graph.edges_in_graph[:] = chosen
    graph.edges_in_graph[~graph.real_edge_mask] = True  # non-edges must be ignored
    with torch.no_grad():
        ablation = Ablation.patching(engine, cf, am)
        from_graph = engine.forward(clean, am, mask=CircuitMask.from_graph(graph), ablation=ablation).logits
        direct = engine.forward(clean, am, mask=CircuitMask(chosen.float()), ablation=ablation).logits
    assert _max_diff(from_graph, direct, am) <= ATOL


# -------------------------------------------------------- sliding windows
@pytest.mark.parametrize("family,overrides", [
    ("qwen2", {"use_sliding_window": True, "sliding_window": 3, "max_window_layers": 1}),
    ("gemma2", {"sliding_window": 3}),
])
def test_sliding_window_layers_match_hf(family, overrides):
    model = tiny_model(family, n_layers=3, **overrides)
    assert "sliding_attention" in model.config.layer_types
    engine = PatchingEngine(adapter_for(model))
    clean, cf, am = _batch(seed=14, seq=10)
    with torch.no_grad():
        reference = model(clean, attention_mask=am).logits
        reference_cf = model(cf, attention_mask=am).logits
        ablation = Ablation.patching(engine, cf, am)
        kept = engine.forward(clean, am, mask=CircuitMask.full(engine.layout), ablation=ablation).logits
        empty = engine.forward(clean, am, mask=CircuitMask.empty(engine.layout), ablation=ablation).logits
        no_window = tiny_model(family, n_layers=3, **{**overrides, "sliding_window": 64})(clean, attention_mask=am).logits
    assert _max_diff(kept, reference, am) <= ATOL
    assert _max_diff(empty, reference_cf, am) <= ATOL
    assert _max_diff(no_window, reference, am) > 1e-3  # the window really changes the model


# ------------------------------------------------- gradients at any mask
def test_mask_gradient_away_from_the_full_circuit():
    """Gradients at a fractional mask (mask learning) go through the differentiable delta path."""
    model = tiny_model("gpt2", n_layers=2, dtype=torch.float64)
    engine = PatchingEngine(adapter_for(model))
    layout = engine.layout
    clean, cf, am = _batch(seed=15)
    ablation = Ablation.patching(engine, cf, am)
    start = torch.rand(layout.n_forward, layout.n_backward, generator=torch.Generator().manual_seed(0),
                       dtype=torch.float64)

    def metric(edges):
        out = engine.forward(clean, am, mask=CircuitMask(edges), ablation=ablation, logit_positions="last")
        return out.logits[:, 3].sum()

    edges = start.clone().requires_grad_()
    metric(edges).backward()
    for u, v in [(0, layout.mlp_backward_index(0)), (layout.head_forward_index(0, 2),
                                                      layout.qkv_backward_index(1, 1, "k")),
                 (layout.mlp_forward_index(1), layout.logits_backward_index)]:
        values = []
        for sign in (1, -1):
            shifted = start.clone()
            shifted[u, v] += sign * 1e-6
            with torch.no_grad():
                values.append(metric(shifted).item())
        assert edges.grad[u, v].item() == pytest.approx((values[0] - values[1]) / 2e-6, rel=1e-5, abs=1e-8)


# ------------------------------------------------ skipping unreached nodes
def _tiny_path_circuit(layout) -> CircuitMask:
    """One path input -> a1.h2 (query) -> m2 -> logits: only m2 among the MLPs has a kept input edge."""
    tiny = CircuitMask.empty(layout)
    for source, destination in (("input", "a1.h2<q>"), ("a1.h2", "m2"), ("m2", "logits")):
        tiny.edges[layout.forward_names.index(source), layout.backward_names.index(destination)] = 1
    return tiny


def _count_mlp_calls(engine, monkeypatch) -> dict[str, int]:
    """Count the engine's MLP evaluations (``calls["mlp"]``), to prove which nodes it skipped."""
    calls = {"mlp": 0}
    original_mlp = engine.adapter.mlp

    def counting_mlp(layer, z):
        calls["mlp"] += 1
        return original_mlp(layer, z)

    monkeypatch.setattr(engine.adapter, "mlp", counting_mlp)
    return calls


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_nodes_without_kept_inputs_reuse_counterfactual_outputs_exactly(family, monkeypatch):
    """Under patching, a node with no kept input edge reads the counterfactual residual, so the engine
    reuses its recorded output. Same circuits with that shortcut disabled must give the same logits."""
    import dataclasses

    engine = _engine(family)
    layout = engine.layout
    clean, cf, am = _batch(seed=16)
    tiny = _tiny_path_circuit(layout)
    circuits = [tiny, _random_mask(layout, 17, density=0.02)]
    calls = _count_mlp_calls(engine, monkeypatch)
    with torch.no_grad():
        ablation = Ablation.patching(engine, cf, am)
        without_shortcut = dataclasses.replace(ablation, attention_mask=None)
        for mask in circuits + [CircuitMask.stack(circuits)]:
            calls["mlp"] = 0
            fast = engine.forward(clean, am, mask=mask, ablation=ablation).logits
            skipped = layout.n_layers - calls["mlp"]
            reference = engine.forward(clean, am, mask=mask, ablation=without_shortcut).logits
            rows_mask = am.repeat(fast.shape[0] // am.shape[0], 1)
            assert _max_diff(fast, reference, rows_mask) <= ATOL
            if mask is tiny:
                assert skipped == layout.n_layers - 1  # only m2 has a kept input edge
    # The tiny circuit really differs from the counterfactual run (the kept path matters).
    with torch.no_grad():
        cf_logits = engine.forward(clean, am, mask=CircuitMask.empty(layout), ablation=ablation).logits
        tiny_logits = engine.forward(clean, am, mask=tiny, ablation=ablation).logits
    assert _max_diff(tiny_logits, cf_logits, am) > 1e-4


@pytest.mark.parametrize("family", TINY_FAMILIES)
def test_stacked_circuits_compute_nodes_only_in_the_rows_that_need_them(family, monkeypatch):
    """In one stacked forward, a node is computed only in the rows of the circuits that need it: a tiny
    circuit stacked with a dense one costs its own few nodes, not the dense one's. Logits equal each
    circuit alone."""
    engine = _engine(family)
    layout = engine.layout
    clean, cf, am = _batch(seed=21)
    tiny = _tiny_path_circuit(layout)
    dense = _random_mask(layout, 22, density=0.6)
    mlp_rows: list[tuple[int, int]] = []
    head_rows: list[int] = []
    original_mlp = engine.adapter.mlp
    original_heads = engine._attention_of_heads

    def counting_mlp(layer, z):
        mlp_rows.append((layer, z.shape[0]))
        return original_mlp(layer, z)

    def counting_heads(run, layer, heads, circuits, *args):
        head_rows.append(run.n_circuits if circuits is None else circuits.numel())
        return original_heads(run, layer, heads, circuits, *args)

    monkeypatch.setattr(engine.adapter, "mlp", counting_mlp)
    monkeypatch.setattr(engine, "_attention_of_heads", counting_heads)
    with torch.no_grad():
        ablation = Ablation.patching(engine, cf, am)
        mlp_rows.clear()
        together = engine.forward(clean, am, mask=CircuitMask.stack([tiny, dense]), ablation=ablation,
                                  logit_positions="last").logits
        mlp_calls, head_calls = list(mlp_rows), list(head_rows)
        alone = [engine.forward(clean, am, mask=m, ablation=ablation, logit_positions="last").logits
                 for m in (tiny, dense)]
    torch.testing.assert_close(together, torch.cat(alone), atol=ATOL, rtol=0)
    batch = clean.shape[0]
    # The tiny circuit needs m2 only; the dense one needs every MLP: m0 and m1 run on one circuit's rows.
    assert {layer: rows for layer, rows in mlp_calls} == {0: batch, 1: batch, 2: 2 * batch} | {
        layer: batch for layer in range(3, layout.n_layers)}
    assert 1 in head_calls  # some attention layer ran in the dense circuit's rows only


@pytest.mark.parametrize("family", ["gpt2", "llama"])
@pytest.mark.parametrize("kind", ["zero", "mean"])
def test_nodes_without_kept_outputs_are_not_computed(family, kind, monkeypatch):
    """A node none of whose outgoing edges is kept only ever reaches its destinations as its ablated value,
    so the engine does not compute it, under every ablation. The result must still match HF with those
    nodes' outputs replaced by their ablated values."""
    engine = _engine(family)
    model = _model(family)
    layout = engine.layout
    clean, cf, am = _batch(seed=21)
    keep = torch.rand(layout.n_forward, generator=torch.Generator().manual_seed(22)) < 0.5
    names = layout.forward_names
    if kind == "zero":
        ablation = Ablation.zero()
        _, nodes = hf_oracles.capture_nodes(model, clean, am)
        values = {n: torch.zeros_like(nodes[n]) for i, n in enumerate(names) if not keep[i]}
    else:
        ablation = mean_ablation(engine, [(cf, am)])
        means = ablation.sources.stacked()[0, :, 0]  # [n_forward, d]
        values = {n: means[i].expand(*clean.shape, -1) for i, n in enumerate(names) if not keep[i]}
    oracle = hf_oracles.forward_with_node_values(model, clean, am, values)
    calls = _count_mlp_calls(engine, monkeypatch)
    with torch.no_grad():
        out = engine.forward(clean, am, mask=CircuitMask.from_nodes(layout, keep), ablation=ablation).logits
    assert _max_diff(out, oracle, am) <= ATOL
    kept_mlps = sum(bool(keep[layout.mlp_forward_index(layer)]) for layer in range(layout.n_layers))
    assert calls["mlp"] == kept_mlps
    assert kept_mlps < layout.n_layers  # the seed drops at least one MLP
