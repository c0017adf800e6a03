"""The :class:`Featurizer` interface and the registry of featurizer classes, below every implementation.

Built-in featurizers (:mod:`mibench.causal.featurizer`, :mod:`mibench.causal.sae`) and plugins subclass
:class:`Featurizer` and register with :func:`register_featurizer`; both are re-exported by
:mod:`mibench.causal.featurizer`, the module to import them from. They live here so that the SAE featurizer
can build on them while :mod:`mibench.causal.featurizer`, which looks registered classes up by name and
therefore needs the SAE registered, imports :mod:`mibench.causal.sae` -- a one-way dependency.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from mibench.plugins import check_registration

_FEATURIZERS: dict[str, type[Featurizer]] = {}


def register_featurizer(name: str):
    """Class decorator registering a :class:`Featurizer` subclass under ``name`` (plugins: ``ns:name``)."""

    def decorate(cls: type[Featurizer]) -> type[Featurizer]:
        check_registration(name, cls)
        existing = _FEATURIZERS.get(name)
        if existing is not None and existing is not cls:
            raise ValueError(f"featurizer {name!r} is already registered by {existing.__module__}.{existing.__qualname__}")
        _FEATURIZERS[name] = cls
        cls.registry_name = name
        return cls

    return decorate


class Featurizer(nn.Module):
    """Base class. Subclasses implement :meth:`featurize` and :meth:`inverse`; :meth:`fit` is optional.

    ``config()`` must return the JSON-serialisable keyword arguments that rebuild an instance of the same
    shapes (the tensors themselves travel in the state dict).
    """

    registry_name: ClassVar[str] = ""

    def __init__(self, d_model: int) -> None:
        super().__init__()
        self.d_model = int(d_model)

    @property
    def n_features(self) -> int:
        raise NotImplementedError

    def featurize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def inverse(self, features: Tensor, error: Tensor) -> Tensor:
        raise NotImplementedError

    def fit(self, activations: Tensor) -> None:
        """Non-gradient fitting on training activations ``[N, d]`` at the site (default: nothing)."""

    def config(self) -> dict[str, Any]:
        return {"d_model": self.d_model}

    @property
    def weights_by_reference(self) -> bool:
        """True when ``config()`` names where the tensors come from (e.g. a shipped SAE), so a saved
        intervention stores the reference instead of copying fixed weights into every site's file."""
        return False
