"""Exact activation patching: the true effect of ablating each edge (or node) alone.

``score(e) = mean over examples of  LD(full model) - LD(model with only e ablated)`` -- the quantity EAP
approximates to first order, so it is both a method and the oracle EAP is tested against. Many
single-edge ablations run in one forward: each row block of a stacked mask ablates a different edge
(the engine's per-row masks), with ``items_per_forward`` circuits per call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from mibench.circuits.attribution import Level, ablation_for_batch
from mibench.circuits.batches import CircuitBatch
from mibench.circuits.metrics import logit_difference
from mibench.engine.ablation import Ablation
from mibench.engine.engine import PatchingEngine
from mibench.engine.masks import CircuitMask
from mibench.graph.graph import Graph


def exact_patching(
    engine: PatchingEngine,
    batches: Iterable[CircuitBatch],
    *,
    level: Level = "edge",
    ablation: str = "patching",
    reference: Ablation | None = None,
    items_per_forward: int = 64,
    on_batch: Callable[[int], None] | None = None,
) -> Graph:
    """Scores of every real edge (``level="edge"``) or source node (``"node"``), averaged over examples."""
    if level not in ("edge", "node"):
        raise ValueError(f"exact patching scores edges or nodes, not {level!r} (one forward per neuron is too many)")
    layout = engine.layout
    graph = Graph(layout, node_scores=level == "node")
    real = graph.real_edge_mask
    if level == "edge":
        items = [tuple(ix) for ix in real.nonzero().tolist()]
    else:
        items = [(u,) for u in range(layout.n_forward)]
    totals = torch.zeros(len(items), dtype=torch.float64)
    n_examples = 0
    with torch.no_grad():
        for batch in batches:
            batch_ablation = ablation_for_batch(engine, batch, ablation, reference)
            positions = batch.last_positions
            clean = engine.forward(batch.clean_ids, batch.attention_mask, logit_positions=positions).logits
            clean_ld = logit_difference(clean, batch.answers, batch.cf_answers)
            for start in range(0, len(items), items_per_forward):
                chunk = items[start : start + items_per_forward]
                keep = torch.ones(len(chunk), layout.n_forward, layout.n_backward)
                for c, item in enumerate(chunk):
                    if level == "edge":
                        keep[c, item[0], item[1]] = 0.0
                    else:
                        keep[c, item[0], :] = 0.0
                out = engine.forward(batch.clean_ids, batch.attention_mask, mask=CircuitMask(keep),
                                     ablation=batch_ablation, logit_positions=positions)
                ld = logit_difference(out.logits, batch.answers, batch.cf_answers).view(len(chunk), batch.size)
                totals[start : start + len(chunk)] += (clean_ld.unsqueeze(0) - ld).sum(1).double().cpu()
            n_examples += batch.size
            if on_batch is not None:
                on_batch(batch.size)
    means = (totals / max(n_examples, 1)).float()
    if level == "edge":
        rows, cols = zip(*items, strict=True)
        graph.edge_scores[list(rows), list(cols)] = means
    else:
        graph.node_scores = means
    return graph
