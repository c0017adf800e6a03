"""Task causal models: MIB's counterfactual label rule worked out by hand, and properties over generated data.

The hand-made cases pin each (task, variable) label to a value computed on paper; the property tests check
that every model reproduces the generator's own answers on clean and counterfactual prompts, that an
interchange with an equal value is a no-op, and the task-specific consequences of the rule.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml

import mibench.tasks
from mibench.causal.causal_model import CausalModelError
from mibench.data.card import TaskCardError, load_card
from mibench.data.registry import get_card, list_cards, load_task
from mibench.errors import MibenchError
from mibench.tasks.arithmetic.causal import arithmetic_causal_model
from mibench.tasks.arithmetic.problems import ADDITION, OPERANDS, SUBTRACTION, Problem, carry_flips
from mibench.tasks.ioi.causal import ioi_causal_model
from mibench.tasks.mcqa.causal import mcqa_causal_model

CAUSAL_TASKS = ("mcqa", "arithmetic_addition", "arithmetic_subtraction", "ioi")
N = 200


def _mcqa(symbols: str, choices: list[str], color: str) -> dict:
    return {"symbols": list(symbols), "choices": choices, "color": color}


def _arith(op1: int, op2: int) -> dict:
    return {"op1_tens": op1 // 10, "op1_ones": op1 % 10, "op2_tens": op2 // 10, "op2_ones": op2 % 10}


def _ioi(first: str, second: str, giver: str) -> dict:
    return {"names": [first, second], "giver": giver}


# ------------------------------------------------------------------------------------ hand-made labels
def test_mcqa_labels_by_hand():
    model = mcqa_causal_model()
    base = _mcqa("ABCD", ["blue", "red", "green", "white"], "red")  # pointer 1
    source = _mcqa("QRST", ["green", "white", "blue", "red"], "red")  # pointer 3, other letters
    assert model.run_forward(base)["answer_pointer"] == 1 and model.output(base) == " B"
    assert model.output(source) == " T"
    assert model.interchange_label(base, source, "answer_pointer") == " D"  # base letters, source slot
    assert model.interchange_label(base, source, "answer") == " T"  # the source's letter
    same_slot = _mcqa("WXYZ", ["pink", "red", "gold", "black"], "red")  # randomLetter-like: pointer 1
    assert model.interchange_label(base, same_slot, "answer_pointer") == " B"
    assert model.interchange_label(base, same_slot, "answer") == " X"


@pytest.mark.parametrize("variables, message", [
    (_mcqa("ABCD", ["blue", "red", "green", "white"], "gold"), "exactly once"),
    ({"symbols": list("ABCD"), "color": "red"}, "needs input variable 'choices'"),
])
def test_mcqa_model_refuses_prompts_without_a_single_answer(variables, message):
    with pytest.raises(CausalModelError, match=message):
        mcqa_causal_model().output(variables)


def test_addition_labels_by_hand():
    model = arithmetic_causal_model("arithmetic_addition", ADDITION)
    assert model.output(_arith(27, 35)) == " 62"
    assert model.interchange_label(_arith(27, 35), _arith(21, 34), "ones_carry") == " 52"  # carry 1 -> 0
    assert model.interchange_label(_arith(21, 34), _arith(27, 35), "ones_carry") == " 65"  # carry 0 -> 1
    assert model.interchange_label(_arith(95, 93), _arith(27, 35), "ones_carry") == " 198"  # 9+9+1 | 8
    assert model.interchange_label(_arith(27, 35), _arith(19, 19), "ones_carry") == " 62"  # same carry


def test_subtraction_labels_by_hand():
    model = arithmetic_causal_model("arithmetic_subtraction", SUBTRACTION)
    assert model.output(_arith(52, 27)) == " 25"
    assert model.interchange_label(_arith(52, 27), _arith(58, 32), "ones_carry") == " 35"  # borrow 1 -> 0
    assert model.interchange_label(_arith(58, 32), _arith(52, 27), "ones_carry") == " 16"  # borrow 0 -> 1
    assert model.interchange_label(_arith(21, 19), _arith(99, 11), "ones_carry") == " 12"  # 2-1-0 | 2


def test_arithmetic_model_refuses_a_negative_tens_column():
    model = arithmetic_causal_model("arithmetic_subtraction", SUBTRACTION)
    with pytest.raises(CausalModelError, match="tens column -1"):
        model.interchange_label(_arith(47, 43), _arith(52, 27), "ones_carry")  # 4-4-1: never drawn


def test_ioi_labels_by_hand():
    model = ioi_causal_model()
    base = _ioi("Mary", "John", "John")  # "When Mary and John ..., John gave ... to" -> " Mary"
    assert model.run_forward(base)["output_position"] == 0 and model.output(base) == " Mary"
    s1_io_flip = _ioi("John", "Mary", "John")  # answer Mary, now in slot 1
    assert model.interchange_label(base, s1_io_flip, "output_position") == " John"
    assert model.interchange_label(base, s1_io_flip, "output_token") == " Mary"
    s2_io_flip = _ioi("Mary", "John", "Mary")  # answer John, slot 1
    assert model.interchange_label(base, s2_io_flip, "output_position") == " John"
    assert model.interchange_label(base, s2_io_flip, "output_token") == " John"
    both = _ioi("John", "Mary", "Mary")  # answer John, slot 0
    assert model.interchange_label(base, both, "output_position") == " Mary"
    assert model.interchange_label(base, both, "output_token") == " John"
    other_names = _ioi("Anna", "Kate", "Kate")  # answer Anna, slot 0
    assert model.interchange_label(base, other_names, "output_position") == " Mary"
    assert model.interchange_label(base, other_names, "output_token") == " Anna"


def test_ioi_model_refuses_a_prompt_without_a_repeated_name():
    with pytest.raises(CausalModelError, match="exactly one of the two names"):
        ioi_causal_model().output(_ioi("Mary", "John", "Kate"))  # abc: no single answer


# ------------------------------------------------------------------------------- cards and models
def test_cards_and_models_agree():
    with_causal = {card.id for card in list_cards() if card.causal is not None}
    assert set(CAUSAL_TASKS) <= with_causal
    assert get_card("induction").causal is None
    for task_id in CAUSAL_TASKS:
        card, model = get_card(task_id), load_task(task_id).causal_model()
        assert model.task_id == task_id
        assert list(model.targets) == card.causal.variables


def test_induction_has_no_causal_model():
    with pytest.raises(MibenchError, match="no causal model"):
        load_task("induction").causal_model()


@pytest.mark.parametrize("field, value", [
    ("variables", ["answer_pointer", "answer_poynter"]),
    ("positions", ["correct_symbol", "nowhere"]),
    ("counterfactuals", ["answerPosition", "wrongLetter"]),
])
def test_card_refuses_causal_names_it_does_not_declare(tmp_path, field, value):
    raw = yaml.safe_load((Path(mibench.tasks.__file__).parent / "mcqa" / "card.yaml").read_text())
    raw["causal"][field] = value
    path = tmp_path / "card.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(TaskCardError, match=f"causal.{field}.*{value[-1]}"):
        load_card(path)


# ----------------------------------------------------------------------------- generated examples
@pytest.fixture(scope="module", params=CAUSAL_TASKS)
def generated(request):
    task = load_task(request.param)
    return task.card, task.causal_model(), task.examples("train", N)


def _pairs(card, examples):
    for example in examples:
        for kind in card.causal.counterfactuals:
            yield kind, example, example.counterfactual(kind)


def test_model_reproduces_every_answer(generated):
    card, model, examples = generated
    for example in examples:
        assert model.output(example.variables) == example.answer, example.id
    for kind, example, cf in _pairs(card, examples):
        assert cf.has_answer, (example.id, kind)
        assert model.output(cf.variables) == cf.answer, (example.id, kind)


def test_model_variables_match_the_recorded_ones(generated):
    """Where the generator records a variable the model computes, both must agree (clean and counterfactual)."""
    card, model, examples = generated
    prompts = [e.variables for e in examples] + [cf.variables for _, _, cf in _pairs(card, examples)]
    for recorded in prompts:
        computed = model.run_forward(recorded)
        shared = (set(computed) & set(recorded)) - set(model.inputs)
        assert shared, recorded
        assert {v: computed[v] for v in shared} == {v: recorded[v] for v in shared}


def test_interchange_with_an_equal_value_is_a_no_op(generated):
    card, model, examples = generated
    for variable in card.causal.variables:
        for example in examples:
            assert model.interchange_label(example.variables, example.variables, variable) == example.answer
        for kind, example, cf in _pairs(card, examples):
            if model.run_forward(cf.variables)[variable] == model.run_forward(example.variables)[variable]:
                assert model.interchange_label(example.variables, cf.variables, variable) == example.answer


def test_output_variables_take_the_source_answer(generated):
    """``answer`` (MCQA) and ``output_token`` (IOI) determine the output alone: the label is the source's answer."""
    card, model, examples = generated
    for variable in {"answer", "output_token"} & set(card.causal.variables):
        for kind, example, cf in _pairs(card, examples):
            assert model.interchange_label(example.variables, cf.variables, variable) == cf.answer


