"""IOI's causal model (MIB's IOI model, causal-variable track §2.5), without the fitted logit-difference
variable.

Inputs, recorded on every IOI prompt: ``names`` (the first clause's two names in text order) and ``giver``
(the S2 name). Mechanisms::

    output_position = the slot (0 or 1) of the name in ``names`` that is not the giver
    output_token    = names[output_position]            (the bare name)
    raw_output      = " " + output_token

So interchanging ``output_position`` gives the *base's* name at the *source's* slot (an ``s1_io_flip``
source, whose answer sits in the other slot, makes the base answer the subject), and interchanging
``output_token`` gives the source's name whatever the base's slots hold. MIB's name_A/B/C are
``names[0]``, ``names[1]`` and ``giver``; its ``output_position`` (1 iff name_C == name_A) is the same
variable.

**Scoring differs from MIB on purpose.** MIB adds a ``logit_diff`` variable, ``bias + token_coeff * s_tok +
position_coeff * s_pos``, whose three coefficients are fitted per model by regressing measured logit
differences after full-vector patching of chosen attention heads, and scores IOI by the mean squared error
between that prediction and the intervened logit difference, over attention heads. mibench scores IOI
like every other task: accuracy-based IIA (does the intervened model produce ``raw_output``'s label) over
residual-stream sites. That needs no per-model fitted coefficients (which MIB ships with each submission,
so two submissions can be scored against different targets), and it puts IOI's numbers on the same 0-1
scale as MCQA's and arithmetic's, so they can be compared and averaged across tasks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from mibench.causal.causal_model import OUTPUT, CausalModel, CausalModelError


def _output_position(values: Mapping[str, Any]) -> int:
    """The one slot whose name is not the giver; a prompt where the giver repeats neither name (``abc``) or
    both slots hold it has no single answer, so it cannot be run."""
    names, giver = list(values["names"]), values["giver"]
    slots = [i for i, name in enumerate(names) if name != giver]
    if len(names) != 2 or len(slots) != 1:
        raise CausalModelError(f"IOI: giver {giver!r} must repeat exactly one of the two names {names}")
    return slots[0]


def ioi_causal_model(task_id: str = "ioi") -> CausalModel:
    return CausalModel(
        task_id=task_id,
        inputs=("names", "giver"),
        mechanisms={
            "output_position": _output_position,
            "output_token": lambda v: v["names"][v["output_position"]],
            OUTPUT: lambda v: " " + v["output_token"],
        },
        targets={
            "output_token": "the name that is not repeated (bare); label = the source's answer name",
            "output_position": "slot (0/1) of the non-repeated name; label = the base's name at the source's slot",
        },
        notes="MIB's IOI model without logit_diff; scored by accuracy-based IIA over residual-stream sites.",
    )
