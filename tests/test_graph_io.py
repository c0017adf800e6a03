"""Circuit files: MIB's JSON and .pt formats, safetensors, validation, safety and atomic writes."""

from __future__ import annotations

import builtins
import io
import json
import math
import os
import pickle
from pathlib import Path
from typing import Any, Callable

import pytest
import torch

from mibench.errors import CircuitFileError
from mibench.graph import Graph, GraphLayout, load_circuit, load_json, load_pt, save_circuit, save_json, save_pt
from mibench.io_utils import atomic_path, atomic_write_bytes, atomic_write_text

LAYOUT = GraphLayout(n_layers=3, n_heads=2, d_model=8)
TENSOR_ATTRS = ("edge_scores", "edges_in_graph", "nodes_in_graph", "node_scores", "neurons_in_graph", "neuron_scores")
FORMATS = (".json", ".pt", ".safetensors")
LEVELS = ("edge", "node", "neuron")


def random_graph(level: str, seed: int = 0, layout: GraphLayout = LAYOUT) -> Graph:
    graph = Graph(layout, node_scores=level == "node", neuron_level=level == "neuron")
    gen = torch.Generator().manual_seed(seed)

    def scores(*shape: int) -> torch.Tensor:
        values = torch.randn(*shape, generator=gen)
        values[torch.rand(*shape, generator=gen) < 0.15] = math.nan  # unscored entries
        return values

    def mask(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=gen) < 0.4

    n_forward, n_backward = layout.n_forward, layout.n_backward
    graph.edge_scores = torch.where(graph.real_edge_mask, scores(n_forward, n_backward), 0.0)
    graph.edges_in_graph = mask(n_forward, n_backward) & graph.real_edge_mask
    graph.nodes_in_graph = mask(n_forward)
    if level == "node":
        graph.node_scores = scores(n_forward)
    if level == "neuron":
        graph.neurons_in_graph = mask(n_forward, layout.d_model)
        graph.neuron_scores = scores(n_forward, layout.d_model)
    return graph


def assert_same_graph(a: Graph, b: Graph) -> None:
    assert a.layout == b.layout
    assert a.level == b.level
    for attr in TENSOR_ATTRS:
        x, y = getattr(a, attr), getattr(b, attr)
        assert (x is None) == (y is None), attr
        if x is not None:  # exact equality, NaN positions included
            torch.testing.assert_close(x, y, rtol=0, atol=0, equal_nan=True, msg=attr)


# ------------------------------------------------------------------ round trips
@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("suffix", FORMATS)
def test_round_trip(tmp_path: Path, level: str, suffix: str) -> None:
    graph = random_graph(level, seed=len(level) + len(suffix))
    assert torch.isnan(graph.edge_scores[graph.real_edge_mask]).any()  # NaNs are exercised
    path = tmp_path / f"circuit{suffix}"
    save_circuit(graph, path)
    loaded = load_circuit(path, layout=LAYOUT)
    assert_same_graph(graph, loaded)
    assert sorted(os.listdir(tmp_path)) == [path.name]  # no temp files left behind


@pytest.mark.parametrize("level", LEVELS)
def test_chain_json_pt_safetensors(tmp_path: Path, level: str) -> None:
    graph = random_graph(level, seed=7)
    current = graph
    for suffix in (".json", ".pt", ".safetensors", ".json"):
        path = tmp_path / f"step{suffix}"
        save_circuit(current, path)
        current = load_circuit(path)
    assert_same_graph(graph, current)


def test_parallel_layout_round_trip(tmp_path: Path) -> None:
    layout = GraphLayout(n_layers=2, n_heads=3, d_model=4, parallel_attn_mlp=True)
    graph = random_graph("edge", layout=layout)
    for suffix in FORMATS:
        save_circuit(graph, tmp_path / f"p{suffix}")
        assert_same_graph(graph, load_circuit(tmp_path / f"p{suffix}"))


