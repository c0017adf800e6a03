"""Per-family model adapters: where each piece of an HF causal LM lives, and how to run it on any input.

An adapter never changes weights. It exposes per-head *views* of the attention projections (no copies,
and grouped K/V weights stay grouped: ``wk``/``wv`` have ``n_kv_heads`` rows, never ``n_heads``) plus
small functions that run one piece of a block (pre-norm, MLP, post-norm, unembedding) by calling the HF
modules themselves. The patching engine is the only caller; methods never touch adapters or HF modules.

Shapes used throughout (``B`` batch rows, ``T`` positions, ``d`` d_model, ``dh`` head dim):
  per-head weights  wq [H, dh, d]   wk, wv [Hkv, dh, d]   wo [H, d, dh]   (Linear's out x in convention)
  per-head biases   bq [H, dh]      bk, bv [Hkv, dh]      bo [d]          (None when absent)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from mibench.graph.layout import GraphLayout
from mibench.models.families import adapter_entries, family_for_model_type, layout_from_config
from mibench.registry import Registry


@dataclass(frozen=True)
class AttentionWeights:
    """Per-head views of one attention layer's projections (see the module docstring for shapes)."""

    wq: Tensor
    wk: Tensor
    wv: Tensor
    wo: Tensor
    bq: Tensor | None
    bk: Tensor | None
    bv: Tensor | None
    bo: Tensor | None


@dataclass(frozen=True)
class AttentionSettings:
    """Per-layer constants of the attention pattern computation."""

    scaling: float
    softcap: float | None
    sliding_window: int | None
    rotary: bool


class ModelAdapter:
    """Base adapter. Subclasses fill in the family-specific pieces; the shared math stays here."""

    family: ClassVar[str] = ""
    #: False when the residual receives a nonlinear function of the *sum* of heads (Gemma-2's
    #: post-attention RMSNorm). The engine then mixes per-head edges before that function.
    attn_is_additive: ClassVar[bool] = True

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.config = model.config
        self.layout: GraphLayout = layout_from_config(model.config)
        text = getattr(model.config, "text_config", None) or model.config
        self.n_heads = self.layout.n_heads
        self.n_kv_heads = int(getattr(text, "num_key_value_heads", None) or self.n_heads)
        self.d_model = self.layout.d_model
        self.d_head = int(getattr(text, "head_dim", None) or self.d_model // self.n_heads)
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"{self.n_heads} query heads cannot be grouped over {self.n_kv_heads} K/V heads")

    # ---------------------------------------------------------------- helpers
    @property
    def n_layers(self) -> int:
        return self.layout.n_layers

    @property
    def group_size(self) -> int:
        """Query heads per K/V head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    @property
    def dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    # --------------------------------------------------- family-specific API
    def embed(self, input_ids: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor | None]:
        """Token embeddings (MIB's ``input`` node) and the position-dependent constant, if any."""
        raise NotImplementedError

    def rotary(self, hidden: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor] | None:
        """RoPE ``(cos, sin)`` of shape [B, T, dh] from the model's own rotary module, or None."""
        return None

    def attention_weights(self, layer: int) -> AttentionWeights:
        raise NotImplementedError

    def attention_settings(self, layer: int) -> AttentionSettings:
        raise NotImplementedError

    def attn_pre_norm(self, layer: int, x: Tensor) -> Tensor:
        raise NotImplementedError

    def fused_qkv(self, layer: int, normed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v of shape [B, T, H*dh], [B, T, Hkv*dh], [B, T, Hkv*dh] from one shared input.

        This is the fast path used when every head reads the same residual stream; it calls the HF
        projection modules exactly as the HF forward does.
        """
        raise NotImplementedError

    def attn_post(self, layer: int, attn_sum: Tensor) -> Tensor:
        """What the residual stream receives from the summed attention output (identity by default)."""
        return attn_sum

    def mlp(self, layer: int, z: Tensor) -> Tensor:
        """MLP node output for residual input ``z`` (pre-norm, MLP and any post-norm)."""
        raise NotImplementedError

    def unembed(self, z: Tensor) -> Tensor:
        """Logits from the final residual (final norm, unembedding, any soft-capping)."""
        raise NotImplementedError


#: HF ``config.model_type`` -> adapter class. The family modules register their classes; the families table
#: declares which module that is, so a model type's module is imported the first time it is used (and
#: nothing here imports the family modules, which import this one).
ADAPTERS: Registry[type[ModelAdapter]] = Registry("adapter", decorator="register_adapter", declared=adapter_entries)


def register_adapter(*model_types: str):
    """Class decorator: route HF ``config.model_type`` values to an adapter class."""
    return ADAPTERS.register(*model_types)


def adapter_for(model: nn.Module) -> ModelAdapter:
    """Wrap an HF causal LM in the adapter of its family (clear error for unsupported families)."""
    model_type = getattr(model.config, "model_type", "")
    family_for_model_type(model_type)
    return ADAPTERS.get(model_type)(model)


def split_heads_out_in(weight: Tensor, n: int) -> Tensor:
    """View a Linear weight [n*dh, d] as per-head [n, dh, d] (no copy)."""
    return weight.unflatten(0, (n, weight.shape[0] // n))


def split_bias(bias: Tensor | None, n: int) -> Tensor | None:
    return None if bias is None else bias.unflatten(0, (n, bias.shape[0] // n))


def split_output_heads(weight: Tensor, n: int) -> Tensor:
    """View an output Linear weight [d, n*dh] as per-head [n, d, dh] (no copy)."""
    return weight.unflatten(1, (n, weight.shape[1] // n)).permute(1, 0, 2)


def config_value(config: Any, name: str, default: Any = None) -> Any:
    value = getattr(config, name, default)
    return default if value is None else value
