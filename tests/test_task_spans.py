"""Every span of every generated prompt marks what its task card defines, worked out from the prompt's own
variables (never from the generator's bookkeeping): the causal track intervenes at these spans, so a span on
the wrong word moves an intervention silently."""

from __future__ import annotations

import re

import pytest

from mibench.data.example import Example
from mibench.data.registry import get_card, load_task
from mibench.data.splits import PRIVATE_SEED_ENV


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


def _ioi_clean(prompt: str, v: dict) -> dict[str, tuple[int, int]]:
    """Every IOI role by the card's definitions, from the prompt's own names and giver: N1/N2 the first
    clause's names in order, S2 the giver's last mention, IO the first mention of the name the giver does
    not repeat (the indirect object, the answer) and S1 the first mention of the one it repeats (the
    subject). ``abc``'s giver repeats neither name; its spans are checked against the clean prompt's. The
    recorded output variables (the causal labels' ingredients) are checked against the same definitions."""
    first = _first_word(prompt, v["names"][0])
    second = re.compile(rf"\b{v['names'][1]}\b").search(prompt, first[1]).span()
    giver = [m.span() for m in re.finditer(rf"\b{v['giver']}\b", prompt)][-1]
    spans = {"N1": first, "N2": second, "S2": giver, "END": _last_word(prompt)}
    if v["giver"] not in v["names"]:
        return spans
    io = next(name for name in v["names"] if name != v["giver"])
    # the card's output variables on this prompt: the name not repeated, and its slot
    assert (v["output_token"], v["output_position"]) == (io, v["names"].index(io)), (prompt, v)
    return {**spans, "IO": _first_word(prompt, io), "S1": _first_word(prompt, v["giver"])}


EXPECTED = {
    "arithmetic_addition": (_arithmetic, _arithmetic),
    "arithmetic_subtraction": (_arithmetic, _arithmetic),
    "mcqa": (_mcqa, _mcqa),
    "induction": (_induction, _induction),
    "ioi": (_ioi_clean, _ioi_clean),
}


def _prompts(example: Example):
    yield "clean", example.prompt, example.variables, example.spans
    for kind, cf in example.counterfactuals.items():
        yield kind, cf.prompt, cf.variables, cf.spans


def _split_examples(task_id: str, split: str, monkeypatch) -> list[Example]:
    """The whole split at its card size (``private_test`` with a stand-in secret seed)."""
    monkeypatch.setenv(PRIVATE_SEED_ENV, "12345")
    return load_task(task_id).examples(split)


@pytest.mark.parametrize("task_id", sorted(EXPECTED))
def test_every_span_marks_what_the_card_defines(task_id, monkeypatch):
    """Every clean and counterfactual prompt of every split the card declares."""
    card = get_card(task_id)
    clean_rule, counterfactual_rule = EXPECTED[task_id]
    checked = 0
    for split in card.splits:
        for example in _split_examples(task_id, split, monkeypatch):
            for kind, prompt, variables, spans in _prompts(example):
                assert set(spans) == set(card.schema_roles), (example.id, kind)
                expected = (clean_rule if kind == "clean" else counterfactual_rule)(prompt, variables)
                # A role the card cannot define on this prompt (IO and S1 of IOI's abc, whose giver repeats
                # neither name) keeps the clean prompt's span: its words are the clean prompt's there.
                expected = {**{r: tuple(example.spans[r]) for r in set(card.schema_roles) - set(expected)},
                            **expected}
                assert set(expected) == set(card.schema_roles), (example.id, kind)
                for role, span in expected.items():
                    assert tuple(spans[role]) == span, (example.id, kind, role, prompt[slice(*spans[role])])
                    assert prompt[slice(*span)] == prompt[slice(*spans[role])]
                    checked += 1
    assert checked >= sum(card.splits.values()) * 2 * len(card.schema_roles)


def test_ioi_counterfactual_roles_follow_each_prompt_not_the_clean_one():
    """Hand-checked: in s2_io_flip the clean IO gives, so the prompt's own IO is the clean subject."""
    example = load_task("ioi").examples("test", 1)[0]
    io, s = example.variables["io"], example.variables["s"]
    words = {kind: {role: cf.prompt[slice(*cf.spans[role])] for role in ("IO", "S1", "S2")}
             for kind, cf in example.counterfactuals.items()}
    assert words["s2_io_flip"] == words["s1_ioi_flip_s2_ioi_flip"] == {"IO": s, "S1": io, "S2": io}
    assert words["s1_io_flip"] == {"IO": io, "S1": s, "S2": s}
    assert words["abc"] == {"IO": io, "S1": s, "S2": example.counterfactual("abc").variables["random_c"]}
