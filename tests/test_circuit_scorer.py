"""The circuit scorer: sizes, selection, faithfulness, CPR/CMD closed forms and bootstrap errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mibench.circuits.areas import area_weights, bootstrap_replicate_means, cmd, cpr, faithfulness
from mibench.circuits.attribution import attribute
from mibench.circuits.faithfulness import evaluate_circuits
from mibench.circuits.metrics import logit_difference
from mibench.circuits.scorer import score_attribution, score_circuits
from mibench.circuits.selection import FRACTIONS, circuit_sizes, circuits_at_sizes, select_circuit
from mibench.engine import CircuitMask
from mibench.engine.ablation import Ablation
from mibench.graph.graph import Graph
from mibench.graph.layout import GraphLayout
from tests.test_circuit_methods import _setup

GPT2_LAYOUT = GraphLayout(n_layers=12, n_heads=12, d_model=768)


def test_area_weights_are_mibs_closed_form():
    expected = [0.0005, 0.002, 0.004, 0.0075, 0.02, 0.04, 0.075, 0.2, 0.4, 0.25]
    np.testing.assert_allclose(area_weights(), expected, atol=1e-12)
    assert area_weights().sum() == pytest.approx(0.999)
    f = np.linspace(0.1, 1.0, 10)
    assert cpr(f) == pytest.approx(np.trapezoid(f, FRACTIONS))


def test_random_ranking_closed_form():
    # a random circuit is unfaithful (f ~ 0) until it is the whole model (f = 1)
    f = np.array([0.0] * 9 + [1.0])
    assert cmd(f) == pytest.approx(0.749)
    assert cpr(f) == pytest.approx(0.25)
    assert cmd(np.ones(10)) == 0.0 and cpr(np.ones(10)) == pytest.approx(0.999)


def test_sizes_match_mib():
    assert circuit_sizes(32491) == [32, 64, 162, 324, 649, 1624, 3249, 6498, 16245, 32491]
    assert circuit_sizes(157) == [0, 0, 0, 1, 3, 7, 15, 31, 78, 157]
    assert circuit_sizes(1108) == [1, 2, 5, 11, 22, 55, 110, 221, 554, 1108]


def test_signed_and_absolute_selection_and_pruning():
    layout = GraphLayout(n_layers=2, n_heads=2, d_model=4)
    graph = Graph(layout)
    logits = layout.logits_backward_index
    mlp1 = layout.mlp_backward_index(1)
    m1 = layout.mlp_forward_index(1)
    graph.edge_scores[0, logits] = 3.0  # input -> logits
    graph.edge_scores[m1, logits] = -5.0  # m1 -> logits: large but negative
    graph.edge_scores[0, mlp1] = 1.0  # input -> m1
    signed = select_circuit(graph, 2, absolute=False)
    # the top two signed are input -> logits and input -> m1; the latter dangles without m1 -> logits,
    # so pruning removes it
    assert signed.edges_in_graph[0, logits] and not signed.edges_in_graph[0, mlp1]
    assert signed.count_included_edges() == 1
    # |score| ranks m1 -> logits first, but alone m1 has no input: pruned; with input -> m1 it stays
    assert select_circuit(graph, 2, absolute=True).count_included_edges() == 1
    absolute = select_circuit(graph, 3, absolute=True)
    assert absolute.edges_in_graph[m1, logits] and absolute.edges_in_graph[0, mlp1]
    assert absolute.count_included_edges() == 3
    graph.edge_scores[0, logits] = float("nan")  # unscored: always kept
    assert select_circuit(graph, 0, absolute=True).edges_in_graph[0, logits]


def test_node_and_neuron_level_selection():
    layout = GraphLayout(n_layers=2, n_heads=2, d_model=4)
    graph = Graph(layout, node_scores=True)
    graph.node_scores = torch.arange(layout.n_forward, dtype=torch.float32)
    circuit = select_circuit(graph, 3, absolute=False)
    assert circuit.nodes_in_graph.tolist() == [False] * (layout.n_forward - 3) + [True] * 3
    kept_sources = circuit.edges_in_graph.any(1)
    assert torch.equal(kept_sources, circuit.nodes_in_graph)
    neurons = Graph(layout, neuron_level=True)
    neurons.neuron_scores = torch.zeros(layout.n_forward, 4)
    neurons.neuron_scores[2, 1] = 1.0
    neurons.neuron_scores[4, 3] = -2.0
    circuit = select_circuit(neurons, 2, absolute=True)
    assert circuit.neurons_in_graph.sum() == 2 and circuit.nodes_in_graph.nonzero().flatten().tolist() == [2, 4]
    assert circuit.weighted_edge_count() == pytest.approx(circuit.edges_in_graph.sum().item() / 4)


def test_full_circuit_is_faithful_and_empty_is_not():
    _, engine, data = _setup("llama")
    full, empty = Graph(engine.layout), Graph(engine.layout)
    full.reset(empty=False)
    result = evaluate_circuits(engine, [data], [full, empty])
    np.testing.assert_allclose(result.circuits[0], result.full, rtol=1e-10, atol=1e-10)
    np.testing.assert_array_equal(result.circuits[1], result.empty)
    f = faithfulness(result.circuits.mean(1), result.full.mean(), result.empty.mean())
    np.testing.assert_allclose(f, [1.0, 0.0], atol=1e-9)


def test_scorer_matches_a_hand_computation():
    _, engine, data = _setup("gpt2", batch=5)
    graph = attribute(engine, [data])
    score = score_attribution(engine, [data], graph, bootstrap=0)
    ablation = Ablation.patching(engine, data.cf_ids, data.attention_mask)

    def mean_ld(keep_graph) -> float:  # one circuit at a time, no stacking, no dedupe
        with torch.no_grad():
            out = engine.forward(data.clean_ids, data.attention_mask, mask=CircuitMask.from_graph(keep_graph),
                                 ablation=ablation, logit_positions=data.last_positions)
        return float(logit_difference(out.logits, data.answers, data.cf_answers).mean())

    full_graph, empty_graph = Graph(engine.layout), Graph(engine.layout)
    full_graph.reset(empty=False)
    m_full, m_empty = mean_ld(full_graph), mean_ld(empty_graph)
    for absolute, curve in ((False, score.signed), (True, score.absolute)):
        f = [(mean_ld(c) - m_empty) / (m_full - m_empty) for c in circuits_at_sizes(graph, absolute=absolute)]
        np.testing.assert_allclose(curve.faithfulness, f, rtol=1e-5, atol=1e-6)
    expected_cpr = np.trapezoid(score.signed.faithfulness, FRACTIONS)
    expected_cmd = np.trapezoid(np.abs(1 - np.asarray(score.absolute.faithfulness)), FRACTIONS)
    assert score.cpr == pytest.approx(expected_cpr) and score.cmd == pytest.approx(expected_cmd)
    assert score.full_logit_difference == pytest.approx(m_full) and score.empty_logit_difference == pytest.approx(m_empty)


def test_bootstrap_is_seeded_and_matches_the_mean_standard_error():
    rng = np.random.default_rng(0)
    values = rng.normal(size=400)
    reps = bootstrap_replicate_means(values, 2000, seed=1)
    assert np.std(reps, ddof=1) == pytest.approx(values.std(ddof=1) / np.sqrt(400), rel=0.1)
    np.testing.assert_array_equal(reps, bootstrap_replicate_means(values, 2000, seed=1))


def test_scorer_reports_standard_errors_and_baseline():
    _, engine, data = _setup("gpt2", batch=6)
    graph = attribute(engine, [data])
    from mibench.methods.random_baseline.method import random_scores

    score = score_attribution(engine, [data], graph, baseline=random_scores(engine.layout, "edge", 0), bootstrap=200)
    assert score.cpr_stderr > 0 and score.cmd_stderr > 0
    assert score.baseline is not None and score.baseline.faithfulness[-1] == pytest.approx(1.0)
    again = score_attribution(engine, [data], graph, bootstrap=200)
    assert again.cpr_stderr == score.cpr_stderr
    # the effect's error: the same resamples applied to each example's full - empty difference
    effect = np.asarray(score.per_example["full"]) - np.asarray(score.per_example["empty"])
    expected = np.std(bootstrap_replicate_means(effect, 200, seed=0), ddof=1)
    assert score.effect_stderr == pytest.approx(float(expected), rel=1e-9) and score.effect_stderr > 0
    assert np.isnan(score_attribution(engine, [data], graph, bootstrap=0).effect_stderr)


def test_multiple_circuit_mode_sorts_by_size_and_ends_at_the_full_model():
    """Nine submitted circuits equal to the absolute ranking's first nine (shuffled) give exactly the
    absolute curve; CPR and CMD are both areas of that one curve."""
    _, engine, data = _setup("gpt2", batch=5)
    graph = attribute(engine, [data])
    reference = score_attribution(engine, [data], graph, bootstrap=0)
    nine = circuits_at_sizes(graph, absolute=True)[:-1]
    counts = [c.weighted_edge_count() for c in nine]
    assert counts == sorted(counts)
    for a, b in zip(nine, nine[1:]):  # equal sizes are identical circuits (empty after pruning): no ambiguity
        if a.weighted_edge_count() == b.weighted_edge_count():
            assert torch.equal(a.edges_in_graph, b.edges_in_graph)
    assert len(set(counts)) >= 3
    shuffled = [nine[i] for i in (4, 0, 8, 2, 6, 1, 7, 3, 5)]
    score = score_circuits(engine, [data], shuffled, bootstrap=50)
    np.testing.assert_allclose(score.absolute.faithfulness, reference.absolute.faithfulness, rtol=1e-6, atol=1e-7)
    assert score.absolute.faithfulness[-1] == 1.0  # the complete model, evaluated as the clean run
    assert score.absolute.edge_counts == reference.absolute.edge_counts
    assert score.signed.ranking == score.absolute.ranking == "submitted"
    assert score.cmd == pytest.approx(reference.cmd)
    assert score.cpr == pytest.approx(np.trapezoid(score.absolute.faithfulness, FRACTIONS))
    assert score.cpr_stderr > 0 and score.cmd_stderr > 0
    with pytest.raises(ValueError, match="exactly 9 circuits"):
        score_circuits(engine, [data], nine[:8])
