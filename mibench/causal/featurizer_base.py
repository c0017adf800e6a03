"""The :class:`Featurizer` interface and the registry of featurizer classes, below every implementation.

Built-in featurizers (:mod:`mibench.causal.featurizer`, :mod:`mibench.causal.sae`) and plugins subclass
:class:`Featurizer` and register with :func:`register_featurizer`; both are re-exported by
:mod:`mibench.causal.featurizer`, the module to import them from. They live here so that the SAE featurizer can build on them without importing
:mod:`mibench.causal.featurizer`; the registry finds the SAE class lazily by name, so the dependency runs one way.
"""

from __future__ import annotations

from typing import Any, ClassVar

from torch import Tensor, nn

from mibench.registry import Registry

#: Built-in featurizers defined outside :mod:`mibench.causal.featurizer`, imported the first time their name
#: is used (so looking up ``sae`` needs no file-level import of :mod:`mibench.causal.sae`).
_BUILTIN_ELSEWHERE = {"sae": "mibench.causal.sae:SAEFeaturizer"}


def _import_plugin_featurizers(name: str) -> None:
    """A plugin's featurizer (``ns:name``) registers in the code behind that plugin's causal method cards:
    import every causal method entry of namespace ``ns`` (only registered class names are ever instantiated
    from a saved card)."""
    import importlib

    from mibench.method_registry import list_method_cards

    if ":" not in name:
        return
    namespace = name.split(":")[0]
    for card in list_method_cards("causal"):
        if card.id.startswith(namespace + ":"):
            importlib.import_module(card.entry.split(":")[0])


FEATURIZERS: Registry[type[Featurizer]] = Registry(
    "featurizer", decorator="register_featurizer", declared=lambda: _BUILTIN_ELSEWHERE,
    discover=_import_plugin_featurizers, name_attribute="registry_name")


def register_featurizer(name: str):
    """Class decorator registering a :class:`Featurizer` subclass under ``name`` (plugins: ``ns:name``)."""
    return FEATURIZERS.register(name)


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
