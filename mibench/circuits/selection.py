"""Circuits from scores: MIB's ten sizes, top-n selection (signed or absolute) and pruning.

* Sizes: ``n_k = int(k * N)`` for ``k`` in :data:`FRACTIONS` (float product, then truncation, as MIB),
  where ``N`` is the number of real edges, or of scored nodes / neurons at those levels.
* Ranking: signed scores (descending) for CPR, absolute scores for CMD. Ties keep index order (a stable
  sort), so results do not depend on the platform's sort.
* Edge level: the top-n edges, then :meth:`Graph.prune` to the connected part (a true fixpoint, unlike
  the reference code -- see its docstring), so a realised circuit can be smaller than ``n``.
* Node level: the top-n nodes keep all their outgoing edges; every other node's outputs are ablated.
* Neuron level: the top-n (node, dimension) pairs; a node with any selected dimension keeps all its
  outgoing edges, and its unselected dimensions are ablated on all of them.
* NaN scores mean "unscored": those items are always kept and not counted in ``N`` (node/neuron level).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mibench.graph.graph import Graph

FRACTIONS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)


def circuit_sizes(n_items: int, fractions: tuple[float, ...] = FRACTIONS) -> list[int]:
    """``int(k * n_items)`` per fraction (GPT-2 edges: 32, 64, 162, 324, 649, 1624, 3249, 6498, 16245, 32491)."""
    return [int(k * n_items) for k in fractions]


def n_scored_items(graph: Graph) -> int:
    """``N`` of the size formula at the graph's level."""
    if graph.level == "edge":
        return graph.n_edges
    scores = graph.node_scores if graph.level == "node" else graph.neuron_scores
    return int((~torch.isnan(scores)).sum())


def _top(scores: Tensor, candidates: Tensor, n: int, absolute: bool) -> Tensor:
    """bool mask of the ``n`` best candidates (flattened order breaks ties)."""
    flat = scores.flatten()
    idx = candidates.flatten().nonzero().flatten()
    keys = flat[idx].abs() if absolute else flat[idx]
    order = torch.argsort(-keys, stable=True)[:n]
    chosen = torch.zeros_like(flat, dtype=torch.bool)
    chosen[idx[order]] = True
    return chosen.view_as(scores)


def _edges_from_nodes(graph: Graph, nodes: Tensor) -> Tensor:
    """Real edges whose source is kept and whose destination slot belongs to a kept node (or the logits)."""
    slot_present = torch.cat([nodes, nodes.new_ones(1)])[graph.backward_owner]
    return graph.real_edge_mask & nodes.unsqueeze(1) & slot_present.unsqueeze(0)


def select_circuit(graph: Graph, n: int, *, absolute: bool) -> Graph:
    """A copy of ``graph`` with its top-``n`` items (by signed or absolute score) in the circuit."""
    circuit = graph.clone()
    circuit.reset(empty=True)
    level = graph.level
    if level == "edge":
        scores = graph.edge_scores
        unscored = torch.isnan(scores) & graph.real_edge_mask
        chosen = _top(scores, graph.real_edge_mask & ~unscored, n, absolute)
        circuit.edges_in_graph = chosen | unscored
        circuit.prune()
    elif level == "node":
        scores = graph.node_scores
        unscored = torch.isnan(scores)
        nodes = _top(scores, ~unscored, n, absolute) | unscored
        circuit.nodes_in_graph = nodes
        circuit.edges_in_graph = _edges_from_nodes(graph, nodes)
    else:
        scores = graph.neuron_scores
        unscored = torch.isnan(scores)
        neurons = _top(scores, ~unscored, n, absolute) | unscored
        nodes = neurons.any(dim=1)
        circuit.neurons_in_graph = neurons
        circuit.nodes_in_graph = nodes
        circuit.edges_in_graph = _edges_from_nodes(graph, nodes)
    return circuit


def circuits_at_sizes(graph: Graph, *, absolute: bool, fractions: tuple[float, ...] = FRACTIONS) -> list[Graph]:
    """One circuit per size of the benchmark (the last, at 100%, is the whole model)."""
    return [select_circuit(graph, n, absolute=absolute) for n in circuit_sizes(n_scored_items(graph), fractions)]