def test_mcqa_pointer_labels():
    """randomLetter keeps the slot, so the pointer label is the base answer; moving the slot changes it."""
    model = mcqa_causal_model()
    for example in load_task("mcqa").examples("train", N):
        base = example.variables
        same_slot = example.counterfactual("randomLetter")
        assert model.interchange_label(base, same_slot.variables, "answer_pointer") == example.answer
        for kind in ("answerPosition", "answerPosition_randomLetter"):
            cf = example.counterfactual(kind)
            label = model.interchange_label(base, cf.variables, "answer_pointer")
            assert label == " " + base["symbols"][cf.variables["answer_pointer"]] != example.answer


@pytest.mark.parametrize("task_id, sign", [("arithmetic_addition", 1), ("arithmetic_subtraction", -1)])
def test_carry_counterfactual_moves_the_label_by_ten(task_id, sign):
    task = load_task(task_id)
    model = task.causal_model()
    for example in task.examples("train", N):
        cf = example.counterfactual("ones_carry")
        label = int(model.interchange_label(example.variables, cf.variables, "ones_carry"))
        flip = cf.variables["ones_carry"] - example.variables["ones_carry"]  # +1 or -1
        assert label - int(example.answer) == sign * 10 * flip and abs(flip) == 1


@pytest.mark.parametrize("operation, task_id", [(ADDITION, "arithmetic_addition"),
                                                (SUBTRACTION, "arithmetic_subtraction")])
