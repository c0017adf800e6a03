"""Planted-circuit models: the training losses against independent oracles, and the shipped models' proofs.

The shipped models' tests recompute everything from the weights (accuracy, circuit-only logit difference,
ablation losses, output norms); nothing is read from their cards.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from training.planted import ADDITION_DESIGN, DESIGNS, MCQA_DESIGN, Interchange, Trainer, _batch, _draw, node_group


@pytest.fixture(scope="module")
def tokenizer():
    from mibench.models.loading import tokenizer_from
    from mibench.zoo.catalog import model_path

    return tokenizer_from(str(model_path("gpt2-tasks")))


@pytest.fixture(scope="module")
def trainer(tokenizer):
    """A fresh (untrained) MCQA trainer, small enough for exact comparisons in milliseconds."""
    design = dataclasses.replace(MCQA_DESIGN, layers=2, heads=2, width=32, interchanges=(
        *MCQA_DESIGN.interchanges, Interchange("answer_pointer", "m0", ("answerPosition",))))
    return Trainer(design, tokenizer, seed=0)


@pytest.fixture(scope="module")
def batch(trainer, tokenizer):
    import random

    return _batch(_draw(trainer.task, random.Random(1), 6), trainer.design.strict_kinds, tokenizer)


def test_every_design_names_real_edges_and_nodes(tokenizer):
    from mibench.graph.graph import Graph
    from mibench.graph.layout import GraphLayout

    for design in DESIGNS.values():
        layout = GraphLayout(n_layers=design.layers, n_heads=design.heads, d_model=design.width)
        graph = Graph(layout)
        for edge in (*design.circuit_edges, *design.constant_edges):
            assert bool(graph.real_edge_mask[graph.edge_index(edge)]), (design.name, edge)
        assert not set(design.circuit_edges) & set(design.constant_edges)
        assert design.counterfactual in design.strict_kinds
        for spec in design.interchanges:
            assert spec.node in design.circuit_nodes, (design.name, spec.node)


def test_node_group_is_the_engines_forward_order(trainer):
    names = trainer.layout.forward_names
    for node in names[1:]:
        group_index, unit = node_group(trainer.engine, node)
        group = trainer.engine.groups[group_index]
        assert group.start + unit == names.index(node)


def test_strict_loss_with_every_edge_kept_is_the_behaviour_loss(trainer, batch):
    kind = trainer.design.counterfactual
    behaviour = trainer.clean_run(batch)[0].item()
    assert trainer.strict(batch, kind, keep_probability=1.0).item() == pytest.approx(behaviour, abs=1e-5)
    assert trainer.strict(batch, kind, keep_probability=0.0).item() != pytest.approx(behaviour, abs=1e-3)


def test_strict_loss_trains_the_weights_through_the_ablation(trainer, batch):
    trainer.model.zero_grad(set_to_none=True)
    trainer.strict(batch, trainer.design.counterfactual, keep_probability=0.5).backward()
    grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
    assert grads and sum(float(g.abs().sum()) for g in grads) > 0
    trainer.model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("node", ["a0.h1", "m0", "a1.h0"])
def test_interchange_equals_patching_every_edge_out_of_the_node(trainer, batch, node):
    """Swapping a node's output (all positions) is exactly MIB's patching of all of its outgoing edges."""
    from mibench.engine.ablation import Ablation
    from mibench.engine.masks import CircuitMask

    kind = "answerPosition"
    (pointer,) = [spec for spec in trainer.design.interchanges if spec.variable == "answer_pointer"]
    spec = dataclasses.replace(pointer, node=node)
    with torch.no_grad():
        swapped, labels = trainer._interchanged_logits(batch, spec, kind)
        names = trainer.layout.forward_names
        keep = torch.ones(trainer.layout.n_forward, trainer.layout.n_backward)
        keep[names.index(node)] = 0
        ablation = Ablation.patching(trainer.engine, batch.cf[kind], batch.mask)
        patched = trainer._logits(batch, mask=CircuitMask(keep), ablation=ablation)
    torch.testing.assert_close(swapped, patched, atol=1e-5, rtol=1e-5)
    # answer_pointer interchange from the answerPosition counterfactual: the base's letter at the source's slot
    for example, label in zip(batch.examples, labels.tolist()):
        source = example.counterfactual(kind).variables
        expected = " " + example.variables["symbols"][source["answer_pointer"]]
        assert trainer.tokenizer.decode([label]).strip() == expected.strip()


def test_ioi_giver_label_fixes_the_subject_to_the_sources():
    from mibench.errors import MibenchError
    from training.planted import subject_label

    base = {"names": ["Mary", "John"], "giver": "John"}
    assert subject_label(base, {"giver": "Mary"}) == " John"
    assert subject_label(base, {"giver": "John"}) == " Mary"
    with pytest.raises(MibenchError, match="must be one of"):
        subject_label(base, {"giver": "Anne"})


def test_training_writes_a_loadable_model_with_its_ground_truth(tmp_path, capsys):
    """Two SIIT steps of a tiny design: the folder is an HF model, the truth is MIB JSON, the card names its
    counterfactual, and ``evaluate`` on the folder picks the counterfactual and reports AUROC."""
    import json

    from mibench.circuits.ground_truth import ground_truth_counterfactual, ground_truth_path
    from mibench.cli import main
    from mibench.graph.io import load_circuit
    from mibench.models.loading import load_model
    from mibench.results.record import read_record
    from training import planted

    tiny = dataclasses.replace(ADDITION_DESIGN, name="tiny-addition", width=32)
    planted.DESIGNS[tiny.name] = tiny
    try:
        out = tmp_path / "tiny"
        card = planted.train(planted.parse_args(["--design", tiny.name, "--steps", "3", "--warmup-steps", "1",
                                                 "--eval-every", "2", "--val-examples", "8", "--batch-size", "4",
                                                 "--out", str(out)]))
    finally:
        del planted.DESIGNS[tiny.name]
    assert card["steps"] == 3 and "iit" in card["history"][-1]["loss"] and "strict" in card["history"][-1]["loss"]
    loaded = load_model(out)
    truth = load_circuit(ground_truth_path(str(out), tiny.task), layout=loaded.adapter.layout)
    assert sorted(truth.edge_name(f, b) for f, b in truth.edges_in_graph.nonzero().tolist()) == sorted(
        tiny.circuit_edges)
    assert ground_truth_counterfactual(str(out), tiny.task) == tiny.counterfactual == "random"
    zoo_card = json.loads((out / "zoo_card.json").read_text())
    assert zoo_card["planted"] and zoo_card["planted_circuit"]["circuit_edges"] == list(tiny.circuit_edges)
    capsys.readouterr()
    assert main(["evaluate", "--method", "eap", "--task", tiny.task, "--model", str(out), "--limit", "8",
                 "--attribution-examples", "8", "--bootstrap", "10", "--quiet",
                 "--output-dir", str(tmp_path / "runs")]) == 0
    assert "AUROC" in capsys.readouterr().out
    (record_file,) = (tmp_path / "runs").rglob("record.json")
    record = read_record(record_file)
    assert record.task.counterfactual == "random" and record.metrics.ground_truth.n_true == len(tiny.circuit_edges)


def test_strict_loss_reaches_non_circuit_weights_through_the_counterfactual_run(trainer, batch):
    """With every non-circuit edge ablated, m1 (outside the circuit) only acts through the counterfactual run's
    activations; the term must still train it, or it could never learn to carry nothing."""
    trainer.model.zero_grad(set_to_none=True)
    trainer.strict(batch, trainer.design.counterfactual, keep_probability=0.0).backward()
    mlp = trainer.model.transformer.h[1].mlp
    assert mlp.c_fc.weight.grad is not None and float(mlp.c_fc.weight.grad.abs().sum()) > 0
    trainer.model.zero_grad(set_to_none=True)


# ------------------------------------------------------------------------------- the shipped planted models
def _planted_names() -> list[str]:
    from mibench.zoo.catalog import list_planted

    return [model.name for model in list_planted()]


@pytest.fixture(scope="module", params=_planted_names())
def planted_checks(request):
    """Every proof of one shipped model, recomputed from its weights on 200 test examples."""
    from mibench.zoo.catalog import zoo_model
    from training.planted import ground_truth_checks

    (task,) = zoo_model(request.param).known_circuits
    return ground_truth_checks(request.param, task, n_examples=200)


def test_planted_models_ship_one_per_task_and_are_marked_in_listings(capsys):
    from mibench.cli import main
    from mibench.zoo.catalog import list_models, list_planted, model_names

    planted = list_planted()
    assert {"planted-addition", "planted-ioi", "planted-mcqa"} <= {m.name for m in planted}
    assert all(len(m.known_circuits) == 1 for m in planted)
    assert {"ioi", "arithmetic_addition", "mcqa"} <= {m.known_circuits[0] for m in planted}
    assert all(m.planted and m.name in model_names() for m in planted)
    assert not any(m.planted for m in list_models())  # the task-suite listing (and publish.sh) stays apart
    assert main(["ls", "models"]) == 0
    out = capsys.readouterr().out
    for model in planted:
        assert f"{model.name} (planted circuit: {model.known_circuits[0]})" in out


def test_planted_model_solves_its_task(planted_checks):
    for kind, accuracy in planted_checks["full_accuracy"].items():
        assert accuracy >= 0.95, (planted_checks["model"], kind)


def test_the_circuit_alone_keeps_the_logit_difference(planted_checks):
    """Every edge outside the ground truth ablated with counterfactual activations: >= 95% of the logit
    difference, under the ground truth's counterfactual and the other kinds it was trained on (a kind that keeps
    every answer, IOI's s1_io_flip, has no logit difference to keep: its accuracy must hold instead)."""
    for kind, kept in planted_checks["circuit_only_fraction"].items():
        if kept is None:
            assert planted_checks["circuit_only_accuracy"][kind] >= 0.95, (planted_checks["model"], kind)
        else:
            assert kept >= 0.95, (planted_checks["model"], kind, kept)
    own = planted_checks["counterfactual"]
    assert planted_checks["circuit_only_fraction"][own] is not None
    assert planted_checks["circuit_only_accuracy"][own] >= 0.95


