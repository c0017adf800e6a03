"""The API every causal-variable method implements (built-in or plugin).

A causal method is a *recipe* for one intervention per site: :meth:`CausalMethod.build` returns an
untrained :class:`~mibench.causal.featurizer.Interchange` (a featurizer plus a feature selection) for a
(layer, token role) of a model. The harness then does the same for every method: ``fit`` the featurizer on
the site's training activations (PCA uses this), train it by interchange intervention training if it has
trainable parameters (DAS's rotation, DBM's mask), evaluate interchange accuracy, and save it.

A third party adds a featurizer by subclassing :class:`~mibench.causal.featurizer.Featurizer` (registered
with :func:`~mibench.causal.featurizer.register_featurizer` under ``namespace:name``) and a method card
with ``track: causal`` whose entry is a :class:`CausalMethod` subclass registered with
:func:`~mibench.method_registry.register_method`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from mibench.causal.featurizer import Interchange
from mibench.causal.interventions import TrainingSettings
from mibench.errors import MibenchError
from mibench.method_registry import MethodCard, get_method_card, method_class, resolve_arguments

TRAINING_ARGUMENTS = ("epochs", "lr", "batch_size")


@dataclass(frozen=True)
class Site:
    """Where an intervention acts, and what a recipe may need to know to build it."""

    layer: int
    role: str
    d_model: int
    model_id: str
    task: str
    variable: str
    sae_dir: str | None = None


class CausalMethod:
    """Base class: subclasses implement :meth:`build`; arguments come from the card's defaults."""

    card: ClassVar[MethodCard]

    def __init__(self, card: MethodCard, arguments: dict[str, Any]) -> None:
        self.card = card
        self.arguments = arguments

    def build(self, site: Site) -> Interchange:
        raise NotImplementedError

    def training(self, seed: int) -> TrainingSettings:
        """Training settings from the card's ``epochs``/``lr``/``batch_size`` arguments (when declared)."""
        defaults = TrainingSettings()
        values = {name: self.arguments.get(name, getattr(defaults, name)) for name in TRAINING_ARGUMENTS}
        return TrainingSettings(epochs=int(values["epochs"]), lr=float(values["lr"]),
                                batch_size=int(values["batch_size"]), seed=seed)


def load_causal_method(name: str, overrides: dict[str, Any] | None = None) -> CausalMethod:
    card = get_method_card(name)
    if card.track != "causal":
        raise MibenchError(f"{name!r} is a {card.track}-track method; the causal track needs a featurizer method "
                           "(see 'mibench ls methods')")
    cls = method_class(name)
    return cls(card, resolve_arguments(card, overrides or {}))
