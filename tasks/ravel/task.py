"""RAVEL (cities) generator: ask for a city's continent, country or language in one of several templates.

MIB's RAVEL task probes *stored knowledge*: the prompt names a city and the model must recall one of its
attributes, which nothing in the prompt states::

    People in Stebrou usually speak                      -> " French"
    Q: What is the continent of Bakur? A:                -> " Europe"

Cities come from the procedural table of :mod:`mibench.tasks.ravel.entities` (612 invented cities in 51 real
countries); every answer is one word, so it is one token for a word tokenizer (the circuit track's
logit difference needs single-token answers). There are :data:`TEMPLATES_PER_ATTRIBUTE` templates per
attribute, in the style of RAVEL's city templates, including MIB's fallback ``Q: What is the {attr} of
{entity}? A:``.

**Split key: the city.** Validation and test hold out whole cities, as RAVEL's entity split does, so a
featurizer trained on train-split cities is tested on cities it never saw. A language model, however, must
*know* a city to answer about it (MIB's LMs were pretrained on all of them and MIB filters out what they do
not know), so :attr:`RavelTask.model_training_splits` lets the zoo trainer teach the model the facts of the
train, validation and test cities; the test split then measures recall of known facts, not generalisation.
Cities of the private_test partition are never used (the card has no private_test split), so they stay
unknown to every zoo model.

Counterfactual kinds; every source city comes from the base city's own partition, so splits stay disjoint
by entity:

* ``entity``: the same template about another city whose queried attribute differs (token-aligned with the
  clean prompt; the circuit track's default).
* ``prompt_template``: another city, the same queried attribute, another template of it (MIB's
  ``prompt_template_counterfactual``).
* ``attribute``: another city queried for another attribute (MIB's ``attribute_counterfactual``); its
  city's value of the *base's* attribute differs from the base's, so interchanging the base's attribute
  has a visible effect.

MIB's fourth kind, ``wikipedia`` (a Wikipedia-style sentence about another city, with no answer), has no
procedural counterpart; the official loader reads it.
"""

from __future__ import annotations

import random
from functools import lru_cache
from typing import Any

from mibench.causal.causal_model import CausalModel
from mibench.data.example import Counterfactual, Example, Span
from mibench.data.registry import register_task
from mibench.data.splits import partition_of
from mibench.data.task import Task, fill, last_word_span
from mibench.tasks.ravel.causal import ravel_causal_model
from mibench.tasks.ravel.entities import ATTRIBUTES, City, city_table

#: RAVEL-style city templates; ``{city}`` is the entity. Words and punctuation are separated by spaces
#: except where RAVEL writes them together ("A:", "city?"), which any tokenizer splits the same way.
TEMPLATES: dict[str, tuple[str, ...]] = {
    "Continent": (
        "Q: What is the continent of {city}? A:",
        "{city} is a city in the continent of",
        "{city} is located on the continent of",
        "The city of {city} lies on the continent of",
        "People from {city} live on the continent of",
        "On a map , {city} is found on the continent of",
        "A flight to {city} lands on the continent of",
        "The continent where {city} lies is",
    ),
    "Country": (
        "Q: What is the country of {city}? A:",
        "{city} is a city in the country of",
        "{city} is part of the country of",
        "The city of {city} is in the country of",
        "{city} belongs to the nation of",
        "People in {city} are citizens of",
        "The mayor of {city} answers to the government of",
        "On a map , {city} is found in the country of",
    ),
    "Language": (
        "Q: What is the language of {city}? A:",
        "People in {city} usually speak",
        "The main language spoken in {city} is",
        "In {city} , most people speak",
        "Children in {city} learn to read in",
        "Street signs in {city} are written in",
        "The local newspaper of {city} is printed in",
        "Visitors to {city} should learn some",
    ),
}
TEMPLATES_PER_ATTRIBUTE = 8
COUNTERFACTUALS = ("entity", "prompt_template", "attribute")


def ravel_prompt(city: City, attribute: str, template: str) -> tuple[str, dict[str, Span], dict[str, Any]]:
    """Prompt, role spans and variables of one question about ``city``; clean and counterfactual alike."""
    if template not in TEMPLATES[attribute]:
        raise ValueError(f"template {template!r} is not a {attribute} template")
    text, slots = fill(template, {"city": city.name})
    spans = {"entity": slots["city"], "END": last_word_span(text)}
    attributes = {a: city.attribute(a) for a in ATTRIBUTES}
    variables = {"entity": city.name, "queried_attribute": attribute, "attributes": attributes,
                 **attributes, "answer": city.attribute(attribute), "template": template}
    return text, spans, variables


def _counterfactual(city: City, attribute: str, template: str) -> Counterfactual:
    text, spans, variables = ravel_prompt(city, attribute, template)
    return Counterfactual(prompt=text, answer=" " + variables["answer"], variables=variables, spans=spans)


@lru_cache(maxsize=1)
def _all_cities() -> tuple[City, ...]:
    return tuple(city_table().values())


@lru_cache(maxsize=None)
def cities_by_partition(task_id: str) -> dict[str, tuple[City, ...]]:
    """The table's cities grouped by the partition their name hashes to (for this task id)."""
    groups: dict[str, list[City]] = {}
    for city in city_table().values():
        groups.setdefault(partition_of(task_id, city.name), []).append(city)
    return {split: tuple(cities) for split, cities in groups.items()}


@lru_cache(maxsize=None)
def _differing(task_id: str, split: str, attribute: str, value: str) -> tuple[City, ...]:
    """The cities of partition ``split`` whose ``attribute`` is not ``value``, in table order (cached: the
    generator asks for these lists thousands of times)."""
    return tuple(c for c in cities_by_partition(task_id)[split] if c.attribute(attribute) != value)


@register_task("ravel")
class RavelTask(Task):
    """RAVEL cities: recall Continent / Country / Language of a city; split by city."""

    #: The zoo trainer teaches the model the cities of these partitions (see the module docstring).
    model_training_splits = ("train", "validation", "test")

    def causal_model(self) -> CausalModel:
        return ravel_causal_model(self.card.id)

    def draw(self, rng: random.Random) -> tuple[str, Example]:
        city = rng.choice(_all_cities())
        attribute = rng.choice(ATTRIBUTES)
        template = rng.choice(TEMPLATES[attribute])
        prompt, spans, variables = ravel_prompt(city, attribute, template)
        # source cities: same partition as the base city, another value of the queried attribute
        others = _differing(self.card.id, partition_of(self.card.id, city.name), attribute, variables["answer"])

        other_template = rng.choice([t for t in TEMPLATES[attribute] if t != template])
        other_attribute = rng.choice([a for a in ATTRIBUTES if a != attribute])
        counterfactuals = {
            "entity": _counterfactual(rng.choice(others), attribute, template),
            "prompt_template": _counterfactual(rng.choice(others), attribute, other_template),
            "attribute": _counterfactual(rng.choice(others), other_attribute, rng.choice(TEMPLATES[other_attribute])),
        }
        example = Example(id="", prompt=prompt, answer=" " + variables["answer"], counterfactuals=counterfactuals,
                          spans=spans, variables=variables, template=template)
        return city.name, example
