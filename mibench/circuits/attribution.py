"""Gradient attribution shared by every gradient-based circuit method (EAP, EAP-IG, NAP, ...).

All of them compute the same first-order estimate of what ablating something costs::

    score(u -> v) = sum over examples, positions, dims of  Delta_u . dL/dz_v          (edge level)
    score(u)      = sum over examples, positions, dims of  Delta_u . dL/da_u          (node level)
    score(u, i)   = sum over examples and positions of     Delta_u[i] * dL/da_u[i]   (neuron level)

with ``Delta_u = a~_u - a_u`` (ablated minus clean source output) and ``L = -logit difference``; a
positive score means ablating the edge hurts the task. Scores are averaged over examples (and
interpolation points). Methods differ only in *where the gradient is taken*:

* ``interpolation="none"`` (EAP, NAP): at the clean input.
* ``"inputs"`` (EAP-IG-inputs, NAP-IG): averaged over inputs whose token embedding is interpolated from
  the ablated to the clean one (the rest of the model runs freely).
* ``"activations"`` (EAP-IG-activations): averaged over runs that interpolate one source group's output
  (the input, one layer's heads, one MLP) between ablated and clean. By default a source's score uses the
  runs that interpolate *its own* group (Marks et al.); ``pooled=True`` pools every run's gradients
  into every score as MIB's reference code does.

Magnitudes: in memory a score is the per-example mean above, so EAP is exactly the derivative of exact
patching whatever the batch size. MIB's files (EAP-IG ``attribute``) hold that mean divided by the batch
size: EAP-IG backpropagates the batch *mean* of the loss, sums over batches and divides by the number of
examples (and IG steps). The returned graph's ``file_score_scale`` is ``1 / batch size`` (the largest
batch, i.e. the configured size, or the number of examples if fewer), so the files mibench writes match
MIB's at the same ``--batch-size``; see ``docs/file-formats.md`` (MIB's last, partial batch weighs its
examples more; mibench weighs every example equally).

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
from typing import TYPE_CHECKING, Literal

import torch
from torch import Tensor

from mibench.circuits.batches import CircuitBatch
from mibench.circuits.metrics import logit_difference
from mibench.engine.ablation import Ablation, patching_with_clean_run
from mibench.engine.engine import PatchingEngine, SourceGroup
from mibench.graph.graph import Graph
from mibench.graph.layout import GraphLayout

if TYPE_CHECKING:
    from mibench.graph.positional import PositionalGraph

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
    if kind in ("mean", "optimal"):
        if reference is None:
            raise ValueError(f"{kind} ablation needs its reference activations (see mibench.engine.ablation."
                             "mean_ablation and mibench.engine.optimal_ablation)")
        return reference
    raise ValueError(f"unknown ablation {kind!r} (patching, mean, zero or optimal)")


def ablation_and_activations(engine: PatchingEngine, batch: CircuitBatch, kind: str,
                             reference: Ablation | None) -> tuple[Ablation, BatchActivations]:
    """The batch's ablation and its clean source outputs (from a dedicated no-grad forward) paired with the
    ablated ones. Under patching the clean and counterfactual runs are one stacked forward."""
    if kind == "patching":
        ablation, clean, _ = patching_with_clean_run(engine, batch.clean_ids, batch.cf_ids, batch.attention_mask)
    else:
        ablation = ablation_for_batch(engine, batch, kind, reference)
        with torch.no_grad():
            clean = engine.forward(batch.clean_ids, batch.attention_mask, record=True, logit_positions="none")
    return ablation, pair_with_ablation(engine, clean.sources.groups, ablation)


def pair_with_ablation(engine: PatchingEngine, clean: list[Tensor], ablation: Ablation) -> BatchActivations:
    """Clean source outputs (detached here) paired with the ablation's (zeros for zero ablation)."""
    clean = [g.detach() for g in clean]
    if ablation.sources is None:
        ablated = [torch.zeros_like(g) for g in clean]
    else:
        ablated = [g.to(engine.device, engine.dtype) for g in ablation.sources.groups]
    return BatchActivations(clean, ablated)