def test_every_circuit_node_and_edge_is_needed(planted_checks):
    """Measurably: each alone costs at least 5% of the logit difference (a carry matters in half the problems)."""
    for node, loss in planted_checks["node_ablation_loss"].items():
        assert loss >= 0.05, (planted_checks["model"], node, loss)
    for edge, loss in planted_checks["edge_ablation_loss"].items():
        assert loss >= 0.05, (planted_checks["model"], edge, loss)


def test_components_outside_the_circuit_are_not_silent(planted_checks):
    """A circuit planted by zeroing the rest would be trivially detectable: outside nodes must be as loud."""
    for key in ("output_norms", "answer_position_norms"):  # over all tokens, and where the answer is read
        norms = planted_checks[key]
        outside_nodes = [k for k in norms if k not in planted_checks["circuit_nodes"]]
        assert outside_nodes
        for prefix in ("a", "m"):  # heads against heads, MLPs against MLPs
            inside = sorted(v for k, v in norms.items() if k.startswith(prefix) and k in planted_checks["circuit_nodes"])
            outside = [norms[k] for k in outside_nodes if k.startswith(prefix)]
            if inside and outside:
                assert min(outside) >= 0.2 * inside[len(inside) // 2], (key, norms)


def test_components_outside_the_circuit_are_not_constant(planted_checks):
    """Nor by neighbours that say the same thing for every prompt: outside heads vary across prompts too."""
    spread = planted_checks["answer_position_spread"]
    inside = sorted(v for k, v in spread.items() if k.startswith("a") and k in planted_checks["circuit_nodes"])
    outside = [v for k, v in spread.items() if k.startswith("a") and k not in planted_checks["circuit_nodes"]]
    assert outside and min(outside) >= 0.2 * inside[len(inside) // 2], spread



def test_input_interchange_labels_replace_those_inputs_only():
    from mibench.data.registry import load_task
    from training.planted import interchange_label

    task = load_task("arithmetic_addition")
    base = {"op1_tens": 7, "op1_ones": 1, "op2_tens": 6, "op2_ones": 0}  # 71 + 60
    source = {"op1_tens": 6, "op1_ones": 2, "op2_tens": 3, "op2_ones": 9}  # 62 + 39
    assert interchange_label(task, "op1_ones+op2_ones", base, source) == " 141"  # 72 + 69
    assert interchange_label(task, "op1_tens+op2_tens", base, source) == " 91"  # 61 + 30
    assert interchange_label(task, "ones_carry", base, source) == " 141"  # 71 + 60 with a carry
    mcqa = load_task("mcqa")
    base = {"symbols": ["A", "B", "C", "D"], "choices": ["red", "blue", "gold", "gray"], "color": "gold"}
    source = {"symbols": ["V", "X", "I", "L"], "choices": ["gold", "red", "blue", "gray"], "color": "gold"}
    assert interchange_label(mcqa, "symbols", base, source) == " I"
    assert interchange_label(mcqa, "answer_pointer", base, source) == " A"
    assert interchange_label(mcqa, "answer", base, source) == " V"


@pytest.mark.slow
@pytest.mark.parametrize("model", _planted_names())
def test_exact_patching_recovers_the_planted_circuit(model, tmp_path, capsys):
    """The ground truth and the evaluation agree: exact patching, the method that measures what MIB's patching
    measures, ranks the known edges first (AUROC close to 1, both MIB's ten-size form and the full ROC)."""
    from mibench.cli import main
    from mibench.results.record import read_record
    from mibench.zoo.catalog import zoo_model

    (task,) = zoo_model(model).known_circuits
    assert main(["evaluate", "--method", "exact", "--task", task, "--model", model, "--limit", "100",
                 "--attribution-examples", "50", "--bootstrap", "20", "--quiet",
                 "--output-dir", str(tmp_path)]) == 0
    (record_file,) = tmp_path.rglob("record.json")
    truth = read_record(record_file).metrics.ground_truth
    assert truth is not None and truth.auroc >= 0.95 and truth.auroc_full >= 0.95, truth


def test_spread_floor_flags_outside_nodes_that_output_the_same_vector_for_every_prompt(trainer):
    names = trainer.layout.forward_names[1:]
    inside = torch.tensor([n in trainer.design.circuit_nodes for n in names])
    g = torch.Generator().manual_seed(0)
    varying = torch.randn(8, len(names), 5, trainer.layout.d_model, generator=g)
    mask = torch.ones(8, 5)
    trainer.spread_floor = 0.5
    try:
        assert trainer._spread_shortfall(varying, mask).item() == pytest.approx(0.0, abs=1e-6)
        constant = varying.clone()
        constant[:, ~inside] = varying[:1, ~inside]  # every prompt: the first prompt's outputs
        assert trainer._spread_shortfall(constant, mask).item() == pytest.approx(1.0, abs=1e-6)
        padded = mask.clone()
        padded[1:, -1] = 0  # a position only one prompt reaches carries no variation to judge
        assert trainer._spread_shortfall(constant, padded).item() == pytest.approx(1.0, abs=1e-6)
    finally:
        trainer.spread_floor = 0.0


def test_spread_floor_gradient_is_finite_where_every_prompt_is_the_same(trainer):
    """IOI prompts share their first word, so some nodes vary by exactly nothing there; the floor's gradient must
    stay finite (a square root at 0 turned a whole training step into NaN)."""
    names = trainer.layout.forward_names[1:]
    g = torch.Generator().manual_seed(1)
    inside = torch.tensor([n in trainer.design.circuit_nodes for n in names])
    outputs = torch.randn(6, len(names), 4, trainer.layout.d_model, generator=g)
    outputs[:, ~inside] = outputs[:1, ~inside] + 0.01 * outputs[:, ~inside]  # below the floor: it pulls
    outputs[:, :, 0] = 1.0  # position 0: one vector for every prompt, at every node
    outputs.requires_grad_(True)
    trainer.spread_floor = 0.5
    try:
        trainer._spread_shortfall(outputs, torch.ones(6, 4)).backward()
    finally:
        trainer.spread_floor = 0.0
    assert torch.isfinite(outputs.grad).all() and outputs.grad.abs().sum() > 0


def test_circuit_alone_trains_only_the_circuit_and_its_constant_edges(trainer, batch):
    """The circuit-first stage: everything outside the circuit and its constant edges is zero-ablated, so only
    the nodes on those edges get gradients (here m0 and m1 lie outside; a0.h1 reads and writes constant edges)."""
    trainer.model.zero_grad(set_to_none=True)
    trainer.circuit_alone(batch).backward()
    blocks = trainer.model.transformer.h
    head_width = trainer.layout.d_model // trainer.design.heads

    def grad_sum(weight, rows=slice(None), cols=slice(None)) -> float:
        return 0.0 if weight.grad is None else float(weight.grad[rows, cols].abs().sum())

    for layer in (0, 1):
        assert grad_sum(blocks[layer].mlp.c_fc.weight) == 0.0
        assert grad_sum(blocks[layer].mlp.c_proj.weight) == 0.0
    h1 = slice(head_width, 2 * head_width)
    assert grad_sum(blocks[1].attn.c_proj.weight, rows=h1) == 0.0  # a1.h1: no edge of the circuit
    assert grad_sum(blocks[1].attn.c_proj.weight, rows=slice(0, head_width)) > 0  # a1.h0: the answer mover
    assert grad_sum(blocks[0].attn.c_proj.weight, rows=h1) > 0  # a0.h1 -> a1.h0<q>, a constant edge
    trainer.model.zero_grad(set_to_none=True)


def test_mcqa_attention_hints_point_at_the_designed_tokens(trainer, batch, tokenizer):
    """a0.h1 at the final token -> the stated colour; a0.h0 at the correct option's colour -> its letter."""
    from mibench.data.tokenization import encode

    for example in batch.examples:
        tokens = tokenizer.convert_ids_to_tokens(encode(tokenizer, example.prompt))
        (end, color), (option, letter) = trainer.hint_positions(example)
        assert end == len(tokens) - 1 and tokens[color] == example.variables["color"]
        assert tokens[option] == example.variables["color"] and option > color
        assert tokens[letter] == example.answer.strip() and letter == option - 2


def test_attention_hint_loss_trains_only_the_hinted_layer_0_heads(trainer, batch):
    trainer.model.zero_grad(set_to_none=True)
    loss = trainer.attention_hints(batch)
    loss.backward()
    attn = trainer.model.transformer.h[0].attn
    assert loss.item() > 0 and float(attn.c_attn.weight.grad.abs().sum()) > 0
    later = trainer.model.transformer.h[1].attn.c_attn.weight.grad
    assert later is None or float(later.abs().sum()) == 0.0
    trainer.model.zero_grad(set_to_none=True)


def test_floor_reference_is_the_circuits_lower_or_upper_median(trainer):
    """MCQA's letter mover is nearly silent at the final token, where the answer mover is loud: floors relative to
    the lower median let the rest of the model be as quiet as the letter mover there."""
    values = torch.tensor([[0.5, 16.0], [3.0, 1.0]])
    try:
        assert trainer._reference(values, dim=1).tolist() == [0.5, 1.0]
        trainer.floor_reference = "upper-median"
        assert trainer._reference(values, dim=1).tolist() == [16.0, 3.0]
    finally:
        trainer.floor_reference = "median"
