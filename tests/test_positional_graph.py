"""The position-aware graph: sizes per model and schema, names, and its JSON file format."""

from __future__ import annotations

import json

import pytest
import torch

from mibench.data.registry import get_card
from mibench.data.span_schema import span_names
from mibench.errors import CircuitFileError
from mibench.graph import Graph
from mibench.graph.positional import PositionalGraph, positional_counts
from tests.test_edge_counts import PUBLISHED

IOI_SPANS = span_names(get_card("ioi").span_schema)  # 8 spans


@pytest.mark.parametrize("model", list(PUBLISHED))
def test_sizes_follow_the_closed_form_for_the_published_models(model):
    make_config, mib_edges, _, _ = PUBLISHED[model]
    layout = Graph.from_hf_config(make_config()).layout
    graph = PositionalGraph(layout, IOI_SPANS)
    assert graph.counts() == positional_counts(layout, len(IOI_SPANS))
    n_spans = len(IOI_SPANS)
    assert graph.n_noncrossing == n_spans * mib_edges - (n_spans - 1) * layout.n_forward
    assert graph.n_crossing == layout.n_layers * layout.n_heads * 2 * n_spans * (n_spans - 1) // 2
    one_span = PositionalGraph(layout, ["all"])
    assert one_span.n_edges == mib_edges and one_span.n_crossing == 0  # a single span is MIB's graph


def test_gpt2_ioi_counts():
    layout = Graph.from_hf_config(PUBLISHED["gpt2"][0]()).layout
    assert PositionalGraph(layout, IOI_SPANS).counts() == {
        "spans": 8, "nodes": 1257, "non_crossing_edges": 258_829, "crossing_edges": 8_064, "edges": 266_893}


def test_logits_read_the_last_span_and_keys_only_later_queries():
    layout = Graph.from_hf_config(PUBLISHED["gpt2"][0]()).layout
    graph = PositionalGraph(layout, ["a", "b", "c"])
    logits = layout.logits_backward_index
    assert not graph.real_edge_mask[:2, :, logits].any() and graph.real_edge_mask[2, :, logits].all()
    assert graph.edge_name(2, 0, logits) == "input->logits@c"
    with pytest.raises(ValueError):
        graph.edge_name(0, 0, logits)
    assert graph.crossing_name(3, 5, 0, 0, 2) == "a3.h5<k>:a->c"
    assert not graph.real_crossing_mask[..., 1, 1].any() and not graph.real_crossing_mask[..., 2, 0].any()
    assert graph.crossing_index("a3.h5<v>:a->b") == (3, 5, 1, 0, 1)
    assert graph.edge_index("a0.h1->m2@b") == (1, *Graph(layout).edge_index("a0.h1->m2"))
    for bad, message in (("a0.h1->m2", "parent->child@span"), ("input->logits@a", "only the last span"),
                         ("a3.h5<k>:c->a", "later spans"), ("a3.h5<q>:a->b", "of the form"),
                         ("a3.h5<k>:a->bb", "unknown span")):
        with pytest.raises(Exception, match=message):
            graph.crossing_index(bad) if "<" in bad and ":" in bad else graph.edge_index(bad)


def test_json_round_trip_and_errors(tmp_path):
    layout = Graph.from_hf_config(PUBLISHED["gpt2"][0]()).layout
    small = type(layout)(n_layers=2, n_heads=3, d_model=8)
    graph = PositionalGraph(small, ["x", "y", "END"])
    g = torch.Generator().manual_seed(0)
    graph.edge_scores = torch.randn(graph.edge_scores.shape, generator=g) * graph.real_edge_mask
    graph.edges_in_graph = (torch.rand(graph.edge_scores.shape, generator=g) < 0.3) & graph.real_edge_mask
    graph.crossing_scores = torch.randn(graph.crossing_scores.shape, generator=g) * graph.real_crossing_mask
    graph.crossings_in_graph = (torch.rand(graph.crossing_scores.shape, generator=g) < 0.5) & graph.real_crossing_mask
    graph.nodes_in_graph[1, 3] = True
    path = tmp_path / "circuit.json"
    graph.save_json(path)
    again = PositionalGraph.load_json(path, small)
    assert again.spans == graph.spans and again.counts() == graph.counts()
    for name in ("edge_scores", "edges_in_graph", "crossing_scores", "crossings_in_graph", "nodes_in_graph"):
        assert torch.equal(getattr(again, name), getattr(graph, name)), name
    data = json.loads(path.read_text())
    assert len(data["edges"]) == graph.n_noncrossing and len(data["crossing_edges"]) == graph.n_crossing

    def broken(change, field):
        raw = json.loads(path.read_text())
        change(raw)
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(raw))
        with pytest.raises(CircuitFileError) as info:
            PositionalGraph.load_json(bad, small)
        assert info.value.field == field and str(bad) in str(info.value)

    broken(lambda r: r["cfg"].update(spans=["x", "x"]), "cfg.spans")
    broken(lambda r: r["edges"].update({"input->logits@x": {"score": 1.0, "in_graph": True}}),
           "edges['input->logits@x']")
    broken(lambda r: r["crossing_edges"].update({"a0.h0<k>:y->x": {"score": 1.0, "in_graph": False}}),
           "crossing_edges['a0.h0<k>:y->x']")
    broken(lambda r: r["edges"].update({"input->m0@x": {"score": "high", "in_graph": True}}), "edges['input->m0@x']")
    with pytest.raises(CircuitFileError, match="not this model's"):
        PositionalGraph.load_json(path, layout)