class EdgeGradientContraction:
    """Adds ``Delta_u . dL/dz_v`` into ``scores[u, v]`` as the engine reports each receiver's gradient.

    The deltas are held source-major, ``[n_forward, B, T, d]``, so the sources feeding a receiver are a
    contiguous prefix and each block of scores is one batched matrix product. The q, k and v gradients of a layer are buffered and
    contracted together: the (large) delta prefix is read once per layer instead of once per kind, which
    is what bounds this step on CPU.

    ``rows`` restricts the sources that receive credit (EAP-IG-activations credits only the interpolated
    group unless pooled).
    """

    _QKV = ("q", "k", "v")

    def __init__(self, layout: GraphLayout, scores: Tensor) -> None:
        self.layout = layout
        self.scores = scores
        self.deltas: Tensor | None = None  # [n_forward, B, T, d], contiguous, >= float32
        self.last: Tensor | None = None
        self.rows = slice(0, layout.n_forward)
        self._pending: dict[int, dict[str, Tensor]] = {}

    def bind(self, deltas: Tensor, last_positions: Tensor, rows: slice | None = None) -> None:
        """``deltas``: ``[n_forward, B, T, d]`` (see :func:`source_major_deltas`)."""
        self.deltas, self.last = deltas, last_positions
        self.rows = rows or slice(0, self.layout.n_forward)
        self._pending = {}

    def __call__(self, kind: str, layer: int, grad: Tensor) -> None:
        layout = self.layout
        grad = _fold_points(grad, self.deltas.shape[1])
        if kind in self._QKV:
            pending = self._pending.setdefault(layer, {})
            pending[kind] = grad
            if len(pending) == len(self._QKV):
                self._contract_attention(layer, self._pending.pop(layer))
            return
        if kind == "mlp":
            prev = layout.mlp_prev_index(layer)
            col = layout.mlp_backward_index(layer)
            self._add_block(prev, col, grad.unsqueeze(1))  # [B, 1, T, d]
        elif kind == "logits":
            prev, col = layout.n_forward, layout.logits_backward_index
            if grad.dim() == 2:  # gradient at the last position only: [B, d]
                lo, hi = self._credited(prev)
                if lo < hi:
                    deltas = self.deltas[lo:hi]
                    at_last = deltas[:, torch.arange(deltas.shape[1], device=deltas.device), self.last]  # [U, B, d]
                    block = at_last.flatten(1) @ _wide(grad).flatten().unsqueeze(-1)
                    self.scores[lo:hi, col : col + 1] += block.to(self.scores.device)
            else:
                self._add_block(prev, col, grad.unsqueeze(1))
        else:
            raise ValueError(f"unknown receiver kind {kind!r}")

    def finish(self) -> None:
        """Contract layers whose q/k/v gradients did not all arrive (a kind without gradient)."""
        for layer, pending in self._pending.items():
            self._contract_attention(layer, pending)
        self._pending = {}

    def _contract_attention(self, layer: int, grads: dict[str, Tensor]) -> None:
        layout = self.layout
        start = layout.attn_backward_start(layer)
        prev = layout.attn_prev_index(layer)
        if len(grads) == len(self._QKV):
            self._add_block(prev, slice(start, start + 3 * layout.n_heads), torch.cat([grads[k] for k in self._QKV], 1))
            return
        for kind, grad in grads.items():
            first = start + self._QKV.index(kind) * layout.n_heads
            self._add_block(prev, slice(first, first + layout.n_heads), grad)

    def _credited(self, prev: int) -> tuple[int, int]:
        return self.rows.start, min(self.rows.stop, prev)

    def _add_block(self, prev: int, cols: int | slice, grad: Tensor) -> None:
        """``scores[u, v] += sum_{b,t,d} deltas[u, b, t, d] * grad[b, v, t, d]`` over credited ``u < prev``.

        One batched product over examples reads the delta rows in place (``[U, T*d]`` matrices with a row
        stride) and the gradients as they come, so neither is copied.
        """
        lo, hi = self._credited(prev)
        if lo >= hi:
            return
        if isinstance(cols, int):
            cols = slice(cols, cols + 1)
        deltas = self.deltas[lo:hi]
        units, batch = deltas.shape[:2]
        grad = _wide(grad)
        per_example = torch.bmm(deltas.reshape(units, batch, -1).transpose(0, 1),
                                grad.reshape(batch, grad.shape[1], -1).transpose(1, 2))  # [B, U, V]
        self.scores[lo:hi, cols] += per_example.sum(0).to(self.scores.device)


