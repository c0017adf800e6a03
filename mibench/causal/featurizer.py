"""Featurizers and interchange interventions: the one API every causal-track method implements.

A :class:`Featurizer` maps a hidden vector ``x`` ``[..., d]`` to features ``f`` ``[..., k]`` and an error
term ``e`` ``[..., d]`` such that ``inverse(f, e) == x`` exactly (the error is whatever the features do not
explain). An :class:`Interchange` pairs a featurizer with a :class:`FeatureSelection` and performs the
neural interchange intervention of MIB::

    f_b, e_b = F(x_base);  f_s, _ = F(x_source)
    f_out = f_b + w * (f_s - f_b)          # w = 1 on the selected features, 0 elsewhere
    x_out = F^-1(f_out, e_b)

so the base keeps its own error term and only the selected features come from the source.

Featurizer *classes* are registered by name with :func:`register_featurizer` (the decorator third-party
plugins use too, with a ``namespace:`` prefix). That registry is what makes saved featurizers data, not
code: a saved intervention is a safetensors file of tensors plus a JSON card naming the registered
featurizer and selection classes and their constructor arguments (:mod:`mibench.causal.storage`).
The :class:`Featurizer` base class and :func:`register_featurizer` are defined in
:mod:`mibench.causal.featurizer_base` (so the SAE featurizer can subclass them without importing this
module) and are imported from here.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import BaseModel, Field
from torch import Tensor, nn

from mibench.causal.arguments import (
    FeatureBasisSchema,
    FeaturizerArguments,
    SelectionArguments,
    SiteDimensions,
    width_problems,
)
from mibench.causal.featurizer_base import FEATURIZERS, Featurizer, register_featurizer
from mibench.errors import MibenchError
from mibench.registry import Registry

SELECTIONS: Registry[type[FeatureSelection]] = Registry(
    "feature selection", decorator="register_selection", name_attribute="registry_name")


def register_selection(name: str):
    """Class decorator registering a :class:`FeatureSelection` subclass under ``name`` (plugins: ``ns:name``)."""
    return SELECTIONS.register(name)


def featurizer_class(name: str) -> type[Featurizer]:
    """The featurizer class registered as ``name``; a plugin's (``ns:name``) is found by importing the code
    behind that plugin's causal method cards, where its featurizers register."""
    return FEATURIZERS.get(name)


def selection_class(name: str) -> type[FeatureSelection]:
    return SELECTIONS.get(name)


# =========================================================================================== featurizers
@register_featurizer("identity")
class IdentityFeaturizer(Featurizer):
    """The hidden vector itself (MIB's "full vector" / neuron basis): features are the ``d`` neurons."""

    Arguments = FeaturizerArguments

    @classmethod
    def feature_count(cls, args: FeaturizerArguments) -> int:
        return args.d_model

    @property
    def n_features(self) -> int:
        return self.d_model

    def featurize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        return x, torch.zeros_like(x)

    def inverse(self, features: Tensor, error: Tensor) -> Tensor:
        return features + error


@register_featurizer("subspace")
class SubspaceFeaturizer(FeatureBasisSchema, Featurizer):
    """An orthonormal ``k``-dimensional subspace (DAS): ``f = x W``, ``e = x - x W W^T``.

    ``W`` ``[d, k]`` is kept orthonormal by ``torch.nn.utils.parametrizations.orthogonal`` and always in
    float32 (the parametrisation does not support half precision). Interchanging all ``k`` features gives
    ``x_b + (x_s - x_b) W W^T``, pyvene's ``LowRankRotatedSpaceIntervention``. A ``trainable=False``
    subspace is a fixed rotation (e.g. loaded from another tool).
    """

    class Arguments(FeaturizerArguments):
        n_features: int = Field(ge=1)
        trainable: bool = True

    @classmethod
    def stored_tensor_shapes(cls, args: Arguments) -> dict[str, tuple[int, ...]]:
        return {"rotation.parametrizations.weight.original": (args.n_features, args.d_model)}

    def __init__(self, d_model: int, n_features: int, trainable: bool = True) -> None:
        super().__init__(d_model)
        if not 1 <= n_features <= d_model:
            raise MibenchError(f"a subspace of a {d_model}-dimensional space needs 1..{d_model} features, "
                               f"got {n_features}")
        self.k = int(n_features)
        self.trainable = bool(trainable)
        layer = nn.Linear(d_model, n_features, bias=False)
        nn.init.orthogonal_(layer.weight)
        self.rotation = nn.utils.parametrizations.orthogonal(layer, use_trivialization=False)
        self.rotation.requires_grad_(self.trainable)

    @property
    def n_features(self) -> int:
        return self.k

    @property
    def basis(self) -> Tensor:
        """``W`` ``[d, k]`` with orthonormal columns."""
        return self.rotation.weight.T

    def featurize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        w = self.basis
        f = x.to(w.dtype) @ w
        return f, x - (f @ w.T).to(x.dtype)

    def inverse(self, features: Tensor, error: Tensor) -> Tensor:
        return (features @ self.basis.T).to(error.dtype) + error

    def config(self) -> dict[str, Any]:
        return {"d_model": self.d_model, "n_features": self.k, "trainable": self.trainable}