def test_saved_json_has_mib_structure(tmp_path: Path) -> None:
    graph = random_graph("neuron")
    path = tmp_path / "c.json"
    save_json(graph, path)
    text = path.read_text()
    assert "NaN" in text  # unscored values use Python's JSON dialect, as MIB's json.dump does
    data = json.loads(text)
    assert list(data) == ["cfg", "nodes", "edges"]
    assert data["cfg"] == {"n_layers": 3, "n_heads": 2, "parallel_attn_mlp": False, "d_model": 8}
    assert list(data["nodes"]) == graph.node_names()  # includes logits, last
    assert data["nodes"]["logits"] == {"in_graph": True}
    assert set(data["nodes"]["a0.h0"]) == {"in_graph", "neurons", "neurons_scores"}
    assert len(data["nodes"]["a0.h0"]["neurons"]) == 8
    assert list(data["edges"]) == graph.edge_names()
    f, b = graph.edge_index("a0.h1->m2")
    entry = data["edges"]["a0.h1->m2"]
    assert entry["in_graph"] == bool(graph.edges_in_graph[f, b])
    assert entry["score"] == pytest.approx(float(graph.edge_scores[f, b]), nan_ok=True)


def test_saved_pt_is_mib_dict(tmp_path: Path) -> None:
    graph = random_graph("node")
    path = tmp_path / "c.pt"
    save_pt(graph, path)
    data = torch.load(path, weights_only=True)  # a plain dict: loads without code execution
    assert set(data) == {"cfg", "src_nodes", "dst_nodes", "edges_scores", "edges_in_graph", "nodes_in_graph",
                         "nodes_scores"}
    assert data["src_nodes"] == graph.forward_names and data["dst_nodes"] == graph.backward_names
    assert data["edges_scores"].shape == (LAYOUT.n_forward, LAYOUT.n_backward)
    assert data["edges_scores"].dtype == torch.float32 and data["edges_in_graph"].dtype == torch.bool


def test_non_edge_scores_are_stored_as_zero(tmp_path: Path) -> None:
    graph = Graph(LAYOUT)
    graph.edge_scores.fill_(3.0)  # attribution code may leave junk off the real-edge mask
    save_pt(graph, tmp_path / "c.pt")
    loaded = load_pt(tmp_path / "c.pt")
    assert (loaded.edge_scores[~loaded.real_edge_mask] == 0).all()
    assert (loaded.edge_scores[loaded.real_edge_mask] == 3.0).all()


# ------------------------------------------------------------------ hand-written MIB JSON
MIB_EXAMPLE = """{
  "cfg": {"n_layers": 2, "n_heads": 2, "parallel_attn_mlp": false, "d_model": 4},
  "nodes": {
    "input": {"in_graph": true, "score": 0.5},
    "a0.h1": {"in_graph": true, "score": -1.25},
    "m1": {"in_graph": false, "score": NaN},
    "logits": {"in_graph": true}
  },
  "edges": {
    "input->a0.h1<k>": {"score": 0.75, "in_graph": true},
    "a0.h1->m1": {"score": -2.0, "in_graph": true},
    "a0.h1->logits": {"score": NaN, "in_graph": false},
    "m1->logits": {"score": 3, "in_graph": true}
  }
}"""


def test_hand_written_mib_json_loads(tmp_path: Path) -> None:
    path = tmp_path / "ioi_gpt2" / "importances.json"
    path.parent.mkdir()
    path.write_text(MIB_EXAMPLE)
    graph = load_circuit(path)
    assert graph.layout == GraphLayout(n_layers=2, n_heads=2, d_model=4)
    assert graph.level == "node"

    def edge(name: str) -> tuple[float, bool]:
        f, b = graph.edge_index(name)
        return float(graph.edge_scores[f, b]), bool(graph.edges_in_graph[f, b])

    assert edge("input->a0.h1<k>") == (0.75, True)
    assert edge("a0.h1->m1") == (-2.0, True)
    assert edge("m1->logits") == (3.0, True)
    score, member = edge("a0.h1->logits")
    assert math.isnan(score) and not member
    assert edge("input->m0") == (0.0, False)  # edges not listed: score 0, not in the graph
    assert graph.count_included_edges() == 3

    node_scores = graph.node_scores
    assert node_scores[graph.forward_index("input")] == 0.5
    assert node_scores[graph.forward_index("a0.h1")] == -1.25
    assert torch.isnan(node_scores[graph.forward_index("m1")])
    assert torch.isnan(node_scores[graph.forward_index("a1.h0")])  # not listed: unscored
    assert graph.nodes_in_graph.tolist() == [True, False, True, False, False, False, False]


