"""Scoring against a known circuit: MIB's AUROC at the ten sizes, and the full ROC of the continuous scores.

A model whose circuit is known (a planted-circuit model) ships the ground truth as an MIB circuit file
(edges marked ``in_graph``). Two numbers compare a method's edge scores with it:

* **MIB's AUROC** (``auroc``): the method's circuits at the ten sizes by *absolute* score (the same circuits
  CMD uses: top ``int(k * N)`` edges, then pruning), each giving one (FPR, TPR) point over all ``N`` real
  edges; the area is the trapezoid over consecutive points in size order, with FPR normalised by its value at
  100% (which is 1) and no (0, 0) anchor, as MIB computes it for InterpBench. MIB builds its circuits greedily
  from the logits backwards; here they are the scorer's top-n-then-prune circuits, so AUROC and CMD judge the
  same circuits.
* **The full ROC** (``auroc_full``): every threshold on ``|score|``; the area is the Mann-Whitney statistic
  (ties count one half), the probability that a random ground-truth edge outscores a random other edge.

Node-level methods are judged the same way on nodes: the items are the scored nodes (the heads and MLPs a
node method ranks), and a node is in the ground truth when the known circuit's node list has it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from mibench.graph.graph import Graph

#: Points kept when a full ROC curve is stored in a results record.
MAX_ROC_POINTS = 200


@dataclass
class RocSummary:
    auroc: float  # MIB's, from the ten sizes
    fpr: list[float]  # the ten sizes' points
    tpr: list[float]
    auroc_full: float  # from the continuous scores
    curve_fpr: list[float]  # the full curve, thinned to at most MAX_ROC_POINTS points
    curve_tpr: list[float]
    n_true: int
    n_edges: int  # items ranked: real edges, or scored nodes at node level
    level: str = "edge"


def _ranked_items(truth: Graph, node_scores: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(candidates, actual): the items that are ranked and those of them in the ground truth -- the real edges,
    or, given a node-level method's ``node_scores``, the nodes it scored."""
    if node_scores is not None:
        candidates = ~torch.isnan(node_scores)
        return candidates, truth.nodes_in_graph & candidates
    real = truth.real_edge_mask
    return real, truth.edges_in_graph & real


def _items(circuit: Graph, truth: Graph) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(candidates, predicted, actual) boolean masks over the items of ``circuit``'s level."""
    node_level = circuit.level == "node"
    candidates, actual = _ranked_items(truth, circuit.node_scores if node_level else None)
    predicted = (circuit.nodes_in_graph if node_level else circuit.edges_in_graph) & candidates
    return candidates, predicted, actual


def confusion(circuit: Graph, truth: Graph) -> tuple[int, int, int, int]:
    """(TP, FP, FN, TN) of a circuit's items (edges; scored nodes at node level) against the ground truth."""
    candidates, predicted, actual = _items(circuit, truth)
    tp = int((predicted & actual).sum())
    fp = int((predicted & ~actual).sum())
    fn = int((~predicted & actual).sum())
    tn = int(candidates.sum()) - tp - fp - fn
    return tp, fp, fn, tn


def auroc_at_sizes(circuits: list[Graph], truth: Graph) -> tuple[float, list[float], list[float]]:
    """MIB's AUROC from circuits at increasing sizes (the last is the whole graph)."""
    fpr, tpr = [], []
    for circuit in circuits:
        tp, fp, fn, tn = confusion(circuit, truth)
        tpr.append(tp / (tp + fn) if tp + fn else 0.0)
        fpr.append(fp / (fp + tn) if fp + tn else 0.0)
    scale = fpr[-1] or 1.0
    x = np.asarray(fpr) / scale
    y = np.asarray(tpr)
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))
    return area, fpr, tpr


def roc_curve(scores: torch.Tensor, truth: Graph) -> tuple[float, np.ndarray, np.ndarray]:
    """AUC, FPR and TPR over every threshold on ``|score|``: of edge scores ``[F, B]`` (NaN scores rank lowest),
    or of node scores ``[F]`` (unscored nodes are not ranked)."""
    candidates, actual = _ranked_items(truth, scores if scores.dim() == 1 else None)
    values = scores[candidates].abs().double().nan_to_num(nan=-1.0).numpy()
    labels = actual[candidates].numpy()
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan"), np.array([0.0, 1.0]), np.array([0.0, 1.0])
    order = np.argsort(-values, kind="stable")
    sorted_values, sorted_labels = values[order], labels[order]
    distinct = np.r_[np.nonzero(np.diff(sorted_values))[0], len(values) - 1]  # last index of each threshold
    tps = np.cumsum(sorted_labels)[distinct]
    fps = (distinct + 1) - tps
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    ranks = _average_ranks(values)
    auc = float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))
    return auc, fpr, tpr


def summarise_roc(circuits: list[Graph], scores: torch.Tensor, truth: Graph) -> RocSummary:
    """Both AUROCs of one method's circuits at the ten sizes and its scores (edge ``[F, B]`` or node ``[F]``)."""
    auroc, fpr, tpr = auroc_at_sizes(circuits, truth)
    full, curve_fpr, curve_tpr = roc_curve(scores, truth)
    keep = np.unique(np.linspace(0, len(curve_fpr) - 1, min(len(curve_fpr), MAX_ROC_POINTS)).round().astype(int))
    candidates, _, actual = _items(circuits[-1], truth)
    return RocSummary(auroc=auroc, fpr=fpr, tpr=tpr, auroc_full=full, curve_fpr=curve_fpr[keep].tolist(),
                      curve_tpr=curve_tpr[keep].tolist(), n_true=int(actual.sum()), n_edges=int(candidates.sum()),
                      level=circuits[-1].level)


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their average rank (ascending values)."""
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2)[inverse]


def collapse_positions(graph) -> Graph:
    """A position-aware graph's scores on MIB's position-invariant edges: each edge's largest ``|score|`` over
    the spans it appears at, so position-aware methods are ranked against the same edge-level ground truth.

    Crossing edges (a span's queries reading an earlier span's keys or values) name no sender and have no
    position-invariant counterpart; the sender->head<k|v> edge at the key's own span carries what is sent.
    """
    flat = Graph(graph.layout)
    scores = graph.edge_scores.abs().masked_fill(~graph.real_edge_mask, float("-inf")).amax(0)
    flat.edge_scores = torch.where(flat.real_edge_mask, scores, torch.zeros_like(scores))
    return flat