@register_featurizer("pca")
class PCAFeaturizer(FeatureBasisSchema, Featurizer):
    """Principal components of the *training* activations at the site, *centred*.

    ``f = (x - mu) V`` with ``V`` ``[d, k]`` the top-``k`` right singular vectors of the centred training
    activations, ``e = x - mu - f V^T``. MIB's reference fit PCA on test inputs too and did not centre
    (it standardised, fit, and then applied the components to raw activations); here the fit sees
    training activations only and the mean is stored, so ``inverse(featurize(x)) == x``.
    """

    class Arguments(FeaturizerArguments):
        n_features: int | None = Field(default=None, ge=1)

    @classmethod
    def feature_count(cls, args: Arguments) -> int:
        return args.n_features or args.d_model

    @classmethod
    def stored_tensor_shapes(cls, args: Arguments) -> dict[str, tuple[int, ...]]:
        k = cls.feature_count(args)
        return {"mean": (args.d_model,), "components": (args.d_model, k), "explained_variance": (k,)}

    def __init__(self, d_model: int, n_features: int | None = None) -> None:
        super().__init__(d_model)
        self.k = int(n_features or d_model)
        self.register_buffer("mean", torch.zeros(d_model))
        self.register_buffer("components", torch.zeros(d_model, self.k))
        self.register_buffer("explained_variance", torch.zeros(self.k))

    @property
    def n_features(self) -> int:
        return self.k

    def fit(self, activations: Tensor) -> None:
        x = activations.detach().to(torch.float64)
        if x.shape[0] < 2:
            raise MibenchError("PCA needs at least two training activations")
        mean = x.mean(0)
        _, s, vh = torch.linalg.svd(x - mean, full_matrices=False)
        k = min(self.k, vh.shape[0])
        components = torch.zeros(self.d_model, self.k, dtype=torch.float64)
        components[:, :k] = vh[:k].T  # with fewer samples than k, the extra columns stay zero (unused)
        self.mean.copy_(mean.to(self.mean.dtype))
        self.components.copy_(components.to(self.components.dtype))
        variance = torch.zeros(self.k, dtype=torch.float64)
        variance[:k] = s[:k] ** 2 / (x.shape[0] - 1)
        self.explained_variance.copy_(variance.to(self.explained_variance.dtype))

    def featurize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        centred = x - self.mean
        f = centred @ self.components
        return f, centred - f @ self.components.T

    def inverse(self, features: Tensor, error: Tensor) -> Tensor:
        return features @ self.components.T + self.mean + error

    def config(self) -> dict[str, Any]:
        return {"d_model": self.d_model, "n_features": self.k}


# ============================================================================================ selections
class FeatureSelection(nn.Module):
    """Which features an interchange swaps: ``weights()`` is ``[k]`` in [0, 1], or None for all."""

    registry_name: ClassVar[str] = ""
    #: the declared constructor arguments (see :class:`Featurizer`)
    Arguments: ClassVar[type[BaseModel] | None] = SelectionArguments

    @classmethod
    def check_arguments(cls, args: Any, dims: SiteDimensions) -> list[tuple[str, str]]:
        return []

    @classmethod
    def stored_tensor_shapes(cls, args: Any) -> dict[str, tuple[int, ...]]:
        return {}

    def __init__(self, n_features: int) -> None:
        super().__init__()
        self.n_features = int(n_features)

    def weights(self, *, training: bool) -> Tensor | None:
        raise NotImplementedError

    def selected(self) -> Tensor:
        """Indices of the features swapped at evaluation."""
        w = self.weights(training=False)
        return torch.arange(self.n_features) if w is None else w.nonzero().flatten().cpu()

    def penalty(self) -> Tensor | None:
        """A sparsity term added to the training loss (None: nothing to regularise)."""
        return None

    def step(self, progress: float) -> None:
        """Called before every training step with ``progress`` in [0, 1] (temperature annealing)."""

    def config(self) -> dict[str, Any]:
        return {"n_features": self.n_features}


@register_selection("all")
class AllFeatures(FeatureSelection):
    """Swap every feature (full vector, DAS, all SAE latents)."""

    def weights(self, *, training: bool) -> Tensor | None:
        return None


