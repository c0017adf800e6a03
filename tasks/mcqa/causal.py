"""MCQA's causal model (MIB's "simple MCQA" model, causal-variable track §2.1).

Inputs are what every MCQA prompt records (clean and counterfactual alike): ``symbols`` (the four option
letters, in slot order), ``choices`` (the four colours, in slot order) and ``color`` (the colour the
question states). Two intermediate variables are localisable:

* ``answer_pointer``: the slot (0-3) whose colour is the stated colour. Interchanging it asks "which slot
  does the model point at": the label is the *base's* letter at the *source's* slot, so an
  ``answerPosition`` source changes the label while a ``randomLetter`` source (same slot) leaves the base
  answer unchanged.
* ``answer``: the letter of that slot, with its leading space. Interchanging it asks "which letter does the
  model emit": the label is the source's own answer, whatever the base's letters are.

The object does not enter any mechanism: the question names the colour outright, so the object is only
context (MIB's model carries it in ``question`` for prompt rendering, not for the answer).

ARC (:func:`arc_causal_model`, MIB's ``ARC_easy`` model) has the same two variables over the same option
lines, but its questions are opaque science questions: the pointer cannot be computed from the prompt, so
it is read from the data's answer key (``answer_key``, recorded by the official loader).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mibench.causal.causal_model import OUTPUT, CausalModel, CausalModelError, Mechanism


def _answer_pointer(values: Mapping[str, Any]) -> int:
    """The slot of the stated colour; a prompt where it is missing or repeated has no single answer."""
    choices, color = list(values["choices"]), values["color"]
    if choices.count(color) != 1:
        raise CausalModelError(f"MCQA: colour {color!r} must occur exactly once among the choices {choices}")
    return choices.index(color)


def _answer(values: Mapping[str, Any]) -> str:
    """The letter at the pointed slot, as the model would write it after ``Answer:``."""
    return " " + str(values["symbols"][values["answer_pointer"]])


def _choice_model(task_id: str, inputs: tuple[str, ...], pointer: Mechanism, pointer_meaning: str,
                  notes: str) -> CausalModel:
    """The multiple-choice model shared by MCQA and ARC; they differ only in how the pointer is found."""
    return CausalModel(
        task_id=task_id,
        inputs=inputs,
        mechanisms={"answer_pointer": pointer, "answer": _answer, OUTPUT: lambda values: values["answer"]},
        targets={
            "answer_pointer": f"slot (0-3) of {pointer_meaning}; label = base letter at that slot",
            "answer": "letter of the correct option with its leading space; label = the source's answer",
        },
        notes=notes,
    )


def mcqa_causal_model(task_id: str = "mcqa") -> CausalModel:
    return _choice_model(task_id, ("symbols", "choices", "color"), _answer_pointer,
                         "the option holding the stated colour",
                         "MIB simple-MCQA model: answer_pointer = index of color in choices; answer = ' ' + "
                         "symbols[pointer].")


def arc_causal_model(task_id: str) -> CausalModel:
    """ARC-Easy/-Challenge: ``answer_pointer`` = the answer key; ``answer`` = the letter of that option."""
    return _choice_model(task_id, ("symbols", "answer_key"), lambda values: int(values["answer_key"]),
                         "the correct option (the answer key)",
                         "MIB ARC model: answer_pointer = answerKey; answer = ' ' + symbols[pointer].")
