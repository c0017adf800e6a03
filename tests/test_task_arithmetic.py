"""Arithmetic tasks: correct answers, precise counterfactuals, disjoint splits, achievable sizes."""

from __future__ import annotations

import random
import re
from functools import lru_cache

import pytest

from mibench.data.example import Example
from mibench.data.registry import load_task
from mibench.data.splits import PRIVATE_SEED_ENV, SPLITS
from mibench.data.tokenization import answer_token, check_aligned, role_positions
from mibench.tasks.arithmetic.problems import (
    ADDITION,
    SUBTRACTION,
    Problem,
    carry_flips,
    random_counterpart,
    sample_problem,
)

TASKS = ("arithmetic_addition", "arithmetic_subtraction")
OPERATORS = {"plus": lambda a, b: a + b, "minus": lambda a, b: a - b}
PROMPT = re.compile(r"Q: How much is (\d\d) (plus|minus) (\d\d)\? A:")


@lru_cache(maxsize=None)
def _split(task_id: str, split: str) -> tuple[Example, ...]:
    """A whole split at its card size, generated once per test session."""
    return tuple(load_task(task_id).examples(split))


def _parse(prompt: str) -> tuple[int, str, int]:
    match = PROMPT.fullmatch(prompt)
    assert match, prompt
    return int(match[1]), match[2], int(match[3])


def _key(task_id: str, prompt: str) -> tuple[int, int]:
    """Expected split key, computed independently of the generator."""
    op1, _, op2 = _parse(prompt)
    return tuple(sorted((op1, op2))) if task_id == "arithmetic_addition" else (op1, op2)


def _expected_variables(prompt: str) -> dict[str, int]:
    """The causal model written out per operation, as the cards document it."""
    op1, word, op2 = _parse(prompt)
    (t1, o1), (t2, o2) = divmod(op1, 10), divmod(op2, 10)
    if word == "plus":
        carry = int(o1 + o2 >= 10)
        ones, tens, hundreds = (o1 + o2) % 10, (t1 + t2 + carry) % 10, int(t1 + t2 + carry > 9)
    else:
        carry = int(o1 < o2)  # the borrow
        ones, tens, hundreds = (o1 - o2) % 10, t1 - t2 - carry, 0
    return {"op1_tens": t1, "op1_ones": o1, "op2_tens": t2, "op2_ones": o2, "ones_carry": carry,
            "ones_out": ones, "tens_out": tens, "hundreds_out": hundreds, "result": OPERATORS[word](op1, op2)}


def _all_prompts(example: Example):
    yield "clean", example.prompt, example.answer, example.variables, example.spans
    for kind, cf in example.counterfactuals.items():
        yield kind, cf.prompt, cf.answer, cf.variables, cf.spans


# ------------------------------------------------------------------ cards
@pytest.mark.parametrize("task_id", TASKS)
def test_card_loads_through_the_registry(task_id):
    task = load_task(task_id)
    card = task.card
    assert card.id == task_id and task.version == "2.0"
    assert card.metric == "logit_difference"
    assert card.counterfactuals == ["random", "ones_carry"] and card.default_counterfactual == "random"
    assert card.official.hf_repo == f"mib-bench/{task_id}"
    assert card.official.private_repo == f"mib-bench/{task_id}_private_test"
    assert set(card.schema_roles) == {"op1", "op2", "op2_last", "END"}
    assert set(card.variables) == set(_expected_variables("Q: How much is 23 plus 45? A:"))


# -------------------------------------------------------------- determinism
@pytest.mark.parametrize("task_id", TASKS)
def test_generation_is_deterministic_per_seed(task_id):
    task = load_task(task_id)
    first = task.examples("validation", 40)
    again = load_task(task_id).examples("validation", 40)
    assert first == again
    assert [e.id for e in first][:2] == [f"{task_id}/validation/000000", f"{task_id}/validation/000001"]
    other = task.examples("validation", 40, seed=7)
    assert [e.prompt for e in other] != [e.prompt for e in first]


