"""Copy-colors MCQA generator: a stated object colour, asked back as a four-way multiple-choice question.

The prompt states a colour and asks for it again, so the content part is trivial; what the task probes is
the *multiple-choice machinery*: finding which option line holds the stated colour (``answer_pointer``)
and emitting that line's letter (``answer``)::

    Question: The cup is red. What color is the cup?
    A. blue
    B. green
    C. red
    D. white
    Answer:                                  -> " C"

**Answers carry a leading space** (``" C"``, not ``"C"``). The MIB reference loader tokenizes the bare
label string, which for BPE/SentencePiece tokenizers is a different token from the one a model actually
predicts after ``"Answer:"`` (GPT-2: ``"C"`` = 34 vs ``" C"`` = 327). We score the token that follows the
prompt in text, as :class:`~mibench.data.example.Example` requires for every task.

Split key: the ``(object, color)`` pair. With 40 objects and 12 colours there are 480 pairs; hashing the
pair keeps every test pair out of training while every object and every colour still occurs in every
split. Each pair expands to 11C3 distractor sets x 4! orders = 3,960 distinct clean prompts, so even a
split holding only a few dozen pairs has far more prompts than the 500 it needs.

Counterfactual kinds (MIB's causal-track names):

* ``answerPosition``: same letters; the correct colour moves to a different slot and the other three
  colours are permuted over the remaining slots -> the answer is the letter of the new slot.
* ``randomLetter``: same colours in the same slots; the four letters are replaced by four other distinct
  capital letters (none of the clean ones) -> same pointer, new letter.
* ``answerPosition_randomLetter``: both at once -> new pointer and new letters.

Every counterfactual keeps the object, the stated colour and the set of colours, so its prompt has the
same words, in the same places, as the clean prompt: token lengths match for any tokenizer in which each
letter and each `` colour`` is one token (the causal track patches position by position).

The causal model (:mod:`mibench.tasks.mcqa.causal`) reads ``symbols``, ``choices`` and ``color`` from
each prompt's variables.
"""

from __future__ import annotations

import random
import string
from typing import Any

from mibench.causal.causal_model import CausalModel
from mibench.data.example import Counterfactual, Example, Span
from mibench.data.registry import register_task
from mibench.data.task import Task, fill, last_word_span
from mibench.tasks.mcqa.causal import mcqa_causal_model

OBJECTS = (
    "car", "ball", "cup", "hat", "shirt", "chair", "table", "book", "pen", "bag",
    "shoe", "lamp", "phone", "bike", "door", "box", "kite", "mug", "bowl", "sock",
    "scarf", "towel", "pillow", "blanket", "umbrella", "bucket", "bottle", "candle", "clock", "key",
    "spoon", "plate", "balloon", "coat", "truck", "boat", "crayon", "ribbon", "tent", "wallet",
)
# Basic colour words that are single tokens after a space in common BPE vocabularies (GPT-2 checked in
# tests/test_task_mcqa.py), so clean/counterfactual prompts align and colour roles are one token each.
COLORS = ("red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white", "gray", "gold")
SYMBOLS = ("A", "B", "C", "D")
NUM_CHOICES = len(SYMBOLS)
ALPHABET = tuple(string.ascii_uppercase)

TEMPLATE = (
    "Question: The {object} is {color}. What color is the {object_again}?\n"
    + "".join(f"{{symbol{i}}}. {{choice{i}}}\n" for i in range(NUM_CHOICES))
    + "Answer:"
)
COUNTERFACTUALS = ("answerPosition", "randomLetter", "answerPosition_randomLetter")


def mcqa_prompt(obj: str, color: str, symbols: list[str], choices: list[str]) -> tuple[str, dict[str, Span], dict[str, Any]]:
    """Prompt, role spans and variables for one question; the pointer is where ``color`` sits in ``choices``.

    Built through one function for clean and counterfactual prompts alike, so both always share the same
    layout and their spans are located the same way.
    """
    if len(set(choices)) != NUM_CHOICES or choices.count(color) != 1:
        raise ValueError(f"choices {choices} must be {NUM_CHOICES} distinct colours containing {color!r} once")
    if len(set(symbols)) != NUM_CHOICES:
        raise ValueError(f"symbols {symbols} must be {NUM_CHOICES} distinct letters")
    pointer = choices.index(color)
    values = {"object": obj, "color": color, "object_again": obj}
    values.update({f"symbol{i}": s for i, s in enumerate(symbols)})
    values.update({f"choice{i}": c for i, c in enumerate(choices)})
    text, slots = fill(TEMPLATE, values)
    symbol_start, symbol_end = slots[f"symbol{pointer}"]
    spans = {
        "object": slots["object"],
        "color": slots["color"],
        "correct_symbol": (symbol_start, symbol_end),
        "correct_symbol_period": (symbol_end, symbol_end + 1),
        "END": last_word_span(text),
    }
    answer = " " + symbols[pointer]
    variables = {
        "answer_pointer": pointer,
        "answer": answer,
        "symbols": list(symbols),
        "choices": list(choices),
        "object": obj,
        "color": color,
    }
    return text, spans, variables


def _counterfactual(obj: str, color: str, symbols: list[str], choices: list[str]) -> Counterfactual:
    text, spans, variables = mcqa_prompt(obj, color, symbols, choices)
    return Counterfactual(prompt=text, answer=variables["answer"], variables=variables, spans=spans)


def _move_answer(rng: random.Random, choices: list[str], pointer: int) -> list[str]:
    """The same colours with the correct one in a different slot and the distractors shuffled around it."""
    new_pointer = rng.choice([i for i in range(NUM_CHOICES) if i != pointer])
    distractors = [c for i, c in enumerate(choices) if i != pointer]
    rng.shuffle(distractors)
    moved = distractors[:new_pointer] + [choices[pointer]] + distractors[new_pointer:]
    return moved


def _other_letters(rng: random.Random, symbols: list[str]) -> list[str]:
    """Four distinct capital letters, none of them among ``symbols`` (so every slot's letter changes)."""
    return rng.sample([letter for letter in ALPHABET if letter not in symbols], NUM_CHOICES)


@register_task("mcqa")
class MCQATask(Task):
    """Copy-colors MCQA with symbols A-D; split by (object, colour) pair."""

    def causal_model(self) -> CausalModel:
        return mcqa_causal_model(self.card.id)

    def draw(self, rng: random.Random) -> tuple[str, Example]:
        obj = rng.choice(OBJECTS)
        color = rng.choice(COLORS)
        choices = rng.sample([c for c in COLORS if c != color], NUM_CHOICES - 1)
        choices.insert(rng.randrange(NUM_CHOICES), color)
        symbols = list(SYMBOLS)

        prompt, spans, variables = mcqa_prompt(obj, color, symbols, choices)
        pointer = variables["answer_pointer"]

        moved = _move_answer(rng, choices, pointer)
        letters = _other_letters(rng, symbols)
        moved_both = _move_answer(rng, choices, pointer)
        letters_both = _other_letters(rng, symbols)
        counterfactuals = {
            "answerPosition": _counterfactual(obj, color, symbols, moved),
            "randomLetter": _counterfactual(obj, color, letters, choices),
            "answerPosition_randomLetter": _counterfactual(obj, color, letters_both, moved_both),
        }
        example = Example(
            id="",
            prompt=prompt,
            answer=variables["answer"],
            counterfactuals=counterfactuals,
            spans=spans,
            variables=variables,
            template=TEMPLATE,
        )
        return f"{obj}|{color}", example
