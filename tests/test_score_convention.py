"""Score files follow MIB's magnitude convention, and move both ways between mibench and MIB's tooling.

MIB's importance files come from EAP-IG (``hannamw/EAP-IG``, ``src/eap/attribute.py``, the commit MIB pins):
per batch it backpropagates ``metric = -mean over the batch of the logit difference`` (``logit_diff`` with
``mean=True, loss=True``), adds ``Delta . grad`` summed over positions and dims into the scores for every
batch and IG step, and finally divides by ``total_items`` (examples) and ``total_steps`` (IG steps). The
oracles below re-implement that loop independently of mibench's attribution code:

* EAP: the batch gradients come from autograd through the engine's fractional edge mask (``d metric /
  d keep[u, v] = -Delta_u . dL/dz_v``), not from mibench's receiver-gradient contraction;
* EAP-IG-inputs and NAP: the gradient of a batch-mean metric is the mean of the examples' gradients, so
  the loop is fed per-example, step-summed gradients (mibench on one-example batches) and does EAP-IG's
  batch means, sums and divisions itself.

The JSON layout is checked both ways: a file written the way ``Graph.to_json`` writes it loads through
mibench's reader, and mibench's file passes a re-implementation of ``Graph.from_json`` (every edge name
must be one of MIB's, every entry needs ``score`` and ``in_graph``).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from mibench.circuits.attribution import attribute
from mibench.circuits.batches import CircuitBatch
from mibench.circuits.metrics import logit_difference
from mibench.engine import CircuitMask, PatchingEngine
from mibench.engine.ablation import Ablation
from mibench.graph.io import load_circuit, save_circuit
from mibench.models.adapter import adapter_for
from mibench.models.tiny import tiny_model

N_EXAMPLES, BATCH, SEQ = 6, 3, 7


@pytest.fixture(scope="module")
def engine_and_examples() -> tuple[PatchingEngine, list[CircuitBatch]]:
    """A float64 tiny GPT-2 and six one-example batches (random prompts, two corrupted positions)."""
    model = tiny_model("gpt2", n_layers=2, dtype=torch.float64)
    gen = torch.Generator().manual_seed(3)
    clean = torch.randint(3, 101, (N_EXAMPLES, SEQ), generator=gen)
    cf = clean.clone()
    cf[:, 2:4] = torch.randint(3, 101, (N_EXAMPLES, 2), generator=gen)
    answers, cf_answers = torch.randint(3, 101, (2, N_EXAMPLES), generator=gen)
    mask = torch.ones(N_EXAMPLES, SEQ, dtype=torch.long)
    singles = [CircuitBatch(clean[i : i + 1], cf[i : i + 1], mask[i : i + 1], answers[i : i + 1],
                            cf_answers[i : i + 1], [f"ex{i}"]) for i in range(N_EXAMPLES)]
    return PatchingEngine(adapter_for(model)), singles


def _batches(singles: list[CircuitBatch], size: int) -> list[CircuitBatch]:
    """MIB's DataLoader: consecutive examples, ``size`` to a batch (the last one may be smaller)."""
    out = []
    for start in range(0, len(singles), size):
        rows = singles[start : start + size]
        out.append(CircuitBatch(*(torch.cat([getattr(r, f) for r in rows]) for f in
                                  ("clean_ids", "cf_ids", "attention_mask", "answers", "cf_answers")),
                                [i for r in rows for i in r.example_ids]))
    return out


def _eap_ig_get_scores_eap(engine: PatchingEngine, batches: list[CircuitBatch]) -> torch.Tensor:
    """EAP-IG's ``get_scores_eap`` normalisation, with batch gradients from autograd through the edge mask."""
    layout = engine.layout
    scores = torch.zeros(layout.n_forward, layout.n_backward, dtype=torch.float64)
    total_items = 0
    for batch in batches:
        total_items += batch.size
        keep = torch.ones(layout.n_forward, layout.n_backward, dtype=torch.float64, requires_grad=True)
        ablation = Ablation.patching(engine, batch.cf_ids, batch.attention_mask)
        out = engine.forward(batch.clean_ids, batch.attention_mask, mask=CircuitMask(keep), ablation=ablation,
                             logit_positions=batch.last_positions)
        metric = -logit_difference(out.logits, batch.answers, batch.cf_answers).mean()  # mean=True, loss=True
        metric.backward()
        scores += -keep.grad  # d metric / d keep = -(corrupted - clean) . d metric / d z
    scores /= total_items
    return scores * engine._real_edges.to(scores.dtype)