@register_selection("fixed")
class FixedFeatures(FeatureSelection):
    """A fixed subset (e.g. the top principal components, or a submitted index list)."""

    class Arguments(SelectionArguments):
        indices: list[int] | None = None

    @classmethod
    def check_arguments(cls, args: Arguments, dims: SiteDimensions) -> list[tuple[str, str]]:
        bad = [(i, v) for i, v in enumerate(args.indices or []) if not 0 <= v < args.n_features]
        return [(f"indices[{i}]", f"{v} is outside 0..{args.n_features - 1}") for i, v in bad[:5]]

    def __init__(self, n_features: int, indices: list[int] | None = None) -> None:
        super().__init__(n_features)
        indices = list(range(n_features)) if indices is None else [int(i) for i in indices]
        bad = [i for i in indices if not 0 <= i < n_features]
        if bad:
            raise MibenchError(f"feature indices {bad[:5]} out of range 0..{n_features - 1}")
        self.indices = sorted(set(indices))
        mask = torch.zeros(n_features)
        mask[self.indices] = 1.0
        self.register_buffer("mask", mask, persistent=False)

    def weights(self, *, training: bool) -> Tensor | None:
        return self.mask

    def config(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "indices": self.indices}


@register_selection("learned-mask")
class LearnedMask(FeatureSelection):
    """Desiderata-based masking (DBM): a learned sigmoid gate per feature, sharpened by annealing.

    Training uses the soft gate ``sigmoid(m / T)`` with ``T`` annealed linearly from ``temperature_start``
    to ``temperature_end`` over training, plus ``sparsity * mean(gate)`` in the loss; evaluation swaps
    exactly the features with ``m > 0``. MIB's baselines set the sparsity coefficient to 0 (every feature
    that does not hurt stays on); here it defaults to a value that actually prunes, and is a method
    argument. Logits start at 0 (gate 0.5).
    """

    class Arguments(SelectionArguments):
        sparsity: float = Field(default=0.0, ge=0, allow_inf_nan=False)
        temperature_start: float = Field(default=1.0, gt=0, allow_inf_nan=False)
        temperature_end: float = Field(default=0.01, gt=0, allow_inf_nan=False)

    @classmethod
    def stored_tensor_shapes(cls, args: Arguments) -> dict[str, tuple[int, ...]]:
        return {"logits": (args.n_features,)}

    def __init__(self, n_features: int, sparsity: float = 0.0, temperature_start: float = 1.0,
                 temperature_end: float = 0.01) -> None:
        super().__init__(n_features)
        self.logits = nn.Parameter(torch.zeros(n_features))
        self.sparsity = float(sparsity)
        self.temperature_start, self.temperature_end = float(temperature_start), float(temperature_end)
        self.temperature = self.temperature_start

    def step(self, progress: float) -> None:
        progress = min(max(progress, 0.0), 1.0)
        self.temperature = self.temperature_start + (self.temperature_end - self.temperature_start) * progress

    def weights(self, *, training: bool) -> Tensor:
        if training:
            return torch.sigmoid(self.logits / self.temperature)
        return (self.logits > 0).to(self.logits.dtype)

    def penalty(self) -> Tensor | None:
        if self.sparsity == 0:
            return None
        return self.sparsity * torch.sigmoid(self.logits / self.temperature).mean()

    def config(self) -> dict[str, Any]:
        return {"n_features": self.n_features, "sparsity": self.sparsity,
                "temperature_start": self.temperature_start, "temperature_end": self.temperature_end}


# ========================================================================================== interchange
class Interchange(nn.Module):
    """A featurizer plus a feature selection: the intervention trained and evaluated at one site."""

    def __init__(self, featurizer: Featurizer, selection: FeatureSelection | None = None) -> None:
        super().__init__()
        self.featurizer = featurizer
        self.selection = selection if selection is not None else AllFeatures(featurizer.n_features)
        if self.selection.n_features != featurizer.n_features:
            raise MibenchError(f"selection over {self.selection.n_features} features does not fit a featurizer "
                               f"with {featurizer.n_features}")

    @property
    def trainable(self) -> bool:
        return any(p.requires_grad for p in self.parameters())

    @property
    def learns_from_data(self) -> bool:
        """Whether fitting or training can change it (so the harness must compute training activations)."""
        return self.trainable or type(self.featurizer).fit is not Featurizer.fit

    def forward(self, base: Tensor, source: Tensor, *, training: bool = False) -> Tensor:
        f_base, e_base = self.featurizer.featurize(base)
        f_source, _ = self.featurizer.featurize(source)
        w = self.selection.weights(training=training)
        f_out = f_source if w is None else f_base + w.to(f_base.dtype) * (f_source - f_base)
        return self.featurizer.inverse(f_out, e_base)

    def describe(self) -> dict[str, Any]:
        """The JSON half of a saved intervention: registered class names and constructor arguments."""
        return {
            "featurizer": {"class": self.featurizer.registry_name, "config": self.featurizer.config()},
            "selection": {"class": self.selection.registry_name, "config": self.selection.config()},
            "n_features": self.featurizer.n_features,
            "n_selected": int(self.selection.selected().numel()),
        }

    @classmethod
    def from_description(cls, description: dict[str, Any]) -> Interchange:
        """Rebuild the modules (shapes only; load the state dict after) from :meth:`describe`'s output."""
        featurizer = featurizer_class(description["featurizer"]["class"])(**description["featurizer"]["config"])
        selection = selection_class(description["selection"]["class"])(**description["selection"]["config"])
        return cls(featurizer, selection)
