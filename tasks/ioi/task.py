"""IOI generator: templates x name pairs x places x objects, split by *unordered* name pair.

Splitting by unordered pair means no pair of names seen together in training appears in validation or
test, in either order, so a model cannot pass by memorising "pair -> answer" (ordered-pair holdouts let
small models do exactly that). Every name, place and object still occurs in every split.

Counterfactual kinds (as MIB defines them; positions 1 and 2 are the two names of the first clause):

* ``s2_io_flip``: the second subject mention becomes the indirect object -> the answer flips to the subject.
* ``s1_io_flip``: the first clause's two names swap order; S2 unchanged -> same answer, other position.
* ``s1_ioi_flip_s2_ioi_flip``: both of the above -> answer flips, position unchanged.
* ``abc``: S2 becomes a third name -> no name is repeated; there is no single correct answer, so it is
  marked ``has_answer=False`` (``answer`` keeps the clean answer as a placeholder) and the third name is
  recorded in ``variables['random_c']``.
* ``random_names``: the same sentence with three different names -> the new indirect object.

Every prompt (clean and each counterfactual) also records ``names`` (the first clause's two names in text
order) and ``giver`` (the S2 name), the inputs of the causal model (:mod:`mibench.tasks.ioi.causal`).
"""

from __future__ import annotations

import random

from mibench.causal.causal_model import CausalModel
from mibench.data.example import Counterfactual, Example
from mibench.data.registry import register_task
from mibench.data.task import Task, fill, last_word_span
from mibench.tasks.ioi.causal import ioi_causal_model

NAMES = (
    "Mary", "John", "Tom", "James", "Michael", "David", "Robert", "William", "Richard", "Joseph",
    "Thomas", "Daniel", "Paul", "Mark", "George", "Kevin", "Jason", "Jeff", "Ryan", "Gary",
    "Eric", "Steven", "Andrew", "Brian", "Scott", "Adam", "Alex", "Sarah", "Lisa", "Laura",
    "Anna", "Emma", "Kate", "Rachel", "Amy", "Jessica", "Jennifer", "Elizabeth", "Susan", "Karen",
)
PLACES = ("store", "park", "school", "office", "station", "garden", "restaurant", "hospital", "beach", "house")
OBJECTS = ("drink", "book", "ring", "bag", "kiss", "letter", "bone", "basketball", "computer", "snack")
TEMPLATES = (
    "When {N1} and {N2} went to the {PLACE}, {S2} gave a {OBJECT} to",
    "When {N1} and {N2} got a {OBJECT} at the {PLACE}, {S2} decided to give it to",
    "After {N1} and {N2} went to the {PLACE}, {S2} gave a {OBJECT} to",
    "While {N1} and {N2} were working at the {PLACE}, {S2} gave a {OBJECT} to",
    "Then, {N1} and {N2} had a long argument, and afterwards {S2} said to",
    "Then, {N1} and {N2} went to the {PLACE}. {S2} gave a {OBJECT} to",
    "Friends {N1} and {N2} found a {OBJECT} at the {PLACE}. {S2} gave it to",
    "The {PLACE} {N1} and {N2} went to had a {OBJECT}. {S2} gave it to",
    "{N1} and {N2} were thinking about going to the {PLACE}. {S2} wanted to give a {OBJECT} to",
    "Afterwards, {N1} and {N2} went to the {PLACE}, and {S2} brought a {OBJECT} to",
)


def ioi_prompt(template: str, first: str, second: str, giver: str, place: str, obj: str):
    """The prompt and role spans for names in first-clause order and the giver (S2)."""
    text, slots = fill(template, {"N1": first, "N2": second, "S2": giver, "PLACE": place, "OBJECT": obj})
    return text, slots


def slot_variables(first: str, second: str, giver: str) -> dict:
    """What the causal model reads from a prompt: the first clause's two names in text order and the S2
    name (the giver). Recorded on every prompt, clean and counterfactual, since a counterfactual's own
    ``output_token``/``output_position`` are outputs of the model, not inputs it can be run on."""
    return {"names": [first, second], "giver": giver}


@register_task("ioi")
class IOITask(Task):
    def causal_model(self) -> CausalModel:
        return ioi_causal_model(self.card.id)

    def draw(self, rng: random.Random) -> tuple[str, Example]:
        template_index = rng.randrange(len(TEMPLATES))
        template = TEMPLATES[template_index]
        io, s, other = rng.sample(NAMES, 3)
        place, obj = rng.choice(PLACES), rng.choice(OBJECTS)
        io_first = rng.random() < 0.5

        def sentence(first: str, second: str, giver: str) -> tuple[str, dict, dict]:
            """Prompt, spans, and the slot variables the causal model reads (``names``, ``giver``).

            Roles follow *this* prompt, not the clean one: the subject is the name the giver repeats, so in
            ``s2_io_flip`` (the clean IO gives) IO marks the clean subject. Only ``abc``, whose giver repeats
            neither name, has no subject of its own; its first clause is the clean one, so IO and S1 keep the
            clean roles' words."""
            text, slots = ioi_prompt(template, first, second, giver, place, obj)
            subject = giver if giver in (first, second) else s
            s_slot, io_slot = ("N1", "N2") if first == subject else ("N2", "N1")
            spans = {"IO": slots[io_slot], "S1": slots[s_slot], "S2": slots["S2"], "END": last_word_span(text),
                     "N1": slots["N1"], "N2": slots["N2"]}
            return text, spans, slot_variables(first, second, giver)

        def in_order(io_name: str, s_name: str, io_is_first: bool) -> tuple[str, str]:
            return (io_name, s_name) if io_is_first else (s_name, io_name)

        def variables(answer: str, first: str) -> dict:
            return {"output_token": answer, "output_position": 0 if answer == first else 1}

        first_name = io if io_first else s
        prompt, spans, slots = sentence(*in_order(io, s, io_first), s)
        flipped_first = s if io_first else io

        s2_prompt, s2_spans, s2_slots = sentence(*in_order(io, s, io_first), io)  # giver is now IO: answer S
        s1_prompt, s1_spans, s1_slots = sentence(*in_order(io, s, not io_first), s)
        both_prompt, both_spans, both_slots = sentence(*in_order(io, s, not io_first), io)
        abc_prompt, abc_spans, abc_slots = sentence(*in_order(io, s, io_first), other)
        new_io, new_s, _ = rng.sample([n for n in NAMES if n not in (io, s)], 3)
        random_prompt, random_spans, random_slots = sentence(*in_order(new_io, new_s, io_first), new_s)

        counterfactuals = {
            "s2_io_flip": Counterfactual(s2_prompt, " " + s, {**variables(s, first_name), **s2_slots}, s2_spans),
            "s1_io_flip": Counterfactual(s1_prompt, " " + io, {**variables(io, flipped_first), **s1_slots}, s1_spans),
            "s1_ioi_flip_s2_ioi_flip": Counterfactual(
                both_prompt, " " + s, {**variables(s, flipped_first), **both_slots}, both_spans),
            "abc": Counterfactual(abc_prompt, " " + io, {**variables(io, first_name), "random_c": other, **abc_slots},
                                  abc_spans, has_answer=False),
            "random_names": Counterfactual(
                random_prompt, " " + new_io, {**variables(new_io, new_io if io_first else new_s), **random_slots},
                random_spans),
        }
        example = Example(
            id="",
            prompt=prompt,
            answer=" " + io,
            counterfactuals=counterfactuals,
            spans=spans,
            variables={**variables(io, first_name), "io": io, "s": s, "place": place, "object": obj, **slots},
            template=template,
        )
        return "|".join(sorted((io, s))), example