SpanReducer = Literal["sum", "avg", "abs_sum", "max_abs"]
SPAN_REDUCERS: tuple[str, ...] = ("sum", "avg", "abs_sum", "max_abs")


class SpanEdgeGradientContraction(EdgeGradientContraction):
    """:class:`EdgeGradientContraction` that keeps positions and reduces them per span: ``scores[s, u, v]``
    gets, per example, the reducer over the positions ``t`` of span ``s`` of ``Delta_u[t] . dL/dz_v[t]``.

    Reducers (PEAP's): ``sum`` (what position-invariant EAP adds up, per span), ``avg`` (mean over the span's
    positions), ``abs_sum`` (sum of magnitudes: no cancellation between positions), ``max_abs`` (the
    largest magnitude). ``span_ids`` ``[B, T]`` must be set before each batch (-1 at padding).
    """

    def __init__(self, layout: GraphLayout, scores: Tensor, reducer: SpanReducer = "sum") -> None:
        if reducer not in SPAN_REDUCERS:
            raise ValueError(f"unknown span reducer {reducer!r} (choose from {', '.join(SPAN_REDUCERS)})")
        super().__init__(layout, scores)
        self.reducer = reducer
        self.span_ids: Tensor | None = None

    def _reduce(self, per_position: Tensor) -> Tensor:
        """``[B, U, V, T]`` -> ``[S, U, V]`` summed over examples."""
        n_spans = self.scores.shape[0]
        onehot = torch.nn.functional.one_hot(self.span_ids.clamp_min(0), n_spans).to(per_position.dtype)
        onehot = onehot * (self.span_ids >= 0).unsqueeze(-1).to(per_position.dtype)  # [B, T, S]
        if self.reducer == "max_abs":
            magnitude = per_position.abs()
            out = [(magnitude * onehot[:, None, None, :, s]).amax(-1).sum(0) for s in range(n_spans)]
            return torch.stack(out)
        values = per_position.abs() if self.reducer == "abs_sum" else per_position
        per_span = torch.einsum("buvt,bts->bsuv", values, onehot)
        if self.reducer == "avg":
            counts = onehot.sum(1)  # [B, S]
            per_span = per_span / counts.clamp_min(1)[:, :, None, None]
        return per_span.sum(0)

    def _add_block(self, prev: int, cols: int | slice, grad: Tensor) -> None:
        lo, hi = self._credited(prev)
        if lo >= hi:
            return
        if isinstance(cols, int):
            cols = slice(cols, cols + 1)
        per_position = torch.einsum("ubtd,bvtd->buvt", self.deltas[lo:hi], _wide(grad))
        self.scores[:, lo:hi, cols] += self._reduce(per_position).to(self.scores.device)

    def __call__(self, kind: str, layer: int, grad: Tensor) -> None:
        if kind == "logits" and grad.dim() == 2:  # the gradient at the last position only: place it there
            grad = _fold_points(grad, self.deltas.shape[1])
            full = torch.zeros(*self.deltas.shape[1:], dtype=_wide(grad).dtype, device=grad.device)  # [B, T, d]
            full[torch.arange(full.shape[0], device=grad.device), self.last] = _wide(grad)
            grad = full
        super().__call__(kind, layer, grad)


def source_major_deltas(deltas: list[Tensor]) -> Tensor:
    """Per-group ``[B, U_g, T, d]`` deltas as one contiguous ``[n_forward, B, T, d]`` tensor (>= float32)."""
    return torch.cat([_wide(d).transpose(0, 1) for d in deltas])