def test_json_null_scores_read_as_unscored(tmp_path: Path) -> None:
    data = json.loads(MIB_EXAMPLE.replace("NaN", "null"))
    path = tmp_path / "c.json"
    path.write_text(json.dumps(data))
    graph = load_json(path)
    assert math.isnan(float(graph.edge_scores[graph.edge_index("a0.h1->logits")]))


# ------------------------------------------------------------------ malformed files
def mib_dict() -> dict[str, Any]:
    return json.loads(MIB_EXAMPLE.replace("NaN", "0.0"))


def edit_json(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        data = mib_dict()
        edit(data)
        path = tmp_path / "bad_circuit.json"
        path.write_text(json.dumps(data))
        return path

    return make


def raw_file(name: str, content: bytes) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        path = tmp_path / name
        path.write_bytes(content)
        return path

    return make


def _set(container_path: list[Any], value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        target = data
        for key in container_path[:-1]:
            target = target[key]
        target[container_path[-1]] = value

    return edit


def _delete(container_path: list[Any]) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        target = data
        for key in container_path[:-1]:
            target = target[key]
        del target[container_path[-1]]

    return edit


JSON_CASES = {
    # case: (file maker, field expected in the message, another phrase expected in the message)
    "not json": (raw_file("bad_circuit.json", b"{not json"), None, "not valid JSON"),
    "top level list": (raw_file("bad_circuit.json", b"[1, 2]"), None, "got list"),
    "missing edges": (edit_json(_delete(["edges"])), "field edges", "missing"),
    "typo top key": (edit_json(lambda d: d.update(edge=d.pop("edges"))), "field edge", "'edges'"),
    "cfg missing n_heads": (edit_json(_delete(["cfg", "n_heads"])), "cfg.n_heads", "missing"),
    "cfg n_layers string": (edit_json(_set(["cfg", "n_layers"], "2")), "cfg.n_layers", "positive integer"),
    "cfg parallel int": (edit_json(_set(["cfg", "parallel_attn_mlp"], 0)), "cfg.parallel_attn_mlp", "true/false"),
    "cfg not object": (edit_json(_set(["cfg"], [2, 2])), "field cfg", "expected an object"),
    "unknown node": (edit_json(_set(["nodes", "a0.h9"], {"in_graph": True})), 'nodes["a0.h9"]', "did you mean"),
    "node missing in_graph": (edit_json(_set(["nodes", "a0.h1"], {"score": 1.0})), 'nodes["a0.h1"].in_graph',
                              "missing"),
    "node typo key": (edit_json(_set(["nodes", "a0.h1", "scores"], 1.0)), 'nodes["a0.h1"].scores', "'score'"),
    "node score string": (edit_json(_set(["nodes", "a0.h1", "score"], "high")), 'nodes["a0.h1"].score',
                          "expected a number"),
    "neurons wrong length": (edit_json(_set(["nodes", "m1", "neurons"], [True] * 3)), 'nodes["m1"].neurons',
                             "expected a list of 4"),
    "neurons not bool": (edit_json(_set(["nodes", "m1", "neurons"], [True, 1, True, True])),
                         'nodes["m1"].neurons[1]', "true/false"),
    "unknown edge": (edit_json(_set(["edges", "input->a0.h1<x>"], {"score": 1.0, "in_graph": True})),
                     'edges["input->a0.h1<x>"]', "did you mean"),
    "non edge": (edit_json(_set(["edges", "m1->m0"], {"score": 1.0, "in_graph": True})), 'edges["m1->m0"]',
                 "not an edge"),
    "edge missing score": (edit_json(_set(["edges", "input->m0"], {"in_graph": True})), 'edges["input->m0"].score',
                           "missing"),
    "edge missing in_graph": (edit_json(_set(["edges", "input->m0"], {"score": 1.0})),
                              'edges["input->m0"].in_graph', "missing"),
    "edge score string": (edit_json(_set(["edges", "input->m0"], {"score": "1", "in_graph": True})),
                          'edges["input->m0"].score', "expected a number"),
    "edge in_graph int": (edit_json(_set(["edges", "input->m0"], {"score": 1.0, "in_graph": 1})),
                          'edges["input->m0"].in_graph', "true/false"),
    "edge entry not object": (edit_json(_set(["edges", "input->m0"], 1.0)), 'edges["input->m0"]', "expected an object"),
}


def pt_file(edit: Callable[[dict[str, Any]], Any]) -> Callable[[Path], Path]:
    def make(tmp_path: Path) -> Path:
        graph = random_graph("edge", layout=GraphLayout(n_layers=2, n_heads=2, d_model=4))
        save_pt(graph, tmp_path / "good.pt")
        data = torch.load(tmp_path / "good.pt", weights_only=True)
        edit(data)
        path = tmp_path / "bad_circuit.pt"
        torch.save(data, path)
        return path

    return make


def st_file(edit_tensors: Callable[[dict[str, Any]], Any], metadata: dict[str, str] | None = None):
    def make(tmp_path: Path) -> Path:
        from safetensors.torch import save_file

        graph = random_graph("edge", layout=GraphLayout(n_layers=2, n_heads=2, d_model=4))
        tensors = {"edges_scores": graph.edge_scores, "edges_in_graph": graph.edges_in_graph,
                   "nodes_in_graph": graph.nodes_in_graph}
        edit_tensors(tensors)
        path = tmp_path / "bad_circuit.safetensors"
        meta = {"cfg": json.dumps(graph.cfg)} if metadata is None else metadata
        save_file(tensors, str(path), metadata=meta)
        return path

    return make


def _saved_bytes(obj: Any) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _non_edge_in_graph(data: dict[str, Any]) -> None:
    data["edges_in_graph"][6, 0] = True  # m1 (forward 6) -> a0.h0<q> (backward 0): m1 is downstream


TENSOR_CASES = {
    "pt garbage": (raw_file("bad_circuit.pt", b"hello, not a torch file"), None, "not a readable torch file"),
    "pt garbage opcodes": (raw_file("bad_circuit.pt", b"definitely not a torch file"), None,
                           "not a plain tensor/dict file"),
    "pt top level tensor": (raw_file("bad_circuit.pt", _saved_bytes(torch.zeros(3))), None, "expected a dict"),
    "pt missing key": (pt_file(lambda d: d.pop("edges_in_graph")), "field edges_in_graph", "missing"),
    "pt typo key": (pt_file(lambda d: d.update(neuron_scores=torch.zeros(7, 4))), "field neuron_scores",
                    "'neurons_scores'"),
    "pt shape": (pt_file(lambda d: d.update(edges_scores=torch.zeros(7, 20))), "field edges_scores",
                 "expected [7, 15] (n_forward x n_backward from cfg), got [7, 20]"),
    "pt node shape": (pt_file(lambda d: d.update(nodes_scores=torch.zeros(8))), "field nodes_scores",
                      "expected [7]"),
    "pt dtype in_graph": (pt_file(lambda d: d.update(edges_in_graph=d["edges_in_graph"].float())),
                          "field edges_in_graph", "expected torch.bool, got torch.float32"),
    "pt dtype scores": (pt_file(lambda d: d.update(edges_scores=d["edges_scores"].long())), "field edges_scores",
                        "floating-point"),
    "pt not a tensor": (pt_file(lambda d: d.update(nodes_in_graph=[True] * 7)), "field nodes_in_graph",
                        "expected a tensor"),
    "pt non edge": (pt_file(_non_edge_in_graph), "field edges_in_graph", "not an edge of this graph"),
    "pt src order": (pt_file(lambda d: d["src_nodes"].reverse()), "field src_nodes", "expected 'input', got 'm1'"),
    "pt dst count": (pt_file(lambda d: d["dst_nodes"].pop()), "field dst_nodes", "expected 15 names"),
    "pt cfg bool": (pt_file(lambda d: d["cfg"].update(d_model=True)), "cfg.d_model", "positive integer"),
    "pt cfg missing": (pt_file(lambda d: d["cfg"].pop("parallel_attn_mlp")), "cfg.parallel_attn_mlp", "missing"),
    "st garbage": (raw_file("bad_circuit.safetensors", b"not safetensors"), None, "not a readable safetensors"),
    "st no cfg": (st_file(lambda t: None, metadata={}), "metadata.cfg", "missing"),
    "st cfg not json": (st_file(lambda t: None, metadata={"cfg": "{n_layers"}), "metadata.cfg", "not valid JSON"),
    "st shape": (st_file(lambda t: t.update(nodes_in_graph=torch.zeros(6, dtype=torch.bool))),
                 "field nodes_in_graph", "got [6]"),
    "st dtype": (st_file(lambda t: t.update(nodes_in_graph=torch.zeros(7, dtype=torch.uint8))),
                 "field nodes_in_graph", "wrong dtype"),
    "st unknown tensor": (st_file(lambda t: t.update(extra=torch.zeros(1))), "field extra", "unexpected key"),
    "unknown suffix": (raw_file("bad_circuit.txt", b"{}"), None, "unknown circuit file type"),
}


@pytest.mark.parametrize("case", list(JSON_CASES) + list(TENSOR_CASES))
def test_malformed_files_name_file_and_field(tmp_path: Path, case: str) -> None:
    make, field, phrase = {**JSON_CASES, **TENSOR_CASES}[case]
    path = make(tmp_path)
    with pytest.raises(CircuitFileError) as err:
        load_circuit(path)
    message = str(err.value)
    assert path.name in message
    assert err.value.path == str(path)
    if field is not None:
        assert field in message
    else:
        assert err.value.field is None
    assert phrase in message


def test_layout_mismatch_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "c.pt"
    save_pt(Graph(LAYOUT), path)
    with pytest.raises(CircuitFileError, match=r"field cfg: the file describes a graph with n_layers=3"):
        load_circuit(path, layout=GraphLayout(n_layers=12, n_heads=12, d_model=768))


def test_circuit_file_error_is_a_value_error_and_pickles() -> None:
    err = CircuitFileError("x.json", "cfg.n_layers", "missing")
    assert isinstance(err, ValueError)
    again = pickle.loads(pickle.dumps(err))
    assert str(again) == str(err) == "circuit file 'x.json', field cfg.n_layers: missing"


def test_missing_file_raises_file_not_found(tmp_path: Path) -> None:
    for suffix in FORMATS:
        with pytest.raises(FileNotFoundError):
            load_circuit(tmp_path / f"nope{suffix}")


# ------------------------------------------------------------------ malicious pickles
class _WritesMarker:
    """Unpickling this runs ``exec`` -- exactly what a hostile circuit file would do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').write('pwned')",))


def test_payload_is_live_under_plain_pickle(tmp_path: Path) -> None:
    """Control: the payload used below really does execute code when unpickled without protection."""
    marker = tmp_path / "control_marker"
    pickle.loads(pickle.dumps({"edges_scores": _WritesMarker(marker)}))
    assert marker.exists()


@pytest.mark.parametrize("writer", ["torch.save", "pickle.dump"])
def test_malicious_pt_is_refused_without_running_code(tmp_path: Path, writer: str) -> None:
    marker = tmp_path / "marker"
    payload = {"cfg": Graph(LAYOUT).cfg, "edges_scores": _WritesMarker(marker)}
    path = tmp_path / "evil_circuit.pt"
    if writer == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload))
    with pytest.raises(CircuitFileError) as err:
        load_circuit(path)
    assert "not a plain tensor/dict file" in str(err.value)
    assert "evil_circuit.pt" in str(err.value)
    assert not marker.exists()


# ------------------------------------------------------------------ atomic writes
def test_atomic_path_keeps_old_file_when_writer_fails(tmp_path: Path) -> None:
    target = tmp_path / "record.json"
    target.write_text("old complete content")
    with pytest.raises(RuntimeError, match="midway"):
        with atomic_path(target) as tmp:
            tmp.write_text("half of the new cont")
            raise RuntimeError("writer crashed midway")
    assert target.read_text() == "old complete content"
    assert os.listdir(tmp_path) == ["record.json"]


def test_failed_save_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_save(obj: Any, f: Any, *args: Any, **kwargs: Any) -> None:
        Path(f).write_bytes(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_pt(Graph(LAYOUT), tmp_path / "c.pt")
    assert os.listdir(tmp_path) == []


def test_atomic_write_helpers(tmp_path: Path) -> None:
    atomic_write_text(tmp_path / "a.txt", "héllo\n")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "a.txt").read_text(encoding="utf-8") == "héllo\n"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    atomic_write_text(tmp_path / "a.txt", "replaced")
    assert (tmp_path / "a.txt").read_text() == "replaced"
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert sorted(os.listdir(tmp_path)) == ["a.txt", "b.bin"]