def _eap_ig_loop(per_example: list[torch.Tensor], batch_size: int, steps: int) -> torch.Tensor:
    """EAP-IG's ``get_scores_eap_ig`` / ``attribute_node`` normalisation over per-example gradients summed over
    the IG steps: each batch adds the gradient of its *mean* metric; the total is divided by the number of
    examples and of steps (``total_steps`` restarts every batch, so it ends equal to ``steps``)."""
    scores = torch.zeros_like(per_example[0])
    total_items = 0
    for start in range(0, len(per_example), batch_size):
        batch = per_example[start : start + batch_size]
        total_items += len(batch)
        scores += torch.stack(batch).sum(0) / len(batch)  # gradient of the batch-mean metric
    return scores / total_items / steps


def _mib_to_json(cfg: dict, node_names: list[str], edges: dict[str, float], path) -> None:
    """What ``Graph.to_json`` writes for an edge-scored graph: every node (logits included) with
    ``in_graph``, every edge with ``score`` (a Python float) and ``in_graph``."""
    data = {"cfg": dict(cfg), "nodes": {name: {"in_graph": False} for name in node_names},
            "edges": {name: {"score": float(score), "in_graph": False} for name, score in edges.items()}}
    path.write_text(json.dumps(data))


def _mib_edge_names(cfg: dict) -> set[str]:
    """The edge names ``Graph.from_model`` creates from a cfg (sequential attention then MLP)."""
    layers, heads = cfg["n_layers"], cfg["n_heads"]
    names: set[str] = set()
    upstream = ["input"]
    for layer in range(layers):
        for h in range(heads):
            names |= {f"{u}->a{layer}.h{h}<{x}>" for u in upstream for x in "qkv"}
        attn = [f"a{layer}.h{h}" for h in range(heads)]
        names |= {f"{u}->m{layer}" for u in [*upstream, *attn]}
        upstream = [*upstream, *attn, f"m{layer}"]
    return names | {f"{u}->logits" for u in upstream}


def _mib_from_json(path) -> dict[str, float]:
    """``Graph.from_json``'s reading of a file: the three keys, a cfg it can build a graph from, and an
    entry with both ``score`` and ``in_graph`` for names that exist in that graph (``g.edges[name]``)."""
    data = json.loads(path.read_text())
    assert all(k in data for k in ("cfg", "nodes", "edges")), "Bad input JSON format - Missing keys"
    cfg = data["cfg"]
    assert {"n_layers", "n_heads", "parallel_attn_mlp", "d_model"} <= set(cfg)
    known = _mib_edge_names(cfg)
    scores = {}
    for name, info in data["edges"].items():
        assert name in known, name
        scores[name] = info["score"]
        assert isinstance(info["in_graph"], bool)
    for name, node in data["nodes"].items():
        assert isinstance(node["in_graph"], bool), name
    return scores


