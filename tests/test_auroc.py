"""AUROC against a known circuit: hand-computed points, the Mann-Whitney area, and the limiting cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mibench.circuits.auroc import auroc_at_sizes, confusion, roc_curve, summarise_roc
from mibench.circuits.selection import circuits_at_sizes
from mibench.graph import Graph, GraphLayout

LAYOUT = GraphLayout(n_layers=2, n_heads=2, d_model=8)


def _truth(seed: int = 0, fraction: float = 0.2) -> Graph:
    g = torch.Generator().manual_seed(seed)
    truth = Graph(LAYOUT)
    truth.edges_in_graph = (torch.rand(truth.edge_scores.shape, generator=g) < fraction) & truth.real_edge_mask
    return truth


def test_roc_area_is_the_probability_a_true_edge_outscores_another():
    truth = _truth()
    g = torch.Generator().manual_seed(1)
    scores = torch.randn(truth.edge_scores.shape, generator=g)
    auc, fpr, tpr = roc_curve(scores, truth)
    real = truth.real_edge_mask
    pos = scores[real & truth.edges_in_graph].abs()
    neg = scores[real & ~truth.edges_in_graph].abs()
    pairwise = ((pos[:, None] > neg[None, :]).double() + 0.5 * (pos[:, None] == neg[None, :]).double()).mean()
    assert auc == pytest.approx(float(pairwise), abs=1e-12)
    assert fpr[0] == tpr[0] == 0 and fpr[-1] == tpr[-1] == 1 and (np.diff(fpr) >= 0).all()
    assert auc == pytest.approx(float(np.trapezoid(tpr, fpr)), abs=1e-12)  # no ties: the curve's area


def test_perfect_inverted_and_tied_scores():
    truth = _truth(2)
    perfect = truth.edges_in_graph.float() + 0.1
    assert roc_curve(perfect, truth)[0] == 1.0
    assert roc_curve(1.1 - perfect, truth)[0] == 0.0
    assert roc_curve(torch.ones_like(perfect), truth)[0] == 0.5  # all tied: chance


def test_node_level_auroc_ranks_the_scored_nodes_against_the_known_nodes():
    """Node methods are judged on nodes: the items are the scored nodes, the positives the known circuit's."""
    truth = Graph(LAYOUT)
    names = truth.forward_names  # input, a0.h0, a0.h1, m0, a1.h0, a1.h1, m1
    truth.nodes_in_graph = torch.tensor([n in ("input", "a0.h1", "m1") for n in names])
    scores = Graph(LAYOUT, node_scores=True)
    scores.node_scores = torch.tensor([float("nan"), 0.1, -3.0, 0.2, 0.3, 0.05, 2.0])  # input unscored
    auc, fpr, tpr = roc_curve(scores.node_scores, truth)
    assert auc == 1.0 and tpr[1] == 0.5 and fpr[-1] == 1.0  # both true nodes outrank the four others
    circuits = circuits_at_sizes(scores, absolute=True)  # 6 scored nodes: sizes 0, ..., 0, 3 (50%), 6
    assert confusion(circuits[-2], truth) == (2, 1, 0, 3)  # a0.h1, m1 and a1.h0 kept
    summary = summarise_roc(circuits, scores.node_scores, truth)
    assert (summary.level, summary.n_true, summary.n_edges) == ("node", 2, 6)
    assert summary.auroc == pytest.approx(auroc_at_sizes(circuits, truth)[0])
    scores.node_scores = -scores.node_scores  # |score| is what ranks
    assert roc_curve(scores.node_scores, truth)[0] == 1.0


def test_mib_auroc_from_the_ten_sizes_by_hand():
    truth = _truth(3)
    scores = Graph(LAYOUT)
    index = torch.arange(scores.edge_scores.numel()).view_as(scores.edge_scores) / scores.edge_scores.numel()
    scores.edge_scores = truth.edges_in_graph.float() + 0.01 * index  # true edges rank first
    circuits = circuits_at_sizes(scores, absolute=True)
    area, fpr, tpr = auroc_at_sizes(circuits, truth)
    assert fpr[-1] == 1.0 and tpr[-1] == 1.0
    by_hand = 0.0
    for i in range(1, len(fpr)):
        by_hand += (fpr[i] - fpr[i - 1]) * (tpr[i] + tpr[i - 1]) / 2
    assert area == pytest.approx(by_hand)
    tp, fp, fn, tn = confusion(circuits[-1], truth)
    assert fn == 0 and tn == 0 and tp + fp == truth.n_edges
    summary = summarise_roc(circuits, scores.edge_scores, truth)
    assert summary.n_true == int(truth.edges_in_graph.sum()) and len(summary.curve_fpr) <= 200
    assert 0.0 <= summary.auroc <= 1.0 and 0.0 <= summary.auroc_full <= 1.0