def test_intervened_carry_stays_in_the_answer_range(operation, task_id):
    """Exhaustive over every problem the generator can draw (those with a carry flip) and both carries."""
    model = arithmetic_causal_model(task_id, operation)
    drawable = [p for a, b in itertools.product(OPERANDS, OPERANDS)
                if (p := Problem(operation, a, b)).result >= 0 and carry_flips(p)]
    answers = [p.result for p in drawable]
    low, high = min(answers), max(answers)
    assert (low, high) == ((20, 198) if operation is ADDITION else (1, 89))
    for problem in drawable:
        for carry in (0, 1):
            label = model.run_forward(_arith(problem.op1, problem.op2), {"ones_carry": carry})["raw_output"]
            assert label == f" {int(label)}" and low <= int(label) <= high, (problem, carry)


# ------------------------------------------------------------------------------ official MIB data
OFFICIAL = ("ioi", "mcqa", "arithmetic_addition", "arithmetic_subtraction", "arc_easy", "arc_challenge")


@pytest.mark.parametrize("task_id", OFFICIAL)
def test_models_run_on_the_official_data_the_loader_reads(task_id):
    """The official loader records the same causal-model inputs as the generators, so every model
    reproduces the official answers of clean prompts and of the counterfactual kinds the track uses."""
    from tests.test_official_data import load

    task = load_task(task_id)
    model, kinds = task.causal_model(), task.card.causal.counterfactuals
    examples = load(task_id)
    checked = 0
    for example in examples:
        assert model.output(example.variables) == example.answer
        for kind in kinds:
            if kind in example.counterfactuals:
                cf = example.counterfactuals[kind]
                assert model.output(cf.variables) == cf.answer, (example.id, kind)
                for variable in task.card.causal.variables:
                    model.interchange_label(example.variables, cf.variables, variable)  # runs on every pair
                checked += 1
    assert checked >= len(examples)


