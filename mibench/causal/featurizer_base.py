"""The :class:`Featurizer` interface and the registry of featurizer classes, below every implementation.

Built-in featurizers (:mod:`mibench.causal.featurizer`, :mod:`mibench.causal.sae`) and plugins subclass
:class:`Featurizer` and register with :func:`register_featurizer`; both are re-exported by
:mod:`mibench.causal.featurizer`, the module to import them from. They live here so that the SAE featurizer can build on them without importing
:mod:`mibench.causal.featurizer`; the registry finds the SAE class lazily by name, so the dependency runs one way.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel
from torch import Tensor, nn

from mibench.causal.arguments import SiteDimensions, width_problems
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
    shapes (the tensors themselves travel in the state dict). A class whose saved files are loaded back
    declares those arguments as ``Arguments`` (a pydantic model) and the tensors they create with
    :meth:`stored_tensor_shapes`, so a file from outside is checked before anything is built
    (:mod:`mibench.causal.arguments`).
    """

    registry_name: ClassVar[str] = ""
    #: the declared constructor arguments (None: undeclared, its saved files cannot be loaded)
    Arguments: ClassVar[type[BaseModel] | None] = None

    @classmethod
    def check_arguments(cls, args: Any, dims: SiteDimensions) -> list[tuple[str, str]]:
        """``(field, message)`` for arguments that do not fit the model (default: the width must match)."""
        return width_problems(args.d_model, dims)

    @classmethod
    def feature_count(cls, args: Any) -> int:
        """The number of features an instance built from ``args`` has."""
        raise NotImplementedError

    @classmethod
    def stored_tensor_shapes(cls, args: Any) -> dict[str, tuple[int, ...]]:
        """Name -> shape of the persistent tensors a saved file of an instance built from ``args`` holds."""
        return {}

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