def test_eap_file_equals_eap_ig_normalisation(engine_and_examples, tmp_path):
    engine, singles = engine_and_examples
    batches = _batches(singles, BATCH)
    graph = attribute(engine, batches)
    path = tmp_path / "scores.json"
    save_circuit(graph, path)
    expected = _eap_ig_get_scores_eap(engine, batches)
    written = load_circuit(path).edge_scores.double()
    assert expected.abs().max() > 1e-3  # not vacuous
    torch.testing.assert_close(written, expected, rtol=1e-5, atol=1e-7)
    # in memory the scores stay per-example means: exactly the batch size times the file's
    torch.testing.assert_close(graph.edge_scores.double(), BATCH * expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("level", ["edge", "node", "neuron"])
def test_ig_file_equals_eap_ig_normalisation(engine_and_examples, tmp_path, level):
    engine, singles = engine_and_examples
    steps = 3
    field = {"edge": "edge_scores", "node": "node_scores", "neuron": "neuron_scores"}[level]

    def scores_of(batches):
        return attribute(engine, batches, level=level, interpolation="inputs", steps=steps)

    # per example, summed over the steps (mibench averages over steps: undo it)
    per_example = [getattr(scores_of([single]), field).double() * steps for single in singles]
    expected = _eap_ig_loop(per_example, BATCH, steps)
    path = tmp_path / "scores.pt"
    save_circuit(scores_of(_batches(singles, BATCH)), path)
    written = getattr(load_circuit(path), field).double()
    assert expected.abs().max() > 1e-3
    torch.testing.assert_close(written, expected, rtol=1e-5, atol=1e-7)


def test_fewer_examples_than_the_batch_size_divide_by_the_examples(engine_and_examples, tmp_path):
    """EAP-IG's one batch then holds every example: the file is the mean divided by the number of examples."""
    engine, singles = engine_and_examples
    few = singles[:2]
    graph = attribute(engine, _batches(few, 2))
    assert graph.file_score_scale == pytest.approx(1 / 2)
    save_circuit(graph, tmp_path / "scores.json")
    torch.testing.assert_close(load_circuit(tmp_path / "scores.json").edge_scores.double(),
                               _eap_ig_get_scores_eap(engine, _batches(few, 2)), rtol=1e-5, atol=1e-7)


def test_partial_last_batch_weighs_every_example_equally(engine_and_examples):
    """The documented difference: MIB's last, smaller batch weighs each of its examples more; mibench
    divides the per-example mean by the full batch size, so the ranking never depends on batching."""
    engine, singles = engine_and_examples
    five = singles[:5]
    per_example = [attribute(engine, [s]).edge_scores.double() for s in five]
    graph = attribute(engine, _batches(five, BATCH))
    torch.testing.assert_close(graph.edge_scores.double(), torch.stack(per_example).mean(0), rtol=1e-5, atol=1e-7)
    assert graph.file_score_scale == pytest.approx(1 / BATCH)
    mib = _eap_ig_loop(per_example, BATCH, steps=1)
    assert not torch.allclose(graph.edge_scores.double() / BATCH, mib, rtol=1e-3)  # they do differ here


def test_mib_json_loads_in_mibench_and_mibench_json_loads_in_mib(engine_and_examples, tmp_path):
    engine, singles = engine_and_examples
    batches = _batches(singles, BATCH)
    graph = attribute(engine, batches)
    expected = _eap_ig_get_scores_eap(engine, batches)

    # their layout -> mibench's reader (edges listed in reverse, to show the order does not matter)
    names = graph.edge_names()
    forward, backward = graph.edge_indices
    values = expected[forward, backward].tolist()
    mib_file = tmp_path / "importances.json"
    _mib_to_json(graph.cfg, graph.node_names(), dict(reversed(list(zip(names, values)))), mib_file)
    theirs = load_circuit(mib_file, engine.layout)
    torch.testing.assert_close(theirs.edge_scores.double(), expected.float().double(), rtol=0, atol=0)

    # mibench's writer -> their reader: same names (all of MIB's edges), same values
    ours = tmp_path / "scores.json"
    save_circuit(graph, ours)
    read_back = _mib_from_json(ours)
    assert set(read_back) == _mib_edge_names(graph.cfg) == set(names)
    assert all(math.isclose(read_back[n], v, rel_tol=1e-5, abs_tol=1e-7) for n, v in zip(names, values))


def test_scores_files_round_trip_unchanged(engine_and_examples, tmp_path):
    """A file read back and written again is unchanged: only attribution graphs carry a scale."""
    engine, singles = engine_and_examples
    save_circuit(attribute(engine, _batches(singles, BATCH)), tmp_path / "a.json")
    first = load_circuit(tmp_path / "a.json")
    assert first.file_score_scale == 1.0
    save_circuit(first, tmp_path / "b.json")
    assert (tmp_path / "a.json").read_text() == (tmp_path / "b.json").read_text()


@pytest.mark.slow
def test_evaluate_writes_scores_json_in_file_units(random_task_model, tmp_path):
    """End to end: the run's scores.json is the batch-size-independent mean divided by --batch-size."""
    from mibench.cli import main

    written = {}
    for batch_size in (4, 8):
        out = tmp_path / f"b{batch_size}"
        status = main(["evaluate", "--method", "eap", "--task", "ioi", "--model", str(random_task_model),
                       "--attribution-examples", "16", "--limit", "8", "--batch-size", str(batch_size),
                       "--bootstrap", "10", "--quiet", "--output-dir", str(out)])
        assert status == 0
        (scores,) = out.rglob("scores.json")
        written[batch_size] = load_circuit(scores).edge_scores.double()
    largest = written[4].abs().max().item()
    assert largest > 0
    # float32 model: batches of different shapes round differently; compare to the largest score
    torch.testing.assert_close(written[4], 2 * written[8], rtol=1e-4, atol=1e-5 * largest)
