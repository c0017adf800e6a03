"""The API every circuit-localization method implements (built-in or plugin).

A method receives an :class:`AttributionContext` -- the patching engine, the tokenised attribution
batches, the requested level and ablation -- and returns a :class:`~mibench.graph.Graph` carrying its
scores at that level. It never touches model modules: everything goes through the engine, and the
shared math lives in :mod:`mibench.circuits.attribution`, :mod:`~mibench.circuits.exact` and
:mod:`~mibench.circuits.flow_routes`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, ClassVar

from mibench.circuits.batches import CircuitBatch
from mibench.engine.ablation import Ablation, mean_ablation
from mibench.engine.engine import PatchingEngine
from mibench.errors import MibenchError
from mibench.graph.graph import Graph
from mibench.method_registry import MethodCard, get_method_card, method_class, resolve_arguments


@dataclass
class AttributionContext:
    engine: PatchingEngine
    batches: list[CircuitBatch]
    level: str = "edge"
    ablation: str = "patching"
    seed: int = 0
    #: Called with the number of examples each time a batch is done (drives progress bars).
    on_batch: Callable[[int], None] | None = field(default=None, repr=False)
    #: Position-aware methods: the task's span schema, and each batch's ``[B, T]`` span indices.
    span_schema: Any = None
    span_ids_of: Callable[[CircuitBatch], Any] | None = field(default=None, repr=False)

    @property
    def n_examples(self) -> int:
        return sum(b.size for b in self.batches)

    @cached_property
    def reference_ablation(self) -> Ablation | None:
        """For mean ablation: per-node means over the attribution data's clean prompts (MIB's choice). For
        optimal ablation: per-node constants fitted on the same prompts (cached; see
        :mod:`mibench.engine.optimal_ablation`)."""
        prompts = [(b.clean_ids, b.attention_mask) for b in self.batches]
        if self.ablation == "mean":
            return mean_ablation(self.engine, prompts)
        if self.ablation == "optimal":
            from mibench.engine.optimal_ablation import optimal_ablation

            return optimal_ablation(self.engine, prompts)
        return None


class CircuitMethod:
    """Base class: subclasses implement :meth:`score`; arguments come from the card's defaults."""

    card: ClassVar[MethodCard]

    def __init__(self, card: MethodCard, arguments: dict[str, Any]) -> None:
        self.card = card
        self.arguments = arguments

    def score(self, context: AttributionContext) -> Graph:
        raise NotImplementedError

    def check(self, level: str, ablation: str) -> None:
        if level not in self.card.levels:
            raise MibenchError(f"method {self.card.id!r} scores {', '.join(self.card.levels)} level, not {level!r}")
        if ablation not in self.card.ablations:
            raise MibenchError(
                f"method {self.card.id!r} supports ablation {', '.join(self.card.ablations)}, not {ablation!r}")


def load_method(name: str, overrides: dict[str, Any] | None = None) -> CircuitMethod:
    card = get_method_card(name)
    if card.track != "circuit":
        raise MibenchError(f"{name!r} is a {card.track}-track method, not a circuit method (run it with --track causal)")
    cls = method_class(name)
    return cls(card, resolve_arguments(card, overrides or {}))


def gradient_attribution(context: AttributionContext, **options: Any) -> Graph:
    """:func:`mibench.circuits.attribution.attribute` on a context (the one call every gradient method makes)."""
    from mibench.circuits.attribution import attribute

    return attribute(context.engine, context.batches, level=context.level, ablation=context.ablation,
                     reference=context.reference_ablation, on_batch=context.on_batch, **options)
