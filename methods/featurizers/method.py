"""Built-in causal-variable methods: each is a recipe of a featurizer and a feature selection per site.

The featurizers and selections themselves live in :mod:`mibench.causal.featurizer` (and the SAE in
:mod:`mibench.causal.sae`); training, fitting and evaluation are shared by the harness, so a recipe only
says *what* to build.
"""

from __future__ import annotations

from mibench.causal.featurizer import (
    FixedFeatures,
    IdentityFeaturizer,
    Interchange,
    LearnedMask,
    PCAFeaturizer,
    SubspaceFeaturizer,
)
from mibench.causal.method import CausalMethod, Site
from mibench.method_registry import register_method


def _mask(method: CausalMethod, n_features: int) -> LearnedMask:
    args = method.arguments
    return LearnedMask(n_features, sparsity=args["sparsity"], temperature_start=args["temperature_start"],
                       temperature_end=args["temperature_end"])


def _sae(site: Site):
    from mibench.causal.sae import sae_for

    return sae_for(site.model_id, site.layer, site.sae_dir)


@register_method("full-vector")
class FullVector(CausalMethod):
    """Swap the whole hidden vector: plain activation patching, the no-featurizer baseline."""

    def build(self, site: Site) -> Interchange:
        return Interchange(IdentityFeaturizer(site.d_model))


@register_method("das")
class DistributedAlignmentSearch(CausalMethod):
    """Swap a learned orthonormal k-dimensional subspace."""

    def build(self, site: Site) -> Interchange:
        k = min(int(self.arguments["n_features"]), site.d_model)
        return Interchange(SubspaceFeaturizer(site.d_model, k))


@register_method("dbm")
class DesiderataBasedMasking(CausalMethod):
    """Swap a learned subset of neurons."""

    def build(self, site: Site) -> Interchange:
        return Interchange(IdentityFeaturizer(site.d_model), _mask(self, site.d_model))


@register_method("pca")
class PrincipalComponents(CausalMethod):
    """Swap the top-k principal components of the site's training activations (fixed, untrained)."""

    def build(self, site: Site) -> Interchange:
        featurizer = PCAFeaturizer(site.d_model)
        k = min(int(self.arguments["n_features"]), site.d_model)
        return Interchange(featurizer, FixedFeatures(featurizer.n_features, list(range(k))))


@register_method("dbm-pca")
class MaskedPrincipalComponents(CausalMethod):
    """Swap a learned subset of all principal components."""

    def build(self, site: Site) -> Interchange:
        featurizer = PCAFeaturizer(site.d_model)
        return Interchange(featurizer, _mask(self, featurizer.n_features))


@register_method("sae")
class SparseAutoencoderFeatures(CausalMethod):
    """Swap every SAE latent; the base keeps its own reconstruction error."""

    def build(self, site: Site) -> Interchange:
        return Interchange(_sae(site))


@register_method("dbm-sae")
class MaskedSparseAutoencoderFeatures(CausalMethod):
    """Swap a learned subset of SAE latents."""

    def build(self, site: Site) -> Interchange:
        featurizer = _sae(site)
        return Interchange(featurizer, _mask(self, featurizer.n_features))