def test_arc_labels_by_hand():
    from mibench.tasks.mcqa.causal import arc_causal_model

    model = arc_causal_model("arc_easy")
    base = {"symbols": list("ABCD"), "answer_key": 2}
    source = {"symbols": list("PQRS"), "answer_key": 0}
    assert model.output(base) == " C" and model.output(source) == " P"
    assert model.interchange_label(base, source, "answer_pointer") == " A"
    assert model.interchange_label(base, source, "answer") == " P"


# ------------------------------------------------------------------------------------------ pairs
def test_pairs_carry_labels_teacher_forcing_and_role_positions():
    """Base sequence = prompt + all label tokens but the last; logits are read where each label token is
    predicted; role positions are the last token of each role's span, found on each prompt separately."""
    import dataclasses

    from mibench.causal.pairs import build_pairs
    from mibench.data.tokenization import encode
    from mibench.models.loading import tokenizer_from
    from mibench.zoo.catalog import model_path

    tokenizer = tokenizer_from(str(model_path("gpt2-tasks")))
    task = load_task("arithmetic_addition")
    model = task.causal_model()
    examples = task.examples("test", 12)
    broken = dataclasses.replace(examples[0], spans={k: v for k, v in examples[0].spans.items() if k != "op2_last"})
    pairs = build_pairs([broken, *examples[1:]], "ones_carry", "ones_carry", model, tokenizer, ["op2_last", "END"])
    assert len(pairs) == 11 and dict(pairs.dropped) == {"no op2_last span in the prompt": 1}
    for row, example in enumerate(examples[1:]):
        cf = example.counterfactual("ones_carry")
        label = model.interchange_label(example.variables, cf.variables, "ones_carry")
        assert pairs.labels[row] == label != example.answer  # a carry flip always changes the label
        prompt = encode(tokenizer, example.prompt)
        label_ids = tokenizer(label, add_special_tokens=False)["input_ids"]
        m = len(label_ids)
        assert pairs.base.ids[row, :len(prompt) + m - 1].tolist() == prompt + label_ids[:-1]
        assert pairs.base.read_positions[row, :m].tolist() == list(range(len(prompt) - 1, len(prompt) - 1 + m))
        assert pairs.base.answer_ids[row, :m].tolist() == label_ids and pairs.base.answer_mask[row].sum() == m
        assert int(pairs.base_positions["END"][row]) == len(prompt) - 1
        _, end = example.spans["op2_last"]  # the last token that starts inside the span (BOS is position 0)
        offsets = tokenizer(example.prompt, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
        last = max(i for i, (a, _) in enumerate(offsets) if a < end)
        assert int(pairs.base_positions["op2_last"][row]) == 1 + last
        assert tokenizer.convert_ids_to_tokens(prompt[1 + last]) == example.prompt[end - 1]  # the operand's last digit
        source_prompt = encode(tokenizer, cf.prompt)
        assert int(pairs.source_positions["END"][row]) == len(source_prompt) - 1
