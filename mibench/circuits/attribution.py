"""Gradient attribution shared by every gradient-based circuit method (EAP, EAP-IG, NAP, ...).

All of them compute the same first-order estimate of what ablating something costs::

    score(u -> v) = sum over examples, positions, dims of  Delta_u . dL/dz_v          (edge level)
    score(u)      = sum over examples, positions, dims of  Delta_u . dL/da_u          (node level)
    score(u, i)   = sum over examples and positions of     Delta_u[i] * dL/da_u[i]   (neuron level)

with ``Delta_u = a~_u - a_u`` (ablated minus clean source output) and ``L = -logit difference``; a
positive score means ablating the edge hurts the task. Scores are averaged over examples. Methods differ
only in *where the gradient is taken*:

* ``interpolation="none"`` (EAP, NAP): at the clean input.
* ``"inputs"`` (EAP-IG-inputs, NAP-IG): averaged over inputs whose token embedding is interpolated from
  the ablated to the clean one (the rest of the model runs freely).
* ``"activations"`` (EAP-IG-activations): averaged over runs that interpolate one source group's output
  (the input, one layer's heads, one MLP) between ablated and clean. By default a source's score uses the
  runs that interpolate *its own* group (Marks et al.); ``pooled=True`` pools every run's gradients
  into every score as MIB's reference code does.

Edge scores never materialise a per-edge tensor: the engine calls back with the gradient at every
receiver input (all heads' q/k/v of a layer at once), and one contraction with the fixed ``Delta`` buffer
adds a whole ``[sources, receivers]`` block. Node and neuron scores read the gradient at each source's
output (no MLP-input quirk: MIB's code took MLP gradients at the MLP *input*).

Differences from MIB's code, on purpose: integrated gradients use one Riemann rule at every level
(``left`` by default, MIB's edge-level rule; its node-level code used ``right``); interpolation with mean or
zero ablation runs towards the actual mean / zero (MIB interpolated towards an all-zero buffer while
``Delta`` used the mean); mean ablation is the plain per-node mean over tokens (see
:func:`mibench.engine.ablation.mean_ablation`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from mibench.circuits.batches import CircuitBatch
from mibench.circuits.metrics import logit_difference
from mibench.engine.ablation import Ablation
from mibench.engine.engine import PatchingEngine, SourceGroup
from mibench.graph.graph import Graph
from mibench.graph.layout import GraphLayout

Level = Literal["edge", "node", "neuron"]
Interpolation = Literal["none", "inputs", "activations"]
RiemannRule = Literal["left", "right", "midpoint"]


def interpolation_points(steps: int, rule: RiemannRule = "left") -> list[float]:
    """The weights ``alpha`` on the clean side for ``steps`` Riemann points between ablated (0) and clean (1)."""
    if steps < 1:
        raise ValueError(f"integrated gradients need at least one step, got {steps}")
    offset = {"left": 0.0, "right": 1.0, "midpoint": 0.5}[rule]
    return [(k + offset) / steps for k in range(steps)]


@dataclass
class BatchActivations:
    """Clean and ablated source outputs of one batch, per source group (``[B, U_g, T, d]``)."""

    clean: list[Tensor]
    ablated: list[Tensor]

    def deltas(self) -> list[Tensor]:
        """``a~ - a`` per group, broadcast to the clean shapes."""
        return [(a - c).expand_as(c) for a, c in zip(self.ablated, self.clean, strict=True)]


def ablation_for_batch(engine: PatchingEngine, batch: CircuitBatch, kind: str, reference: Ablation | None) -> Ablation:
    """The ablation a batch's edges take: its own counterfactual run, or a shared mean / zero ablation."""
    if kind == "patching":
        return Ablation.patching(engine, batch.cf_ids, batch.attention_mask)
    if kind == "zero":
        return Ablation.zero()
    if kind == "mean":
        if reference is None:
            raise ValueError("mean ablation needs reference means (see mibench.engine.ablation.mean_ablation)")
        return reference
    raise ValueError(f"unknown ablation {kind!r} (patching, mean or zero)")


def batch_activations(engine: PatchingEngine, batch: CircuitBatch, ablation: Ablation) -> BatchActivations:
    with torch.no_grad():
        clean = engine.forward(batch.clean_ids, batch.attention_mask, record=True, logit_positions="none").sources
    if ablation.sources is None:
        ablated = [torch.zeros_like(g) for g in clean.groups]
    else:
        ablated = [g.to(engine.device, engine.dtype) for g in ablation.sources.groups]
    return BatchActivations(clean.groups, ablated)


