"""Information flow routes (Ferrando & Voita, 2024): attribution from one clean forward, no counterfactual.

For a receiver input ``z`` (an attention layer's input, shared by its heads' q/k/v; an MLP input; the
final residual) and each upstream source output ``a_u`` at each position::

    proximity(u) = max(0, |z|_1 - |z - a_u|_1)        importance(u) = proximity(u) / sum_u' proximity(u')

averaged over the real (non-padding) positions of each prompt and over examples. Scores are >= 0, so the
signed and absolute rankings coincide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from mibench.circuits.batches import CircuitBatch
from mibench.engine.engine import PatchingEngine
from mibench.graph.graph import Graph


def information_flow_routes(
    engine: PatchingEngine,
    batches: Iterable[CircuitBatch],
    *,
    on_batch: Callable[[int], None] | None = None,
) -> Graph:
    layout = engine.layout
    graph = Graph(layout)
    scores = torch.zeros(layout.n_forward, layout.n_backward, dtype=torch.float64)
    n_examples = 0
    # Receiver groups in backward order with their columns and how many sources feed them.
    receivers: list[tuple[slice, int]] = []
    for layer in range(layout.n_layers):
        start = layout.attn_backward_start(layer)
        receivers.append((slice(start, start + 3 * layout.n_heads), layout.attn_prev_index(layer)))
        mlp = layout.mlp_backward_index(layer)
        receivers.append((slice(mlp, mlp + 1), layout.mlp_prev_index(layer)))
    logits = layout.logits_backward_index
    receivers.append((slice(logits, logits + 1), layout.n_forward))
    with torch.no_grad():
        for batch in batches:
            out = engine.forward(batch.clean_ids, batch.attention_mask, record=True, record_receivers=True,
                                 logit_positions="none")
            sources = out.sources.stacked().float()  # [B, F, T, d]
            real = batch.attention_mask.to(sources.device).float()  # [B, T]
            lengths = real.sum(-1, keepdim=True)
            for (cols, prev), z in zip(receivers, out.receivers, strict=True):
                z = z.float().unsqueeze(1)  # [B, 1, T, d]
                a = sources[:, :prev]
                proximity = (z.abs().sum(-1) - (z - a).abs().sum(-1)).clamp(min=0)  # [B, U, T]
                importance = proximity / proximity.sum(1, keepdim=True).clamp(min=1e-12)
                per_example = (importance * real.unsqueeze(1)).sum(-1) / lengths  # [B, U]
                scores[:prev, cols] += per_example.sum(0).double().cpu().unsqueeze(1)
            n_examples += batch.size
            if on_batch is not None:
                on_batch(batch.size)
    graph.edge_scores = (scores / max(n_examples, 1)).float() * graph.real_edge_mask
    return graph
