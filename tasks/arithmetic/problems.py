"""Two-digit arithmetic in MIB's style, shared by ``arithmetic_addition`` and ``arithmetic_subtraction``.

The two tasks differ only in their :class:`Operation` (the word in the prompt, the function, and whether
operand order matters for splitting); the prompt, the causal variables, the counterfactuals and the split
keys are built here once, so both tasks mean exactly the same thing by each of them.

Causal variables (MIB's arithmetic causal model from the causal-variable track):

* ``op1_tens, op1_ones, op2_tens, op2_ones``: the operand digits.
* ``ones_carry``: what the ones column passes to the tens column. For addition it is the carry,
  ``1[op1_ones + op2_ones >= 10]``; for subtraction it is the *borrow*, ``1[op1_ones < op2_ones]``.
  Both are "the ones-column result ``op(op1_ones, op2_ones)`` falls outside 0..9", which is how it is
  computed here.
* ``ones_out, tens_out, hundreds_out``: the digits of the result. For addition these equal MIB's formulas
  (``(o1+o2) mod 10``, ``(t1+t2+carry) mod 10``, ``1[t1+t2+carry > 9]``); for subtraction
  ``ones_out = (o1-o2) mod 10``, ``tens_out = t1-t2-borrow`` and ``hundreds_out`` is always 0.
* ``result``: the integer answer.

The causal model that recomputes these from the operand digits (and lets ``ones_carry`` be fixed) is in
:mod:`mibench.tasks.arithmetic.causal`; it uses the same :class:`Operation` column rules as the generator.

Counterfactual kinds:

* ``random``: an independent problem of the task whose result differs from the clean one (an equal
  result would make the logit difference between the two answers identically zero). It is drawn from the
  same problems as the clean prompt, so it obeys the same exclusions below (before task version 2.0 it was
  drawn from every valid problem, including those the card says never occur; 2.0 replaces exactly those
  draws and leaves every other prompt as it was, see :func:`random_counterpart`).
* ``ones_carry``: the same tens digits; new ones digits, chosen uniformly among those that keep
  ``ones_out`` and flip ``ones_carry`` (and, for subtraction, keep ``op1 >= op2``). The result therefore
  moves by exactly 10. Problems with no such flip are never drawn: for addition those whose ones digits sum
  to exactly 9 (no carry, and no pair of digits sums to 19); for subtraction those with equal tens digits
  (a borrow would make the result negative) and those with equal ones digits (``ones_out`` 0 without a
  borrow would need ``o1 - o2 = -10``).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, ClassVar

from mibench.causal.causal_model import CausalModel
from mibench.data.example import Counterfactual, Example, Span
from mibench.data.task import Task, fill, last_word_span
from mibench.tasks.arithmetic.causal import arithmetic_causal_model

OPERANDS = range(10, 100)
TEMPLATE = "Q: How much is {op1} {operator} {op2}? A:"


@dataclass(frozen=True)
class Operation:
    """What distinguishes one arithmetic task from the other.

    The column rules below are written once in terms of :attr:`apply`, so the generator's variables and
    the causal model (:mod:`mibench.tasks.arithmetic.causal`) cannot disagree about what a carry is.
    """

    word: str  # the operator as the prompt spells it ("plus", "minus")
    apply: Callable[[int, int], int]
    commutative: bool  # whether (a, b) and (b, a) are one problem for splitting

    def carry(self, ones1: int, ones2: int) -> int:
        """Carry (addition) or borrow (subtraction): the ones-column result leaves the digit range 0..9."""
        return _leaves_digit_range(self.apply(ones1, ones2))

    def tens_column(self, tens1: int, tens2: int, carry: int) -> int:
        """The tens column's value: the carry joins it the way the operation combines digits, so it is
        added for addition (``t1 + t2 + carry``) and subtracted as a borrow for subtraction
        (``t1 - t2 - borrow``). Taking ``carry`` as an argument is what lets the causal model fix it."""
        return self.apply(self.apply(tens1, tens2), carry)


ADDITION = Operation("plus", lambda a, b: a + b, commutative=True)
SUBTRACTION = Operation("minus", lambda a, b: a - b, commutative=False)


@dataclass(frozen=True)
class Problem:
    """One ``op1 <operator> op2`` problem; every causal variable is derived from the operands."""

    operation: Operation
    op1: int
    op2: int

    @property
    def result(self) -> int:
        return self.operation.apply(self.op1, self.op2)

    @property
    def ones_carry(self) -> int:
        """Carry (addition) or borrow (subtraction), see :meth:`Operation.carry`."""
        return self.operation.carry(self.op1 % 10, self.op2 % 10)

    @property
    def answer(self) -> str:
        """What follows ``A:`` in text: a space and the result without leading zeros."""
        return f" {self.result}"

    @property
    def split_key(self) -> str:
        """Operands, unordered when the operation commutes, so no test problem was seen in training."""
        pair = sorted((self.op1, self.op2)) if self.operation.commutative else (self.op1, self.op2)
        return f"{pair[0]}|{pair[1]}"

    def variables(self) -> dict[str, int]:
        result = self.result
        return {
            "op1_tens": self.op1 // 10,
            "op1_ones": self.op1 % 10,
            "op2_tens": self.op2 // 10,
            "op2_ones": self.op2 % 10,
            "ones_carry": self.ones_carry,
            "ones_out": result % 10,
            "tens_out": result // 10 % 10,
            "hundreds_out": result // 100,
            "result": result,
        }

    def prompt(self) -> tuple[str, dict[str, Span]]:
        """The prompt and its role spans (``op2_last``: the token roles resolve to op2's last token)."""
        text, spans = _render(self.operation.word, self.op1, self.op2)
        return text, dict(spans)

    def counterfactual(self) -> Counterfactual:
        text, spans = self.prompt()
        return Counterfactual(text, self.answer, self.variables(), spans)


@lru_cache(maxsize=None)
def _render(word: str, op1: int, op2: int) -> tuple[str, tuple[tuple[str, Span], ...]]:
    """Prompt text and spans, cached: filling the template dominated generation time, and an operation has
    at most 8,100 prompts. Spans come back as a tuple so no caller can mutate the cached copy."""
    text, slots = fill(TEMPLATE, {"op1": str(op1), "operator": word, "op2": str(op2)})
    spans = {"op1": slots["op1"], "op2": slots["op2"], "op2_last": slots["op2"], "END": last_word_span(text)}
    return text, tuple(spans.items())


def is_valid(operation: Operation, op1: int, op2: int) -> bool:
    """Both operands two-digit and a non-negative result (subtraction needs ``op1 >= op2``)."""
    return op1 in OPERANDS and op2 in OPERANDS and operation.apply(op1, op2) >= 0


def sample_problem(operation: Operation, rng: random.Random) -> Problem:
    """A problem drawn uniformly from the valid ones (rejection keeps the distribution uniform)."""
    while True:
        op1, op2 = rng.choice(OPERANDS), rng.choice(OPERANDS)
        if is_valid(operation, op1, op2):
            return Problem(operation, op1, op2)


def carry_flips(problem: Problem) -> tuple[Problem, ...]:
    """Every valid problem with the same tens digits and ``ones_out`` but the opposite ``ones_carry``."""
    operation = problem.operation
    tens1, tens2 = problem.op1 - problem.op1 % 10, problem.op2 - problem.op2 % 10
    column = operation.apply(problem.op1 % 10, problem.op2 % 10)
    candidates = (Problem(operation, tens1 + ones1, tens2 + ones2) for ones1, ones2 in _ones_flips(operation, column))
    return tuple(c for c in candidates if is_valid(operation, c.op1, c.op2))


@lru_cache(maxsize=None)
def _ones_flips(operation: Operation, column: int) -> tuple[tuple[int, int], ...]:
    """Ones-digit pairs whose column value has ``column``'s last digit but the other carry (cached: the
    answer depends only on the column value, of which each operation has fewer than 30)."""
    carry = _leaves_digit_range(column)
    pairs = []
    for ones1 in range(10):
        for ones2 in range(10):
            value = operation.apply(ones1, ones2)
            if value % 10 == column % 10 and _leaves_digit_range(value) != carry:
                pairs.append((ones1, ones2))
    return tuple(pairs)


def _leaves_digit_range(column: int) -> int:
    """1 when a column's value is outside 0..9, i.e. it passes a carry or needs a borrow, else 0."""
    return int(not 0 <= column <= 9)


def sample_flippable(operation: Operation, rng: random.Random) -> tuple[Problem, tuple[Problem, ...]]:
    """A problem drawn uniformly from those that admit a ``ones_carry`` counterfactual, and its flips.

    Every problem of the task, clean or ``random`` counterpart, comes from here, so the task's problems are
    one set: those the card describes (no addition whose ones digits sum to 9; no subtraction with equal tens
    or equal ones digits). Rejection keeps the draw uniform over that set."""
    while True:
        problem = sample_problem(operation, rng)
        flips = carry_flips(problem)
        if flips:
            return problem, flips


def random_counterpart(problem: Problem, rng: random.Random) -> Problem:
    """An independent problem of the task (see :func:`sample_flippable`) with a different result.

    The draw from ``rng`` is the one task versions 1.x made (any valid problem with another result), so
    ``rng`` advances exactly as it did then and every clean problem and ``ones_carry`` counterfactual of every
    split is unchanged. Only a draw the task never poses (no carry flip) is replaced, by a draw from a side
    stream seeded with the two problems. Both draws are uniform over the task's problems with another
    result, so their mixture is too."""
    candidate = _with_other_result(problem, lambda: sample_problem(problem.operation, rng))
    if carry_flips(candidate):
        return candidate
    problems = f"{problem.op1} {problem.operation.word} {problem.op2}: instead of {candidate.op1}, {candidate.op2}"
    side = random.Random(problems)  # str seeds hash deterministically
    return _with_other_result(problem, lambda: sample_flippable(problem.operation, side)[0])


def _with_other_result(problem: Problem, draw: Callable[[], Problem]) -> Problem:
    """The first drawn problem whose result differs from ``problem``'s."""
    while True:
        other = draw()
        if other.result != problem.result:
            return other


class ArithmeticTask(Task):
    """Shared ``draw`` and causal model for the arithmetic tasks; a subclass only names its
    :class:`Operation`."""

    operation: ClassVar[Operation]

    def causal_model(self) -> CausalModel:
        return arithmetic_causal_model(self.card.id, self.operation)

    def draw(self, rng: random.Random) -> tuple[str, Example]:
        problem, flips = sample_flippable(self.operation, rng)
        counterfactuals = {
            "random": random_counterpart(problem, rng).counterfactual(),
            "ones_carry": rng.choice(flips).counterfactual(),
        }
        return problem.split_key, _example(problem, counterfactuals)


def _example(problem: Problem, counterfactuals: dict[str, Counterfactual]) -> Example:
    text, spans = problem.prompt()
    variables: dict[str, Any] = problem.variables()
    return Example(
        id="",
        prompt=text,
        answer=problem.answer,
        counterfactuals=counterfactuals,
        spans=spans,
        variables=variables,
        template=TEMPLATE.replace("{operator}", problem.operation.word),
    )