# ------------------------------------------------------------------- splits
@pytest.mark.parametrize("task_id", TASKS)
def test_every_split_reaches_its_card_size_with_distinct_prompts(task_id, monkeypatch):
    monkeypatch.setenv(PRIVATE_SEED_ENV, "31337")
    task = load_task(task_id)
    for split in SPLITS:
        examples = _split(task_id, split) if split != "private_test" else task.examples(split)
        assert len(examples) == task.card.splits[split]
        assert len({e.prompt for e in examples}) == len(examples)


@pytest.mark.parametrize("task_id", TASKS)
def test_splits_are_disjoint_by_operand_key(task_id):
    train = {_key(task_id, e.prompt) for e in _split(task_id, "train")}
    for split in ("validation", "test"):
        held_out = {_key(task_id, e.prompt) for e in _split(task_id, split)}
        assert not held_out & train, f"{split} shares operand pairs with train"
    if task_id == "arithmetic_addition":  # the unordered key keeps both orders of a pair together
        assert any(_parse(e.prompt)[0] > _parse(e.prompt)[2] for e in _split(task_id, "test"))
        assert any(_parse(e.prompt)[0] < _parse(e.prompt)[2] for e in _split(task_id, "test"))


@pytest.mark.parametrize("task_id", TASKS)
def test_every_operand_of_a_held_out_split_occurs_in_train(task_id):
    train = [_parse(e.prompt) for e in _split(task_id, "train")]
    for position in (0, 2):
        seen = {p[position] for p in train}
        for split in ("validation", "test"):
            assert {_parse(e.prompt)[position] for e in _split(task_id, split)} <= seen


# ---------------------------------------------------------- answers + variables
@pytest.mark.parametrize("task_id", TASKS)
def test_answers_and_variables_are_correct_for_clean_and_every_counterfactual(task_id):
    word = "plus" if task_id == "arithmetic_addition" else "minus"
    for example in _split(task_id, "validation"):
        assert set(example.counterfactuals) == {"random", "ones_carry"}
        for kind, prompt, answer, variables, _ in _all_prompts(example):
            op1, op_word, op2 = _parse(prompt)
            assert op_word == word and 10 <= op2 <= 99 and 10 <= op1 <= 99, (kind, prompt)
            result = OPERATORS[word](op1, op2)
            assert result >= 0, prompt
            assert answer == f" {result}", (kind, prompt, answer)
            assert variables == _expected_variables(prompt), (kind, prompt)


def test_subtraction_ones_carry_is_the_borrow():
    problem = Problem(SUBTRACTION, 52, 38)
    assert problem.variables()["ones_carry"] == 1 and problem.result == 14
    assert Problem(SUBTRACTION, 58, 32).variables()["ones_carry"] == 0
    assert Problem(ADDITION, 58, 32).variables()["ones_carry"] == 1
    assert Problem(ADDITION, 99, 99).variables() == _expected_variables("Q: How much is 99 plus 99? A:")


# ------------------------------------------------------------ counterfactuals
@pytest.mark.parametrize("task_id", TASKS)
def test_random_counterfactual_is_another_problem_with_another_answer(task_id):
    examples = _split(task_id, "validation")
    for example in examples:
        cf = example.counterfactual("random")
        assert _parse(cf.prompt)[::2] != _parse(example.prompt)[::2]
        assert cf.answer != example.answer
    # independent: the counterfactual's operands are spread over the operand range, not tied to the clean one
    assert len({example.counterfactual("random").prompt for example in examples}) > 0.8 * len(examples)


@pytest.mark.parametrize("task_id", TASKS)
def test_ones_carry_counterfactual_flips_only_the_carry(task_id):
    flips = set()
    for example in _split(task_id, "validation"):
        clean, cf = example.variables, example.counterfactual("ones_carry").variables
        assert (cf["op1_tens"], cf["op2_tens"]) == (clean["op1_tens"], clean["op2_tens"])
        assert cf["ones_out"] == clean["ones_out"]
        assert cf["ones_carry"] == 1 - clean["ones_carry"]
        assert abs(cf["result"] - clean["result"]) == 10
        flips.add(clean["ones_carry"])
    assert flips == {0, 1}  # both directions occur


