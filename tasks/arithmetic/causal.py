"""The arithmetic causal model (MIB's two-digit addition model, causal-variable track §2.3), shared by
``arithmetic_addition`` and ``arithmetic_subtraction``.

Inputs are the four operand digits every arithmetic prompt records. The mechanisms run column by column,
as written addition does::

    ones_carry   = operation.carry(op1_ones, op2_ones)             (carry, or borrow for subtraction)
    ones_out     = operation(op1_ones, op2_ones) mod 10
    tens column  = operation.tens_column(op1_tens, op2_tens, ones_carry)
    tens_out     = tens column mod 10;  hundreds_out = tens column // 10
    result       = 100 * hundreds_out + 10 * tens_out + ones_out
    raw_output   = " " + str(result)                               (no leading zeros, like the answers)

Everything the two tasks differ in comes from their :class:`~mibench.tasks.arithmetic.problems.Operation`,
so there is one implementation. Only ``ones_carry`` is a target (MIB's only arithmetic variable).
Interchanging it keeps the base's digits and fixes the carry to the source's: with a ``ones_carry`` source
(carry flipped) the label is the base result +10 (addition, carry 0 -> 1) or -10 (subtraction, borrow
0 -> 1), and the reverse; with a ``random`` source it is the base answer whenever the carries agree.

**The intervened result stays inside the range of the task's own answers** for every problem the
generator draws (checked exhaustively in ``tests/test_causal_models.py``):

* Addition: the tens column is ``t1 + t2 + c`` in 2..19 for tens digits 1..9 and either carry, and
  ``ones_out`` is at most 8 because ones digits summing to 9 are never drawn (18 is the largest pair sum).
  So the label lies in 20..198, exactly the range of ``10..99 + 10..99``.
* Subtraction: problems with equal tens digits are never drawn, so ``t1 > t2`` and the tens column
  ``t1 - t2 - b`` is in 0..8 for either borrow: never negative. Problems with equal ones digits are never
  drawn either, so ``ones_out`` is in 1..9 and the label lies in 1..89, the range of the answers.

A tens column outside 0..19 (not reachable from drawn problems; possible only for hand-made inputs) raises
:class:`~mibench.causal.causal_model.CausalModelError` rather than yield a label no answer could have.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mibench.causal.causal_model import OUTPUT, CausalModel, CausalModelError

if TYPE_CHECKING:
    from mibench.tasks.arithmetic.problems import Operation

INPUTS = ("op1_tens", "op1_ones", "op2_tens", "op2_ones")


def arithmetic_causal_model(task_id: str, operation: Operation) -> CausalModel:
    def tens_column(values: Mapping[str, Any]) -> int:
        column = operation.tens_column(values["op1_tens"], values["op2_tens"], values["ones_carry"])
        if not 0 <= column <= 19:
            raise CausalModelError(f"{task_id}: tens column {column} of {dict(values)} is outside 0..19; "
                                   "its result would be negative or have more than three digits")
        return column

    mechanisms = {
        "ones_carry": lambda v: operation.carry(v["op1_ones"], v["op2_ones"]),
        "ones_out": lambda v: operation.apply(v["op1_ones"], v["op2_ones"]) % 10,
        "tens_out": lambda v: tens_column(v) % 10,
        "hundreds_out": lambda v: tens_column(v) // 10,
        "result": lambda v: 100 * v["hundreds_out"] + 10 * v["tens_out"] + v["ones_out"],
        OUTPUT: lambda v: f" {v['result']}",
    }
    return CausalModel(
        task_id=task_id,
        inputs=INPUTS,
        mechanisms=mechanisms,
        targets={"ones_carry": "what the ones column passes to the tens column (0 or 1): the carry for "
                               "addition, the borrow for subtraction"},
        notes=f"MIB's column-wise two-digit model with operator {operation.word!r}; the result is rebuilt "
              "from the digits and the (possibly intervened) ones_carry.",
    )
