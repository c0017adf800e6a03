"""A causal-track plugin: a new featurizer class and the method (recipe) that builds it at every site.

The featurizer registers under the plugin's namespace, so featurizers saved by ``mibench evaluate`` name
``example:random-basis`` in their JSON card and load back through the registry (never through pickle).
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor

from mibench.causal.arguments import FeatureBasisSchema, FeaturizerArguments
from mibench.causal.featurizer import Featurizer, Interchange, register_featurizer
from mibench.causal.method import CausalMethod, Site
from mibench.method_registry import register_method


@register_featurizer("example:random-basis")
class RandomBasisFeaturizer(FeatureBasisSchema, Featurizer):
    """``f = x Q`` for a seeded random ``Q`` ``[d, k]`` with orthonormal columns; ``e = x - f Q^T``."""

    # The constructor's arguments and the tensors they create, declared so that a saved file of this class
    # is checked (types, ranges, the model's width, the tensors' shapes) before anything is built;
    # FeatureBasisSchema adds the checks against the model (width, at most d_model features).
    class Arguments(FeaturizerArguments):
        n_features: int = Field(ge=1)
        seed: int = 0

    @classmethod
    def stored_tensor_shapes(cls, args: Arguments) -> dict[str, tuple[int, ...]]:
        return {"basis": (args.d_model, args.n_features)}

    def __init__(self, d_model: int, n_features: int, seed: int = 0) -> None:
        super().__init__(d_model)
        self.k, self.seed = int(n_features), int(seed)
        generator = torch.Generator().manual_seed(self.seed)
        q, _ = torch.linalg.qr(torch.randn(d_model, self.k, generator=generator))
        self.register_buffer("basis", q)

    @property
    def n_features(self) -> int:
        return self.k

    def featurize(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = x.to(self.basis.dtype) @ self.basis
        return f, x - (f @ self.basis.T).to(x.dtype)

    def inverse(self, features: Tensor, error: Tensor) -> Tensor:
        return (features @ self.basis.T).to(error.dtype) + error

    def config(self) -> dict:
        return {"d_model": self.d_model, "n_features": self.k, "seed": self.seed}


@register_method("example:random-subspace")
class RandomSubspace(CausalMethod):
    def build(self, site: Site) -> Interchange:
        k = min(int(self.arguments["n_features"]), site.d_model)
        return Interchange(RandomBasisFeaturizer(site.d_model, k, seed=int(self.arguments["seed"])))