def test_carry_flips_enumerates_exactly_the_valid_flips():
    assert carry_flips(Problem(ADDITION, 23, 45)) == (Problem(ADDITION, 29, 49),)  # 3+5 -> only 9+9 = 18
    assert carry_flips(Problem(ADDITION, 23, 46)) == ()  # ones sum 9: no pair of digits sums to 19
    assert len(carry_flips(Problem(ADDITION, 27, 45))) == 3  # 7+5=12 -> 0+2, 1+1, 2+0
    assert carry_flips(Problem(SUBTRACTION, 45, 23)) == (Problem(SUBTRACTION, 40, 28), Problem(SUBTRACTION, 41, 29))
    assert carry_flips(Problem(SUBTRACTION, 47, 27)) == ()  # equal ones digits: 0 needs o1 - o2 = -10
    assert carry_flips(Problem(SUBTRACTION, 47, 43)) == ()  # equal tens: a borrow would go negative


@pytest.mark.parametrize("task_id", TASKS)
@pytest.mark.parametrize("split", ["train", "validation", "test"])
def test_problems_without_a_carry_flip_never_occur_in_any_prompt(task_id, split):
    """The card's exclusion holds for every prompt, clean and counterfactual (``random`` included: before
    version 2.0 its problems were drawn from every valid one, and 334 train addition counterparts had ones
    digits summing to 9)."""
    checked = 0
    for example in _split(task_id, split):
        for kind, prompt, _, _, _ in _all_prompts(example):
            op1, _, op2 = _parse(prompt)
            (t1, o1), (t2, o2) = divmod(op1, 10), divmod(op2, 10)
            if task_id == "arithmetic_addition":
                assert o1 + o2 != 9, (example.id, kind, prompt)
            else:
                assert t1 != t2 and o1 != o2, (example.id, kind, prompt)
            checked += 1
    assert checked == 3 * len(_split(task_id, split))


@pytest.mark.parametrize("operation", [ADDITION, SUBTRACTION])
def test_random_counterpart_replaces_only_problems_the_task_never_poses(operation):
    """It advances the generator exactly as version 1.x's draw (any valid problem with another result) did, so
    every clean prompt and ones_carry counterfactual of 2.0 is 1.x's; it keeps that draw unless it has no carry
    flip, and then gives a problem that has one."""
    replaced = 0
    for seed in range(300):
        problem = sample_problem(operation, random.Random(f"clean {seed}"))
        ours, old = random.Random(seed), random.Random(seed)
        counterpart = random_counterpart(problem, ours)
        while (drawn := sample_problem(operation, old)).result == problem.result:
            pass
        assert ours.getstate() == old.getstate()
        assert counterpart.result != problem.result and carry_flips(counterpart)
        if carry_flips(drawn):
            assert counterpart == drawn
        else:
            replaced += 1
    assert replaced > 10


# --------------------------------------------------------------- prompt shape
@pytest.mark.parametrize("task_id", TASKS)
def test_counterfactual_prompts_keep_the_word_count_and_spans_point_at_the_operands(task_id):
    for example in _split(task_id, "validation")[:200]:
        for kind, prompt, _, variables, spans in _all_prompts(example):
            assert len(prompt.split()) == len(example.prompt.split()), kind
            op1, _, op2 = _parse(prompt)
            text = {role: prompt[start:end] for role, (start, end) in spans.items()}
            assert text == {"op1": str(op1), "op2": str(op2), "op2_last": str(op2), "END": "A:"}, kind
            assert spans["END"][1] == len(prompt)


# ------------------------------------------------------------ GPT-2 tokenizer
def test_every_possible_answer_is_one_gpt2_token(gpt2_bpe):
    for result in range(0, 199):  # addition 20..198, subtraction 0..89
        answer_token(gpt2_bpe, f" {result}", f"result {result}")


@pytest.mark.parametrize("task_id", TASKS)
def test_gpt2_token_alignment_and_role_positions(task_id, gpt2_bpe):
    for example in _split(task_id, "validation")[:100]:
        for kind in example.counterfactuals:
            check_aligned(gpt2_bpe, example, kind)
            answer_token(gpt2_bpe, example.counterfactual(kind).answer, example.id)
        positions = role_positions(gpt2_bpe, example.prompt, example.spans)
        n_tokens = len(gpt2_bpe(example.prompt)["input_ids"])
        assert positions["END"][-1] == n_tokens  # BOS shifts by one: the last token
        assert positions["op2_last"] == positions["op2"] and len(positions["op2"]) == 1
