"""Causal models: a task's high-level algorithm, and the counterfactual label rule interchange uses.

A causal model is a set of variables, each computed by a mechanism from variables earlier in a fixed
(topological) order, starting from *input* variables that the task's generator records on every prompt
(``Example.variables`` and ``Counterfactual.variables``). ``raw_output`` is the answer string the task
expects, with its leading space (``" C"``).

The counterfactual label rule (MIB's ``run_interchange``): to localise variable ``X``, compute ``X`` on the
counterfactual input, fix it in the base input, and run the remaining mechanisms; the resulting
``raw_output`` is what the language model should say after the neural interchange intervention.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from mibench.data.example import Example
from mibench.errors import MibenchError, UnknownNameError, close_matches

OUTPUT = "raw_output"

Mechanism = Callable[[Mapping[str, Any]], Any]


class CausalModelError(MibenchError, ValueError):
    """A causal model that cannot run on an input (a missing input variable, an unknown target)."""


class CauseIsolateView(Protocol):
    """A task's definition of RAVEL-style cause and isolate pairs (scored by :mod:`mibench.causal.isolation`)."""

    #: says which examples a run evaluates (e.g. "MIB's rebalanced mix: ..."), copied into the record
    examples: str

    def evaluated_examples(self, examples: Sequence[Example], variable: str) -> list[Example]:
        """The examples a run localising ``variable`` trains and tests on (a subset of ``examples``)."""
        ...

    def is_cause(self, base: Mapping[str, Any], variable: str) -> bool:
        """Whether a pair with base variables ``base`` is a cause pair for ``variable`` (else: isolate)."""
        ...


@dataclass(frozen=True)
class CausalModel:
    """Input variables, mechanisms in topological order (the last computes :data:`OUTPUT`), and the
    variables the causal track may localise.

    Attributes:
        inputs: names read from the prompt's recorded variables.
        mechanisms: ``{variable: function(values) -> value}``; each function may read inputs and any
            variable listed before it. Must include :data:`OUTPUT`.
        targets: variables a featurizer can be asked to localise (``--variable``), with a description.
        cause_isolate: optional; a task that defines cause and isolate pairs (RAVEL) gets them scored next
            to IIA, on the examples it chooses (:mod:`mibench.causal.isolation`).
    """

    task_id: str
    inputs: tuple[str, ...]
    mechanisms: dict[str, Mechanism]
    targets: dict[str, str]
    notes: str = ""
    cause_isolate: CauseIsolateView | None = None
    _order: tuple[str, ...] = field(init=False, repr=False, default=())

    def __post_init__(self) -> None:
        if OUTPUT not in self.mechanisms:
            raise CausalModelError(f"causal model of {self.task_id!r} has no mechanism for {OUTPUT!r}")
        unknown = [t for t in self.targets if t not in self.mechanisms]
        if unknown:
            raise CausalModelError(f"causal model of {self.task_id!r}: targets {unknown} have no mechanism")
        object.__setattr__(self, "_order", tuple(self.mechanisms))

    @property
    def variables(self) -> tuple[str, ...]:
        return self.inputs + self._order

    def check_target(self, variable: str) -> None:
        if variable not in self.targets:
            known = ", ".join(self.targets)
            raise UnknownNameError("variable", variable,
                                   f"task {self.task_id!r} has no causal variable {variable!r} (variables: {known})",
                                   close_matches(variable, self.targets))

    def run_forward(self, inputs: Mapping[str, Any], interventions: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every variable's value on ``inputs``, with ``interventions`` fixed instead of computed."""
        interventions = dict(interventions or {})
        values: dict[str, Any] = {}
        for name in self.inputs:
            if name in interventions:
                values[name] = interventions[name]
            elif name in inputs:
                values[name] = inputs[name]
            else:
                raise CausalModelError(f"causal model of {self.task_id!r} needs input variable {name!r}; "
                                       f"the prompt records only {sorted(inputs)}")
        for name, mechanism in self.mechanisms.items():
            values[name] = interventions[name] if name in interventions else mechanism(values)
        return values

    def output(self, inputs: Mapping[str, Any]) -> str:
        """The answer the causal model gives on an unmodified input."""
        return self.run_forward(inputs)[OUTPUT]

    def interchange_label(self, base: Mapping[str, Any], source: Mapping[str, Any], variable: str) -> str:
        """``raw_output`` of ``base`` with ``variable`` set to its value on ``source`` (MIB's label rule)."""
        self.check_target(variable)
        value = self.run_forward(source)[variable]
        return self.run_forward(base, {variable: value})[OUTPUT]