class EdgeGradientContraction:
    """Adds ``Delta_u . dL/dz_v`` into ``scores[u, v]`` as the engine reports each receiver's gradient.

    ``rows`` restricts the sources that receive credit (EAP-IG-activations credits only the interpolated
    group unless pooled).
    """

    def __init__(self, layout: GraphLayout, scores: Tensor) -> None:
        self.layout = layout
        self.scores = scores
        self.deltas: Tensor | None = None  # [B, n_forward, T, d]
        self.last: Tensor | None = None
        self.rows = slice(0, layout.n_forward)

    def bind(self, deltas: Tensor, last_positions: Tensor, rows: slice | None = None) -> None:
        self.deltas, self.last = deltas, last_positions
        self.rows = rows or slice(0, self.layout.n_forward)

    def __call__(self, kind: str, layer: int, grad: Tensor) -> None:
        layout = self.layout
        if kind in ("q", "k", "v"):
            prev = layout.attn_prev_index(layer)
            first = layout.attn_backward_start(layer) + "qkv".index(kind) * layout.n_heads
            cols = slice(first, first + layout.n_heads)
        elif kind == "mlp":
            prev = layout.mlp_prev_index(layer)
            cols = slice(layout.mlp_backward_index(layer), layout.mlp_backward_index(layer) + 1)
            grad = grad.unsqueeze(1)
        elif kind == "logits":
            prev = layout.n_forward
            cols = slice(layout.logits_backward_index, layout.logits_backward_index + 1)
        else:
            raise ValueError(f"unknown receiver kind {kind!r}")
        lo, hi = self.rows.start, min(self.rows.stop, prev)
        if lo >= hi:
            return
        deltas = self.deltas[:, lo:hi]
        if kind == "logits":
            if grad.dim() == 2:  # gradient at the last position only: [B, d]
                at_last = deltas[torch.arange(deltas.shape[0], device=deltas.device), :, self.last]
                block = torch.einsum("bud,bd->u", _wide(at_last), _wide(grad)).unsqueeze(1)
            else:
                block = torch.einsum("butd,btd->u", _wide(deltas), _wide(grad)).unsqueeze(1)
        else:
            block = torch.einsum("butd,bhtd->uh", _wide(deltas), _wide(grad))
        self.scores[lo:hi, cols] += block.to(self.scores.device)


class SourceGradientCapture:
    """Adds ``Delta_u . dL/da_u`` (summed over dims for nodes, per dim for neurons) from each source output."""

    def __init__(self, scores: Tensor, per_neuron: bool) -> None:
        self.scores = scores  # [n_forward] or [n_forward, d]
        self.per_neuron = per_neuron
        self.deltas: list[Tensor] = []
        self.credited: Callable[[SourceGroup], bool] = lambda group: True

    def bind(self, deltas: list[Tensor], credited: Callable[[SourceGroup], bool] | None = None) -> None:
        self.deltas = deltas
        self.credited = credited or (lambda group: True)

    def watch(self, group: SourceGroup, index: int, output: Tensor) -> None:
        if not (self.credited(group) and output.requires_grad):
            return
        delta = self.deltas[index]

        def accumulate(grad: Tensor) -> None:
            product = (_wide(delta) * _wide(grad)).sum(dim=(0, 2))  # [U, d]
            block = product if self.per_neuron else product.sum(-1)
            self.scores[group.start : group.stop] += block.to(self.scores.device)

        output.register_hook(accumulate)


