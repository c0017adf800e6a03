"""Scoring position-aware circuits: the ten sizes over the position-aware graph, evaluation, CPR and CMD.

The protocol is the position-invariant scorer's (:mod:`mibench.circuits.scorer`), with ``N`` the position-aware
graph's edge count (non-crossing plus crossing edges, :class:`~mibench.graph.positional.PositionalGraph`):
the top ``int(k * N)`` edges by signed score (CPR) and by absolute score (CMD), at the ten fractions, are
kept and everything else is ablated with counterfactual activations (:mod:`mibench.engine.positional`). The
curves, areas and bootstrap errors are computed by the same :func:`~mibench.circuits.scorer.summarise`, so a
position-aware method's CPR/CMD are directly comparable with a position-invariant method's on the same task.

One deliberate difference: position-aware circuits are evaluated as selected, without pruning dangling
nodes (a node here is a (component, span) pair, and whether it is reachable depends on crossing edges and
spans); the realised edge count therefore equals the nominal one. NaN scores mean "unscored" and are kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import Tensor

from mibench.circuits.batches import CircuitBatch
from mibench.circuits.crossing import record_key_values
from mibench.circuits.faithfulness import CircuitEvaluation
from mibench.circuits.metrics import logit_difference
from mibench.circuits.scorer import CircuitScore, summarise
from mibench.circuits.selection import FRACTIONS, circuit_sizes
from mibench.engine.ablation import Ablation
from mibench.engine.engine import PatchingEngine
from mibench.engine.positional import PositionalMask, PositionalPatcher
from mibench.engine.residual import ResidualRunner
from mibench.graph.positional import PositionalGraph

SpanIds = Callable[[CircuitBatch], Tensor]


def select_positional(graph: PositionalGraph, n: int, *, absolute: bool) -> PositionalGraph:
    """A copy of ``graph`` with its top-``n`` edges (non-crossing and crossing together) in the circuit."""
    scores = torch.cat([graph.edge_scores.flatten(), graph.crossing_scores.flatten()])
    real = torch.cat([graph.real_edge_mask.flatten(), graph.real_crossing_mask.flatten()])
    unscored = torch.isnan(scores) & real
    candidates = (real & ~unscored).nonzero().flatten()
    keys = scores[candidates].abs() if absolute else scores[candidates]
    chosen = torch.zeros_like(real)
    chosen[candidates[torch.argsort(-keys, stable=True)[:n]]] = True
    chosen |= unscored
    circuit = graph.clone()
    split = graph.edge_scores.numel()
    circuit.edges_in_graph = chosen[:split].view_as(graph.real_edge_mask)
    circuit.crossings_in_graph = chosen[split:].view_as(graph.real_crossing_mask)
    circuit.nodes_in_graph = circuit.edges_in_graph.any(-1)
    return circuit


def positional_circuits_at_sizes(graph: PositionalGraph, *, absolute: bool) -> list[PositionalGraph]:
    return [select_positional(graph, n, absolute=absolute) for n in circuit_sizes(graph.n_edges)]


def random_positional_scores(graph: PositionalGraph, seed: int) -> PositionalGraph:
    """The random baseline on the position-aware graph: seeded standard-normal scores for every edge."""
    generator = torch.Generator().manual_seed(seed)
    out = graph.clone()
    out.edge_scores = torch.randn(graph.edge_scores.shape, generator=generator) * graph.real_edge_mask
    out.crossing_scores = torch.randn(graph.crossing_scores.shape, generator=generator) * graph.real_crossing_mask
    return out


def evaluate_positional(engine: PatchingEngine, batches: Iterable[CircuitBatch], circuits: list[PositionalGraph],
                        span_ids_of: SpanIds, *, on_batch: Callable[[int], None] | None = None) -> CircuitEvaluation:
    """Per-example logit differences of every circuit (and of the clean and counterfactual runs)."""
    patcher = PositionalPatcher(engine)
    runner = ResidualRunner(engine.adapter)
    complete = [bool((c.edges_in_graph >= c.real_edge_mask).all() and (c.crossings_in_graph >= c.real_crossing_mask).all())
                for c in circuits]
    nothing = [c.count_included_edges() == 0 for c in circuits]
    to_run = [i for i, c in enumerate(circuits) if not (complete[i] or nothing[i])]
    mask = PositionalMask.from_graphs([circuits[i] for i in to_run]) if to_run else None
    per_circuit, full, empty, ids = [], [], [], []
    with torch.no_grad():
        for batch in batches:
            positions = batch.last_positions
            cf = engine.forward(batch.cf_ids, batch.attention_mask, record=True, logit_positions=positions)
            empty.append(logit_difference(cf.logits, batch.answers, batch.cf_answers).cpu().numpy())
            clean = engine.forward(batch.clean_ids, batch.attention_mask, logit_positions=positions).logits
            full.append(logit_difference(clean, batch.answers, batch.cf_answers).cpu().numpy())
            if mask is not None:
                ablation = Ablation("patching", cf.sources, batch.attention_mask.to(engine.device))
                kv = record_key_values(runner, batch.cf_ids, batch.attention_mask)
                logits = patcher.forward(batch.clean_ids, batch.attention_mask, span_ids_of(batch), mask, ablation,
                                         kv, positions)
                ld = logit_difference(logits, batch.answers.repeat(mask.n_circuits),
                                      batch.cf_answers.repeat(mask.n_circuits)).view(mask.n_circuits, batch.size)
                per_circuit.append(ld.cpu().numpy())
            ids += batch.example_ids
            if on_batch is not None:
                on_batch(batch.size)
    full_ld = np.concatenate(full).astype(np.float64)
    empty_ld = np.concatenate(empty).astype(np.float64)
    ran = np.concatenate(per_circuit, axis=1).astype(np.float64) if per_circuit else np.zeros((0, len(ids)))
    rows = []
    for i in range(len(circuits)):
        rows.append(full_ld if complete[i] else empty_ld if nothing[i] else ran[to_run.index(i)])
    return CircuitEvaluation(circuits=np.stack(rows), full=full_ld, empty=empty_ld, example_ids=ids)


def score_positional(engine: PatchingEngine, batches: Iterable[CircuitBatch], graph: PositionalGraph,
                     span_ids_of: SpanIds, *, baseline: PositionalGraph | None = None, bootstrap: int = 1000,
                     seed: int = 0, on_batch: Callable[[int], None] | None = None) -> CircuitScore:
    """CPR (signed ranking) and CMD (absolute ranking) of a position-aware scoring, with bootstrap errors."""
    signed = positional_circuits_at_sizes(graph, absolute=False)
    absolute = positional_circuits_at_sizes(graph, absolute=True)
    extra = positional_circuits_at_sizes(baseline, absolute=True) if baseline is not None else []
    evaluation = evaluate_positional(engine, list(batches), signed + absolute + extra, span_ids_of, on_batch=on_batch)
    assert len(FRACTIONS) == len(signed)
    return summarise(evaluation, level="edge", n_items=graph.n_edges, cpr_circuits=("signed", signed),
                     cmd_circuits=("absolute", absolute),
                     baseline_circuits=(extra, baseline.n_edges) if baseline is not None else None,
                     bootstrap=bootstrap, seed=seed)
