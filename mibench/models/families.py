"""Architecture families mibench supports, described without importing torch.

This table is what ``mibench ls`` prints and what turns a Hugging Face config into MIB's graph layout.
It also declares where each family's torch-side adapter lives (``adapter``, ``module:Class``): the
adapter registry (:data:`mibench.models.adapter.ADAPTERS`) imports that module the first time one of the
family's ``model_type`` keys is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mibench.errors import MibenchError
from mibench.graph.layout import GraphLayout


class UnsupportedModelError(MibenchError, ValueError):
    """A model whose architecture family mibench has no adapter for."""


@dataclass(frozen=True)
class Family:
    """How one HF architecture family names its sizes, plus a published reference model."""

    name: str
    model_types: tuple[str, ...]
    reference_model: str
    reference_sizes: dict[str, int]
    adapter: str
    notes: str = ""


FAMILIES: tuple[Family, ...] = (
    Family(
        name="gpt2",
        model_types=("gpt2",),
        reference_model="gpt2",
        reference_sizes={"n_layers": 12, "n_heads": 12, "d_model": 768},
        adapter="mibench.models.gpt2:GPT2Adapter",
        notes="learned positional embeddings are a constant, not a node; fused c_attn is split per head",
    ),
    Family(
        name="llama",
        model_types=("llama",),
        reference_model="meta-llama/Llama-3.1-8B",
        reference_sizes={"n_layers": 32, "n_heads": 32, "d_model": 4096},
        adapter="mibench.models.llama:LlamaAdapter",
        notes="grouped-query attention kept grouped; RoPE from the model's own rotary module",
    ),
    Family(
        name="qwen2",
        model_types=("qwen2",),
        reference_model="Qwen/Qwen2.5-0.5B",
        reference_sizes={"n_layers": 24, "n_heads": 14, "d_model": 896},
        adapter="mibench.models.llama:Qwen2Adapter",
        notes="as llama, with q/k/v biases and optional sliding-window layers",
    ),
    Family(
        name="gemma2",
        model_types=("gemma2",),
        reference_model="google/gemma-2-2b",
        reference_sizes={"n_layers": 26, "n_heads": 8, "d_model": 2304},
        adapter="mibench.models.gemma2:Gemma2Adapter",
        notes="post-attention RMSNorm acts on the sum of heads (edges from heads are mixed before it); "
        "attention and final-logit soft-capping; alternating sliding-window layers",
    ),
)


def family_for_model_type(model_type: str) -> Family:
    """The family that handles an HF ``config.model_type``; a clear error lists the supported ones."""
    for family in FAMILIES:
        if model_type in family.model_types:
            return family
    supported = ", ".join(t for f in FAMILIES for t in f.model_types)
    raise UnsupportedModelError(f"unsupported model_type {model_type!r}; mibench has adapters for: {supported}")


def adapter_entries() -> dict[str, str]:
    """``model_type -> "module:Class"`` of every supported family's adapter (declarations, nothing imported)."""
    return {model_type: family.adapter for family in FAMILIES for model_type in family.model_types}


def _config_get(config: Any, *names: str) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    raise ValueError(f"{type(config).__name__} has none of the attributes {names}")


def layout_from_config(config: Any) -> GraphLayout:
    """MIB's graph layout for an HF config object (any of the supported families)."""
    family_for_model_type(getattr(config, "model_type", ""))
    text_config = getattr(config, "text_config", None) or config
    return GraphLayout(
        n_layers=int(_config_get(text_config, "num_hidden_layers", "n_layer")),
        n_heads=int(_config_get(text_config, "num_attention_heads", "n_head")),
        d_model=int(_config_get(text_config, "hidden_size", "n_embd")),
    )