def test_evaluate_reports_auroc_when_the_model_ships_its_circuit(random_task_model, tmp_path, capsys):
    import shutil

    from mibench.cli import main
    from mibench.graph.io import save_json
    from mibench.models.loading import load_model
    from mibench.results.record import read_record

    folder = tmp_path / "planted"
    shutil.copytree(random_task_model, folder)
    layout = load_model(folder).adapter.layout
    truth = Graph(layout)
    truth.edges_in_graph[:, layout.logits_backward_index] = True  # every edge into the logits
    truth.edges_in_graph &= truth.real_edge_mask
    (folder / "ground_truth").mkdir()
    save_json(truth, folder / "ground_truth" / "ioi.json")
    args = ["--task", "ioi", "--model", str(folder), "--limit", "16", "--attribution-examples", "8",
            "--bootstrap", "20", "--quiet", "--output-dir", str(tmp_path / "runs")]
    assert main(["evaluate", "--method", "eap", *args]) == 0
    assert "AUROC" in capsys.readouterr().out
    (record_file,) = (tmp_path / "runs").rglob("record.json")
    record = read_record(record_file)
    gt = record.metrics.ground_truth
    assert gt is not None and gt.file == "ground_truth/ioi.json" and gt.n_true == layout.n_forward
    assert 0 <= gt.auroc <= 1 and 0 <= gt.auroc_full <= 1 and len(gt.fpr) == 10
    assert (record_file.parent / "roc.png").stat().st_size > 1000 and record.artifacts["roc_plot"] == "roc.png"
    assert main(["evaluate", "--method", "random", *args[:-1], str(tmp_path / "other")]) == 0
    (random_record,) = (tmp_path / "other").rglob("record.json")
    assert abs(read_record(random_record).metrics.ground_truth.auroc_full - 0.5) < 0.25  # chance, roughly
    assert main(["evaluate", "--method", "eap", "--task", "mcqa", *args[2:-1], str(tmp_path / "mcqa")]) == 0
    (mcqa_record,) = (tmp_path / "mcqa").rglob("record.json")
    assert read_record(mcqa_record).metrics.ground_truth is None  # no ground truth for that task


def test_position_aware_scores_collapse_to_each_edges_largest_magnitude():
    from mibench.circuits.auroc import collapse_positions
    from mibench.graph.positional import PositionalGraph

    graph = PositionalGraph(LAYOUT, ["prefix", "N1", "END"])
    g = torch.Generator().manual_seed(4)
    graph.edge_scores = torch.randn(graph.edge_scores.shape, generator=g)
    flat = collapse_positions(graph)
    real = flat.real_edge_mask
    by_hand = torch.where(graph.real_edge_mask, graph.edge_scores.abs(), torch.zeros(())).amax(0)
    torch.testing.assert_close(flat.edge_scores[real], by_hand[real])
    assert (flat.edge_scores[~real] == 0).all()
    logits = LAYOUT.logits_backward_index  # the logits read the answer span only
    torch.testing.assert_close(flat.edge_scores[:, logits][real[:, logits]],
                               graph.edge_scores[-1, :, logits].abs()[real[:, logits]])


# ------------------------------------------------------------------------------ scikit-learn as the oracle
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_full_roc_matches_scikit_learn_with_ties_and_unscored_edges(seed):
    metrics = pytest.importorskip("sklearn.metrics")
    truth = _truth(seed, fraction=0.3)
    g = torch.Generator().manual_seed(10 + seed)
    scores = torch.randint(-3, 4, truth.edge_scores.shape, generator=g).float()  # many ties, both signs
    scores[torch.rand(scores.shape, generator=g) < 0.1] = float("nan")  # unscored: rank lowest
    auc, fpr, tpr = roc_curve(scores, truth)
    real = truth.real_edge_mask
    labels = truth.edges_in_graph[real].numpy()
    values = scores[real].abs().nan_to_num(nan=-1.0).double().numpy()
    assert auc == pytest.approx(metrics.roc_auc_score(labels, values), abs=1e-12)
    sk_fpr, sk_tpr, _ = metrics.roc_curve(labels, values, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr, atol=1e-12)
    np.testing.assert_allclose(tpr, sk_tpr, atol=1e-12)


def test_mib_auroc_is_the_trapezoid_over_the_ten_points_without_a_zero_anchor():
    """The documented end points: the whole graph gives (1, 1); no (0, 0) is prepended, so a method whose
    smallest circuit already has a true positive gets no credit for the segment from the origin."""
    metrics = pytest.importorskip("sklearn.metrics")
    truth = _truth(4, fraction=0.5)
    scores = Graph(LAYOUT)
    g = torch.Generator().manual_seed(5)
    scores.edge_scores = truth.edges_in_graph.float() * 0.5 + torch.rand(scores.edge_scores.shape, generator=g)
    circuits = circuits_at_sizes(scores, absolute=True)
    area, fpr, tpr = auroc_at_sizes(circuits, truth)
    assert (fpr[-1], tpr[-1]) == (1.0, 1.0)
    assert area == pytest.approx(metrics.auc(fpr, tpr), abs=1e-12)
    first = next(i for i, (f, t) in enumerate(zip(fpr, tpr)) if f > 0 and t > 0)  # small circuits here are empty
    area, fpr, tpr = auroc_at_sizes(circuits[first:], truth)  # so start at the first with both rates above 0
    assert tpr[0] > 0 and 0 < fpr[0] < 1
    assert area == pytest.approx(metrics.auc(fpr, tpr), abs=1e-12)
    assert area < metrics.auc([0.0, *fpr], [0.0, *tpr])  # an anchor would add the segment from the origin