def _wide(x: Tensor) -> Tensor:
    """At least float32 (bf16 products lose the small differences attribution is about)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


@dataclass
class _Pass:
    """One forward+backward of an attribution: how sources are edited and which sources get credit."""

    edit: Callable[[SourceGroup, Tensor], Tensor]
    credited: Callable[[SourceGroup], bool]


def _passes(engine: PatchingEngine, acts: BatchActivations, interpolation: Interpolation, steps: int,
            rule: RiemannRule, pooled: bool) -> list[_Pass]:
    groups = engine.groups

    def set_input(source: Callable[[], Tensor]) -> Callable[[SourceGroup, Tensor], Tensor]:
        def edit(group: SourceGroup, output: Tensor) -> Tensor:
            if group.kind == "input":  # gradients flow from here; model parameters are frozen
                return source().detach().requires_grad_(True)
            return output
        return edit

    everyone: Callable[[SourceGroup], bool] = lambda group: True  # noqa: E731
    if interpolation == "none":
        return [_Pass(set_input(lambda: acts.clean[0]), everyone)]
    alphas = interpolation_points(steps, rule)
    if interpolation == "inputs":
        return [
            _Pass(set_input(lambda a=a: acts.ablated[0] + a * (acts.clean[0] - acts.ablated[0])), everyone)
            for a in alphas
        ]
    if interpolation == "activations":
        passes = []
        for index, target in enumerate(groups):
            for a in alphas:
                def edit(group: SourceGroup, output: Tensor, index=index, target=target, a=a) -> Tensor:
                    i = groups.index(group)
                    if group is target:
                        mixed = acts.ablated[i] + a * (acts.clean[i] - acts.ablated[i])
                        return mixed.expand_as(acts.clean[i]).detach().requires_grad_(True)
                    if group.kind == "input":
                        return acts.clean[0].detach().requires_grad_(True)
                    return output
                passes.append(_Pass(edit, everyone if pooled else (lambda g, target=target: g is target)))
        return passes
    raise ValueError(f"unknown interpolation {interpolation!r} (none, inputs or activations)")


def attribute(
    engine: PatchingEngine,
    batches: Iterable[CircuitBatch],
    *,
    level: Level = "edge",
    ablation: str = "patching",
    reference: Ablation | None = None,
    interpolation: Interpolation = "none",
    steps: int = 5,
    rule: RiemannRule = "left",
    pooled: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> Graph:
    """Gradient attribution scores at ``level``, averaged over every example of ``batches``.

    Returns a :class:`Graph` carrying the scores (``edge_scores``, ``node_scores`` or ``neuron_scores``)
    with nothing marked in-graph; the scorer selects circuits from it.
    """
    layout = engine.layout
    graph = Graph(layout, node_scores=level == "node", neuron_level=level == "neuron")
    if level == "edge":
        edge_scores = torch.zeros(layout.n_forward, layout.n_backward, dtype=torch.float64)
        contraction = EdgeGradientContraction(layout, edge_scores)
    else:
        shape = (layout.n_forward, layout.d_model) if level == "neuron" else (layout.n_forward,)
        source_scores = torch.zeros(shape, dtype=torch.float64)
        capture = SourceGradientCapture(source_scores, per_neuron=level == "neuron")
    total = 0
    passes_per_credit = 1
    with engine.frozen_parameters():
        for batch in batches:
            batch_ablation = ablation_for_batch(engine, batch, ablation, reference)
            acts = batch_activations(engine, batch, batch_ablation)
            deltas = acts.deltas()
            passes = _passes(engine, acts, interpolation, steps, rule, pooled)
            passes_per_credit = len(passes) if (interpolation != "activations" or pooled) else steps
            stacked = torch.cat(deltas, dim=1) if level == "edge" else None
            for p in passes:
                if level == "edge":
                    credited = [g for g in engine.groups if p.credited(g)]
                    rows = slice(credited[0].start, credited[-1].stop) if len(credited) < len(engine.groups) else None
                    contraction.bind(stacked, batch.last_positions.to(engine.device), rows)
                    edit, hook = p.edit, contraction
                else:
                    capture.bind(deltas, p.credited)

                    def edit(group: SourceGroup, output: Tensor, p=p) -> Tensor:
                        output = p.edit(group, output)
                        capture.watch(group, engine.groups.index(group), output)
                        return output
                    hook = None
                out = engine.forward(batch.clean_ids, batch.attention_mask, logit_positions=batch.last_positions,
                                     edit_sources=edit, on_receiver_grad=hook)
                loss = -logit_difference(out.logits, batch.answers, batch.cf_answers).sum()
                loss.backward()
            total += batch.size
            if on_batch is not None:
                on_batch(batch.size)
    scale = 1.0 / (max(total, 1) * passes_per_credit)
    if level == "edge":
        graph.edge_scores = (edge_scores * scale).float() * graph.real_edge_mask
    elif level == "node":
        graph.node_scores = (source_scores * scale).float()
    else:
        graph.neuron_scores = (source_scores * scale).float()
    return graph
