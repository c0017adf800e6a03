"""RAVEL's causal model (MIB's ``RAVEL_task``, causal-variable track section 2.4).

Inputs recorded on every prompt: ``entity`` (the city), ``queried_attribute`` (``Continent``, ``Country``
or ``Language``) and ``attributes``, the entity's attribute values as far as they are known: the procedural
generator records all three from its city table; an official row records only the value its label gives.

Mechanisms, as in MIB: ``Continent``, ``Country`` and ``Language`` each depend on the entity alone (here:
read from ``attributes``), and ``answer`` is the queried attribute's value; ``raw_output`` = ``" " + answer``.

Label rule (interchange): localising ``Country`` with a source city sets the base's ``Country`` to the
source's; the output changes only if the base asks for the country ("cause"); a base asking for the
language or the continent keeps its answer ("isolate"), because in this model the language and the
continent are properties of the city, not computed from its country.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mibench.causal.causal_model import OUTPUT, CausalModel, CausalModelError
from mibench.tasks.ravel.disentanglement import RavelCauseIsolate
from mibench.tasks.ravel.entities import ATTRIBUTES


def _lookup(attribute: str):
    """The mechanism of one attribute: its recorded value, or ``None`` when the prompt does not know it."""

    def mechanism(values: Mapping[str, Any]) -> Any:
        return dict(values["attributes"]).get(attribute)

    mechanism.__name__ = f"lookup_{attribute}"
    return mechanism


def _answer(values: Mapping[str, Any]) -> str:
    queried = values["queried_attribute"]
    if queried not in ATTRIBUTES:
        raise CausalModelError(f"RAVEL: queried attribute {queried!r} is none of {', '.join(ATTRIBUTES)}")
    value = values[queried]
    if value is None:
        raise CausalModelError(
            f"RAVEL: the {queried} of {values['entity']!r} is unknown for this prompt (official rows carry only "
            "the value of their own queried attribute; a label needing another one cannot be computed)")
    return str(value)


def ravel_causal_model(task_id: str = "ravel") -> CausalModel:
    return CausalModel(
        task_id=task_id,
        inputs=("entity", "queried_attribute", "attributes"),
        mechanisms={**{a: _lookup(a) for a in ATTRIBUTES}, "answer": _answer,
                    OUTPUT: lambda values: " " + values["answer"]},
        targets={
            "Continent": "the city's continent; changes the output only when the prompt asks for the continent",
            "Country": "the city's country; changes the output only when the prompt asks for the country",
            "Language": "the city's language; changes the output only when the prompt asks for the language",
        },
        cause_isolate=RavelCauseIsolate(),
        notes="MIB RAVEL model: Continent/Country/Language = lookup(entity); answer = the queried attribute's "
              "value; raw_output = ' ' + answer.",
    )
