"""GPT-2 adapter: fused ``c_attn`` Conv1D split into per-head views; learned positions are a constant."""

from __future__ import annotations

import torch
from torch import Tensor

from mibench.models.adapter import (
    AttentionSettings,
    AttentionWeights,
    ModelAdapter,
    register_adapter,
    split_bias,
)

#: Activations that are exactly PyTorch's tanh-approximate GELU formula. HF evaluates ``gelu_new`` as six
#: separate elementwise ops (each saved for backward); the fused kernel computes the same expression about
#: 3x faster forward and backward, agreeing to float rounding (|diff| < 1e-6 on unit-scale inputs).
_TANH_GELU = frozenset({"gelu_new", "gelu_pytorch_tanh"})


@register_adapter("gpt2")
class GPT2Adapter(ModelAdapter):
    family = "gpt2"

    def __init__(self, model) -> None:
        super().__init__(model)
        if getattr(self.config, "add_cross_attention", False):
            raise ValueError("GPT-2 models with cross-attention are not decoder-only LMs")
        self.transformer = model.transformer
        self.blocks = model.transformer.h

    def embed(self, input_ids: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor | None]:
        # MIB's input node is the token embedding only; positional embeddings are a constant that
        # clean and counterfactual runs share (they have equal lengths).
        return self.transformer.wte(input_ids), self.transformer.wpe(position_ids)

    def attention_weights(self, layer: int) -> AttentionWeights:
        attn = self.blocks[layer].attn
        d, h = self.d_model, self.n_heads
        # Conv1D computes x @ W + b with W [d_in, d_out]; transpose to Linear's [out, in] as a view.
        w = attn.c_attn.weight
        b = attn.c_attn.bias
        per_head = [w[:, i * d : (i + 1) * d].T.unflatten(0, (h, d // h)) for i in range(3)]
        biases = [split_bias(b[i * d : (i + 1) * d], h) for i in range(3)]
        wo = attn.c_proj.weight.unflatten(0, (h, d // h)).transpose(1, 2)  # [H, d, dh]
        return AttentionWeights(*per_head, wo, *biases, attn.c_proj.bias)

    def attention_settings(self, layer: int) -> AttentionSettings:
        # ``attn.scaling`` already folds in scale_attn_by_inverse_layer_idx.
        attn = self.blocks[layer].attn
        return AttentionSettings(scaling=float(attn.scaling), softcap=None, sliding_window=None, rotary=False)

    def attn_pre_norm(self, layer: int, x: Tensor) -> Tensor:
        return self.blocks[layer].ln_1(x)

    def fused_qkv(self, layer: int, normed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self.blocks[layer].attn.c_attn(normed).split(self.d_model, dim=-1)

    def mlp(self, layer: int, z: Tensor) -> Tensor:
        block = self.blocks[layer]
        mlp = block.mlp
        hidden = mlp.c_fc(block.ln_2(z))
        if self.config.activation_function in _TANH_GELU:
            hidden = torch.nn.functional.gelu(hidden, approximate="tanh")
        else:
            hidden = mlp.act(hidden)
        return mlp.dropout(mlp.c_proj(hidden))

    def unembed(self, z: Tensor) -> Tensor:
        return self.model.lm_head(self.transformer.ln_f(z))