class SourceGradientCapture:
    """Adds ``Delta_u . dL/da_u`` (summed over dims for nodes, per dim for neurons) from each source output."""

    def __init__(self, scores: Tensor, per_neuron: bool) -> None:
        self.scores = scores  # [n_forward] or [n_forward, d]
        self.per_neuron = per_neuron
        self.deltas: list[Tensor] = []
        self.credited: Callable[[SourceGroup], bool] = lambda group: True

    def credit(self, credited: Callable[[SourceGroup], bool]) -> None:
        """Which groups the next forward's hooks credit (set before that forward)."""
        self.credited = credited

    def bind(self, deltas: list[Tensor]) -> None:
        """May be called after the forward, before the backward (EAP reads its clean outputs from it)."""
        self.deltas = deltas

    def watch(self, group: SourceGroup, index: int, output: Tensor) -> None:
        if not (self.credited(group) and output.requires_grad):
            return

        def accumulate(grad: Tensor) -> None:  # deltas are read when the gradient arrives (see bind)
            delta = self.deltas[index]
            grad = _fold_points(grad, delta.shape[0])
            product = (_wide(delta) * _wide(grad)).sum(dim=(0, 2))  # [U, d]
            block = product if self.per_neuron else product.sum(-1)
            self.scores[group.start : group.stop] += block.to(self.scores.device)

        output.register_hook(accumulate)


def _fold_points(grad: Tensor, batch: int) -> Tensor:
    """Sum a gradient over stacked interpolation points (rows point-major): ``[P*B, ...]`` -> ``[B, ...]``.

    The deltas are the same for every point, so contracting the summed gradient is the sum of the
    contractions."""
    if grad.shape[0] == batch:
        return grad
    return _wide(grad).unflatten(0, (-1, batch)).sum(0)


def _wide(x: Tensor) -> Tensor:
    """At least float32 (bf16 products lose the small differences attribution is about)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


@dataclass
class _Pass:
    """One forward+backward of an attribution: how sources are edited and which sources get credit.

    ``copies`` interpolation points run in this one pass, their rows stacked point-major (``copies * B``
    rows); the edits return that many rows for the groups they set.
    """

    edit: Callable[[SourceGroup, Tensor], Tensor]
    credited: Callable[[SourceGroup], bool]
    copies: int = 1


def _stacked_points(ablated: Tensor, clean: Tensor, alphas: list[float]) -> Tensor:
    """``ablated + a * (clean - ablated)`` for each ``a``, stacked point-major along rows, as a grad leaf."""
    mixed = torch.cat([(ablated + a * (clean - ablated)).expand_as(clean) for a in alphas])
    return mixed.detach().requires_grad_(True)


def _passes(engine: PatchingEngine, acts: BatchActivations | None, interpolation: Interpolation, steps: int,
            rule: RiemannRule, pooled: bool, points_per_pass: int) -> list[_Pass]:
    """The attribution's forward+backward passes. ``acts`` is None for ``interpolation="none"``: that single
    pass *is* the clean run, so it records the clean outputs itself instead of a separate forward.
    Interpolation points are grouped ``points_per_pass`` to a pass (same sums, fewer and larger forwards)."""
    groups = engine.groups
    everyone: Callable[[SourceGroup], bool] = lambda group: True  # noqa: E731
    if interpolation == "none":
        def from_clean_run(group: SourceGroup, output: Tensor) -> Tensor:
            return output.detach().requires_grad_(True) if group.kind == "input" else output
        return [_Pass(from_clean_run, everyone)]
    alphas = interpolation_points(steps, rule)
    chunks = [alphas[i : i + points_per_pass] for i in range(0, len(alphas), points_per_pass)]
    if interpolation == "inputs":
        def interpolate_input(chunk: list[float]) -> Callable[[SourceGroup, Tensor], Tensor]:
            def edit(group: SourceGroup, output: Tensor) -> Tensor:
                if group.kind == "input":  # gradients flow from here; model parameters are frozen
                    return _stacked_points(acts.ablated[0], acts.clean[0], chunk)
                return output
            return edit
        return [_Pass(interpolate_input(chunk), everyone, len(chunk)) for chunk in chunks]
    if interpolation == "activations":
        passes = []
        for index, target in enumerate(groups):
            for chunk in chunks:
                def edit(group: SourceGroup, output: Tensor, index=index, target=target, chunk=chunk) -> Tensor:
                    i = groups.index(group)
                    if group is target:
                        return _stacked_points(acts.ablated[i], acts.clean[i], chunk)
                    if group.kind == "input":
                        return acts.clean[0].repeat(len(chunk), 1, 1, 1).detach().requires_grad_(True)
                    return output
                credited = everyone if pooled else (lambda g, target=target: g is target)
                passes.append(_Pass(edit, credited, len(chunk)))
        return passes
    raise ValueError(f"unknown interpolation {interpolation!r} (none, inputs or activations)")


def _repeat_rows(batch: CircuitBatch, copies: int) -> CircuitBatch:
    """The batch's rows repeated ``copies`` times (point-major), for a pass that stacks interpolation points."""
    if copies == 1:
        return batch
    return CircuitBatch(batch.clean_ids.repeat(copies, 1), batch.cf_ids.repeat(copies, 1),
                        batch.attention_mask.repeat(copies, 1), batch.answers.repeat(copies),
                        batch.cf_answers.repeat(copies), list(batch.example_ids) * copies)


