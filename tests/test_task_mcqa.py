"""The copy-colors MCQA task: determinism, disjoint splits, counterfactual semantics, spans, tokenization."""

from __future__ import annotations

import random
import string

import pytest

from mibench.data.registry import get_card, load_task
from mibench.data.splits import partition_of
from mibench.tasks.mcqa.task import COLORS, COUNTERFACTUALS, OBJECTS, SYMBOLS, mcqa_prompt

N = 300  # enough examples to hit every pointer and every counterfactual path many times


@pytest.fixture(scope="module")
def task():
    return load_task("mcqa")


@pytest.fixture(scope="module")
def sample(task):
    return task.examples("validation", N)


def _key(example) -> str:
    return f"{example.variables['object']}|{example.variables['color']}"


# ------------------------------------------------------------------- card
def test_card_loads_and_matches_the_task_module():
    card = get_card("mcqa")
    assert card.id == "mcqa" and str(card.version) == "1.1"
    assert card.metric == "logit_difference"
    assert card.counterfactuals == list(COUNTERFACTUALS)
    assert card.default_counterfactual == "answerPosition"
    assert set(card.variables) == {"answer_pointer", "answer"}
    assert set(card.schema_roles) == {"object", "color", "correct_symbol", "correct_symbol_period", "END"}
    assert card.official is not None and card.official.hf_repo == "mib-bench/copycolors_mcqa"
    assert card.official.config == "4_answer_choices"
    assert card.official.private_repo == "mib-bench/copycolors_mcqa_private_test"
    assert card.splits == {"train": 10000, "validation": 500, "test": 500, "private_test": 500}


# ----------------------------------------------------------- determinism
def test_same_seed_same_examples_other_seed_other_examples(task):
    first = task.examples("test", 50)
    again = task.examples("test", 50)
    assert first == again  # dataclass equality: prompts, answers, counterfactuals, spans, variables
    other = task.examples("test", 50, seed=7)
    assert [e.prompt for e in other] != [e.prompt for e in first]


# ---------------------------------------------------------------- splits
def test_whole_splits_have_disjoint_keys_and_train_covers_every_object_and_color(task):
    train = task.examples("train")
    test = task.examples("test")
    validation = task.examples("validation")
    assert len(train) == 10000 and len(test) == 500 and len(validation) == 500
    train_keys = {_key(e) for e in train}
    assert not train_keys & {_key(e) for e in test}
    assert not train_keys & {_key(e) for e in validation}
    assert not {_key(e) for e in test} & {_key(e) for e in validation}
    assert all(partition_of("mcqa", _key(e)) == "test" for e in test)
    assert {e.variables["object"] for e in train} == set(OBJECTS)
    assert {e.variables["color"] for e in train} == set(COLORS)
    assert len({e.prompt for e in test}) == len(test)


def test_private_test_split_is_large_enough(task, monkeypatch):
    monkeypatch.setenv("MIBENCH_PRIVATE_SEED", "31337")
    private = task.examples("private_test")
    assert len(private) == 500
    assert all(partition_of("mcqa", _key(e)) == "private_test" for e in private)


# ----------------------------------------------------------- clean prompt
def test_clean_prompt_format_and_answer(sample):
    for e in sample:
        v = e.variables
        obj, color, choices, symbols, pointer = v["object"], v["color"], v["choices"], v["symbols"], v["answer_pointer"]
        assert symbols == list(SYMBOLS)
        assert len(set(choices)) == 4 and choices.count(color) == 1
        assert choices[pointer] == color  # the correct option's colour is the question's colour
        assert e.answer == v["answer"] == " " + symbols[pointer]
        lines = "".join(f"\n{s}. {c}" for s, c in zip(symbols, choices))
        assert e.prompt == f"Question: The {obj} is {color}. What color is the {obj}?{lines}\nAnswer:"
    assert {e.variables["answer_pointer"] for e in sample} == {0, 1, 2, 3}


def test_clean_spans_point_at_their_roles(sample):
    for e in sample:
        assert e.span_text("object") == e.variables["object"]
        assert e.span_text("color") == e.variables["color"]
        start, end = e.spans["color"]
        assert e.prompt[:start].endswith(" is ") and e.prompt[end] == "."  # the question's colour, not a choice
        assert e.span_text("correct_symbol") == e.answer.strip()
        s_end = e.spans["correct_symbol"][1]
        assert e.prompt[s_end] == "." and e.spans["correct_symbol_period"] == (s_end, s_end + 1)
        assert e.prompt[e.spans["correct_symbol"][0] - 1] == "\n"  # the option line's letter
        line = e.prompt[e.spans["correct_symbol"][0]:].split("\n")[0]
        assert line == f"{e.answer.strip()}. {e.variables['color']}"
        assert e.span_text("END") == "Answer:" and e.spans["END"][1] == len(e.prompt)


