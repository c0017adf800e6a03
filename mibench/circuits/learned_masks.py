"""What every learned-edge-mask method shares (UGS, Edge Pruning): data, objective, masks, training loop.

Such a method keeps one parameter per real edge, samples keep-masks from them, runs the model through the
engine's differentiable masks (edges not kept carry the run's ablation, as in evaluation), and lowers the
KL divergence from the full model's next-token distribution at the answer position plus a sparsity term.
The engine's stacked masks evaluate several sampled circuits on the same prompts in one forward.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from mibench.circuits.attribution import ablation_for_batch
from mibench.circuits.batches import CircuitBatch
from mibench.circuits.method import AttributionContext
from mibench.engine.ablation import Ablation
from mibench.engine.engine import PatchingEngine
from mibench.engine.masks import CircuitMask
from mibench.graph.graph import Graph, real_edge_mask
from mibench.graph.layout import GraphLayout


@dataclass
class MaskStep:
    """The prompts of one optimisation step with what the objective compares against."""

    batch: CircuitBatch
    ablation: Ablation
    full_log_probs: Tensor  # [B, vocab] at the answer position, from the unpatched model


def training_steps(context: AttributionContext, prompts_per_step: int) -> list[MaskStep]:
    """The attribution batches cut into steps of ``prompts_per_step`` prompts, each with its ablation and the
    full model's answer-position distribution (computed once; the weights are frozen)."""
    if prompts_per_step < 1:
        raise ValueError(f"prompts_per_step must be at least 1, got {prompts_per_step}")
    engine = context.engine
    steps = []
    with torch.no_grad():
        for whole in context.batches:
            for start in range(0, whole.size, prompts_per_step):
                rows = slice(start, start + prompts_per_step)
                batch = CircuitBatch(whole.clean_ids[rows], whole.cf_ids[rows], whole.attention_mask[rows],
                                     whole.answers[rows], whole.cf_answers[rows], whole.example_ids[rows])
                ablation = ablation_for_batch(engine, batch, context.ablation, context.reference_ablation)
                logits = engine.forward(batch.clean_ids, batch.attention_mask,
                                        logit_positions=batch.last_positions).logits
                steps.append(MaskStep(batch, ablation, torch.log_softmax(_wide(logits), -1)))
    return steps


def cycle_steps(steps: list[MaskStep], seed: int) -> Iterator[MaskStep]:
    """The steps in a new seeded order each pass."""
    generator = torch.Generator().manual_seed(seed)
    for _ in itertools.count():
        for i in torch.randperm(len(steps), generator=generator).tolist():
            yield steps[i]


def kl_from_full(engine: PatchingEngine, step: MaskStep, keep: Tensor) -> Tensor:
    """``[C * B]``: KL(full model || circuit) at the answer position for each stacked circuit of ``keep``
    (``[C, n_forward, n_backward]`` or one ``[n_forward, n_backward]`` mask), circuit-major rows."""
    batch = step.batch
    out = engine.forward(batch.clean_ids, batch.attention_mask, mask=CircuitMask(keep), ablation=step.ablation,
                         logit_positions=batch.last_positions)
    log_probs = torch.log_softmax(_wide(out.logits), -1)
    full = step.full_log_probs.repeat(log_probs.shape[0] // batch.size, 1)
    return (full.exp() * (full - log_probs)).sum(-1)


def _wide(x: Tensor) -> Tensor:
    """At least float32 (a KL between nearly equal bf16 distributions is mostly rounding)."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def prune_dangling(kept: Tensor, layout: GraphLayout) -> Tensor:
    """Bool ``kept`` masks (``[..., n_forward, n_backward]``) without dangling edges: an edge stays only if
    its source is reached from the input through kept edges and its destination reaches the logits.

    Fixed-point iteration over the graph's depth; every step is a batched boolean contraction.
    """
    owner = torch.tensor(layout.backward_owner, device=kept.device)  # destination node per column (logits: F)
    n_forward = layout.n_forward
    kept = kept & real_edge_mask(layout).to(kept.device)
    shape = kept.shape[:-2]
    fed = torch.zeros(*shape, n_forward + 1, dtype=torch.bool, device=kept.device)
    fed[..., 0] = True
    reaches = torch.zeros_like(fed)
    reaches[..., n_forward] = True
    for _ in range(2 * layout.n_layers + 1):
        into = (kept & fed[..., :n_forward, None]).any(-2).to(torch.float32)  # [..., n_backward]
        counts = torch.zeros(*shape, n_forward + 1, device=kept.device).index_add_(-1, owner, into)
        fed = (counts > 0) | fed
        out_of = (kept & reaches[..., owner][..., None, :]).any(-1)  # [..., n_forward]
        reaches = torch.cat([out_of | reaches[..., :n_forward], reaches[..., n_forward:]], -1)
    return kept & fed[..., :n_forward, None] & reaches[..., owner][..., None, :]


def head_edge_totals(values: Tensor, layout: GraphLayout) -> Tensor:
    """``[n_layers * n_heads]``: for each attention head, the sum of ``values`` ``[n_forward, n_backward]``
    over its outgoing edges and over the edges into its q, k and v inputs."""
    owner = torch.tensor(layout.backward_owner)
    incoming = torch.zeros(layout.n_forward + 1, dtype=values.dtype).index_add(0, owner, values.sum(0))
    totals = values.sum(1) + incoming[: layout.n_forward]
    heads = [layout.head_forward_index(layer, h) for layer in range(layout.n_layers) for h in range(layout.n_heads)]
    return totals[heads]


class EdgeParameters:
    """One trainable value per real edge, kept as a dense ``[n_forward, n_backward]`` tensor (entries that
    are not edges exist but are never read or counted)."""

    def __init__(self, layout: GraphLayout, init: Callable[[tuple[int, int]], Tensor], device, dtype) -> None:
        self.layout = layout
        self.real = real_edge_mask(layout).to(device)
        self.values = init((layout.n_forward, layout.n_backward)).to(device, dtype).requires_grad_(True)

    @property
    def n_edges(self) -> int:
        return int(self.real.sum())

    def real_sum(self, per_edge: Tensor) -> Tensor:
        return (per_edge * self.real).sum()

    def to_graph(self, scores: Tensor) -> Graph:
        graph = Graph(self.layout)
        graph.edge_scores = (scores.detach().float().cpu() * self.real.cpu()).contiguous()
        return graph


def clip_gradient(parameters: list[Tensor], max_norm: float) -> None:
    """Non-finite gradients become 0 (as the reference code's hook did), then the norm is clipped."""
    for p in parameters:
        if p.grad is not None:
            torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(parameters, max_norm)