def _points_per_pass(engine: PatchingEngine, batch: CircuitBatch, steps: int) -> int:
    """How many interpolation points share a forward: as many as keep the stacked source activations of one
    pass within the engine's ``max_delta_bytes`` (on CPU, large models get one point per pass, as before;
    small ones run all points in one pass, where per-call overhead dominates)."""
    layout = engine.layout
    itemsize = max(torch.finfo(engine.dtype).bits // 8, 4)
    per_point = layout.n_forward * batch.size * batch.clean_ids.shape[1] * layout.d_model * itemsize
    return max(1, min(steps, engine.max_delta_bytes // max(per_point, 1)))


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
        scores = torch.zeros(layout.n_forward, layout.n_backward, dtype=torch.float64)
        accumulator: EdgeGradientContraction | SourceGradientCapture = EdgeGradientContraction(layout, scores)
    else:
        shape = (layout.n_forward, layout.d_model) if level == "neuron" else (layout.n_forward,)
        scores = torch.zeros(shape, dtype=torch.float64)
        accumulator = SourceGradientCapture(scores, per_neuron=level == "neuron")
    norm = _accumulate(engine, batches, accumulator, ablation=ablation, reference=reference,
                       interpolation=interpolation, steps=steps, rule=rule, pooled=pooled, on_batch=on_batch)
    if level == "edge":
        graph.edge_scores = (scores * norm.scale).float() * graph.real_edge_mask
    elif level == "node":
        graph.node_scores = (scores * norm.scale).float()
    else:
        graph.neuron_scores = (scores * norm.scale).float()
    graph.file_score_scale = norm.file_score_scale
    return graph


def attribute_by_span(
    engine: PatchingEngine,
    batches: Iterable[CircuitBatch],
    spans: list[str],
    span_ids_of: Callable[[CircuitBatch], Tensor],
    *,
    reducer: SpanReducer = "sum",
    ablation: str = "patching",
    reference: Ablation | None = None,
    interpolation: Interpolation = "none",
    steps: int = 5,
    rule: RiemannRule = "left",
    on_batch: Callable[[int], None] | None = None,
) -> PositionalGraph:
    """Edge attribution kept per span (PEAP's non-crossing edges): each edge's per-position score
    ``Delta_u[t] . dL/dz_v[t]`` is reduced over the positions of each span (``reducer``) and averaged over
    examples. ``span_ids_of(batch)`` gives ``[B, T]`` span indices (-1 at padding). With one span and
    ``reducer="sum"`` this is exactly :func:`attribute`'s edge scores."""
    from mibench.graph.positional import PositionalGraph

    layout = engine.layout
    graph = PositionalGraph(layout, spans)
    scores = torch.zeros(len(spans), layout.n_forward, layout.n_backward, dtype=torch.float64)
    contraction = SpanEdgeGradientContraction(layout, scores, reducer)

    def before(batch: CircuitBatch) -> None:
        contraction.span_ids = span_ids_of(batch).to(engine.device)

    norm = _accumulate(engine, batches, contraction, ablation=ablation, reference=reference,
                       interpolation=interpolation, steps=steps, rule=rule, pooled=False, on_batch=on_batch,
                       before_batch=before)
    graph.edge_scores = (scores * norm.scale).float() * graph.real_edge_mask
    return graph


@dataclass(frozen=True)
class Normalisation:
    """How accumulated sums become scores.

    ``scale`` turns the sums into averages over examples (and interpolation points): mibench's in-memory
    scores. ``file_score_scale`` (``1 / largest batch``) then gives MIB's file magnitudes, those of
    EAP-IG's batch-mean loss divided by the number of examples."""

    scale: float
    file_score_scale: float


def _accumulate(engine: PatchingEngine, batches: Iterable[CircuitBatch],
                accumulator: EdgeGradientContraction | SourceGradientCapture, *, ablation: str,
                reference: Ablation | None, interpolation: Interpolation, steps: int, rule: RiemannRule,
                pooled: bool, on_batch: Callable[[int], None] | None,
                before_batch: Callable[[CircuitBatch], None] | None = None) -> Normalisation:
    """Run every attribution pass of every batch, feeding gradients to ``accumulator``; returns how the
    accumulated sums are normalised."""
    edges = isinstance(accumulator, EdgeGradientContraction)
    total = 0
    largest_batch = 1
    passes_per_credit = 1
    with engine.frozen_parameters():
        for batch in batches:
            if before_batch is not None:
                before_batch(batch)
            own_clean_run = interpolation == "none"
            if own_clean_run:
                batch_ablation, acts = ablation_for_batch(engine, batch, ablation, reference), None
            else:
                batch_ablation, acts = ablation_and_activations(engine, batch, ablation, reference)
            passes = _passes(engine, acts, interpolation, steps, rule, pooled,
                             points_per_pass=_points_per_pass(engine, batch, steps))
            passes_per_credit = sum(p.copies for p in passes) if (interpolation != "activations" or pooled) else steps
            for p in passes:
                if edges:
                    hook = accumulator
                    edit = p.edit
                else:
                    hook = None
                    accumulator.credit(p.credited)

                    def edit(group: SourceGroup, output: Tensor, p=p) -> Tensor:
                        output = p.edit(group, output)
                        accumulator.watch(group, engine.groups.index(group), output)
                        return output
                rows = _repeat_rows(batch, p.copies)
                out = engine.forward(rows.clean_ids, rows.attention_mask, logit_positions=rows.last_positions,
                                     edit_sources=edit, on_receiver_grad=hook, record=own_clean_run)
                if acts is None:
                    acts = pair_with_ablation(engine, out.sources.groups, batch_ablation)
                if p is passes[0]:  # the deltas are fixed per batch; bind them before the first backward
                    deltas = acts.deltas()
                    stacked = source_major_deltas(deltas) if edges else None
                if edges:
                    credited = [g for g in engine.groups if p.credited(g)]
                    credited_rows = (slice(credited[0].start, credited[-1].stop)
                                     if len(credited) < len(engine.groups) else None)
                    accumulator.bind(stacked, batch.last_positions.to(engine.device), credited_rows)
                else:
                    accumulator.bind(deltas)
                loss = -logit_difference(out.logits, rows.answers, rows.cf_answers).sum()
                loss.backward()
                if edges:
                    accumulator.finish()
            total += batch.size
            largest_batch = max(largest_batch, batch.size)
            if on_batch is not None:
                on_batch(batch.size)
    return Normalisation(scale=1.0 / (max(total, 1) * passes_per_credit), file_score_scale=1.0 / largest_batch)