# -------------------------------------------------------- counterfactuals
def _check_cf_consistent(e, kind: str) -> None:
    """Each counterfactual's own answer, variables and spans are right for its own prompt."""
    cf = e.counterfactual(kind)
    v = cf.variables
    text, spans, variables = mcqa_prompt(v["object"], v["color"], v["symbols"], v["choices"])
    assert (cf.prompt, cf.spans, cf.variables) == (text, spans, variables)
    assert v["choices"][v["answer_pointer"]] == v["color"]
    assert cf.answer == v["answer"] == " " + v["symbols"][v["answer_pointer"]]
    assert cf.prompt[slice(*cf.spans["correct_symbol"])] == cf.answer.strip()
    assert cf.prompt[cf.spans["correct_symbol_period"][0]] == "."
    # same object, stated colour and set of colours; same layout (patching aligns positions)
    assert (v["object"], v["color"]) == (e.variables["object"], e.variables["color"])
    assert sorted(v["choices"]) == sorted(e.variables["choices"])
    assert len(cf.prompt.split()) == len(e.prompt.split())
    assert cf.prompt.count("\n") == e.prompt.count("\n")
    assert all(len(s) == 1 and s in string.ascii_uppercase for s in v["symbols"]) and len(set(v["symbols"])) == 4


def test_answer_position_moves_the_answer_and_keeps_the_letters(sample):
    for e in sample:
        _check_cf_consistent(e, "answerPosition")
        v, cv = e.variables, e.counterfactual("answerPosition").variables
        assert cv["answer_pointer"] != v["answer_pointer"]
        assert cv["symbols"] == v["symbols"]
        assert cv["answer"] != e.answer


def test_random_letter_changes_every_letter_and_nothing_else(sample):
    for e in sample:
        _check_cf_consistent(e, "randomLetter")
        v, cv = e.variables, e.counterfactual("randomLetter").variables
        assert cv["answer_pointer"] == v["answer_pointer"]
        assert cv["choices"] == v["choices"]
        assert not set(cv["symbols"]) & set(v["symbols"])
        assert cv["answer"] == " " + cv["symbols"][v["answer_pointer"]] != e.answer


def test_both_changes_pointer_and_letters(sample):
    for e in sample:
        _check_cf_consistent(e, "answerPosition_randomLetter")
        v, cv = e.variables, e.counterfactual("answerPosition_randomLetter").variables
        assert cv["answer_pointer"] != v["answer_pointer"]
        assert not set(cv["symbols"]) & set(v["symbols"])


def test_counterfactual_letters_are_not_always_in_alphabetical_order(sample):
    # random letters, as in MIB; sorted runs would let a model infer the order instead of reading it
    orders = {tuple(e.counterfactual("randomLetter").variables["symbols"]) for e in sample}
    assert any(list(o) != sorted(o) for o in orders)


def test_mcqa_prompt_refuses_malformed_choices():
    with pytest.raises(ValueError):
        mcqa_prompt("cup", "red", list(SYMBOLS), ["blue", "green", "white", "black"])
    with pytest.raises(ValueError):
        mcqa_prompt("cup", "red", list(SYMBOLS), ["red", "red", "white", "black"])
    with pytest.raises(ValueError):
        mcqa_prompt("cup", "red", ["A", "A", "C", "D"], ["red", "blue", "white", "black"])


# --------------------------------------------------------- GPT-2 tokenizer
def test_gpt2_single_tokens_and_aligned_lengths(sample, gpt2_bpe):
    from mibench.data.tokenization import answer_token, check_aligned, role_positions

    tok = gpt2_bpe
    for letter in string.ascii_uppercase:
        answer_token(tok, " " + letter, "letters")
        assert len(tok("\n" + letter + ".", add_special_tokens=False)["input_ids"]) == 3
    for color in COLORS:
        answer_token(tok, " " + color, "colors")
    assert answer_token(tok, " C", "x") != tok.convert_tokens_to_ids("C")  # why answers carry the space
    for e in sample[:100]:
        answer_token(tok, e.answer, e.id)
        for kind in COUNTERFACTUALS:
            check_aligned(tok, e, kind)
            answer_token(tok, e.counterfactual(kind).answer, e.id)
        positions = role_positions(tok, e.prompt, e.spans, bos=False)
        ids = tok(e.prompt, add_special_tokens=False)["input_ids"]
        for role in ("color", "correct_symbol", "correct_symbol_period"):
            assert len(positions[role]) == 1, role
        assert tok.decode([ids[positions["correct_symbol"][0]]]) == e.answer.strip()
        assert positions["correct_symbol_period"][0] == positions["correct_symbol"][0] + 1
        assert tok.decode([ids[positions["correct_symbol_period"][0]]]) == "."
        assert positions["END"][-1] == len(ids) - 1


def test_generation_is_independent_of_global_random_state(task):
    random.seed(1)
    first = task.examples("validation", 20)
    random.seed(2)
    assert task.examples("validation", 20) == first
