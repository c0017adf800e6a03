"""Model shapes for planning: a model name resolves to its Hugging Face *configuration* only, never weights.

A name is resolved like ``--model`` everywhere else, minus the download: an existing local model folder
(its ``config.json``), an embedded zoo model, or one of MIB's four models by hub id, whose published
``config.json`` ships in ``mib_configs/`` (see its README for where the numbers come from). Any other hub id
cannot be planned offline; the error says to pass a local folder holding the model's ``config.json``.

:class:`ModelShape` holds the sizes the memory formulas read (:mod:`mibench.planning.memory`), and
:func:`random_model` builds a random-weight model of a shape, for the benchmarks and tests that check the
formulas against real allocations.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mibench.errors import MibenchError

MIB_CONFIG_DIR = Path(__file__).resolve().parent / "mib_configs"

#: Hub ids (and aliases) of MIB's four models -> the shipped ``config.json`` holding their published shape.
MIB_CONFIGS: dict[str, str] = {
    "gpt2": "gpt2.json",
    "openai-community/gpt2": "gpt2.json",
    "Qwen/Qwen2.5-0.5B": "qwen2.5-0.5b.json",
    "google/gemma-2-2b": "gemma-2-2b.json",
    "meta-llama/Llama-3.1-8B": "llama-3.1-8b.json",
}

#: MIB's four models in the order its papers list them (the hub ids above, one per model).
MIB_MODELS: tuple[str, ...] = ("gpt2", "Qwen/Qwen2.5-0.5B", "google/gemma-2-2b", "meta-llama/Llama-3.1-8B")


class PlanningError(MibenchError, ValueError):
    """A model whose configuration cannot be found without downloading it."""


def mib_config_dict(name: str) -> dict[str, Any]:
    """The shipped ``config.json`` of one of MIB's models, as a dict."""
    path = MIB_CONFIG_DIR / MIB_CONFIGS[name]
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:  # a damaged installation, not a user mistake
        raise PlanningError(f"{path}: cannot read the shipped configuration ({exc})") from exc


def resolve_config(name: str):
    """The ``transformers`` config of ``name`` (local folder, zoo model, or one of MIB's models by hub id)."""
    from transformers import AutoConfig

    from mibench.zoo.catalog import is_zoo_model, model_path

    folder = Path(name).expanduser()
    if folder.is_dir() or is_zoo_model(name):
        folder = folder if folder.is_dir() else model_path(name)
        config_file = folder / "config.json"
        if not config_file.is_file():
            raise PlanningError(f"{folder}: not a Hugging Face model folder (no config.json)")
        try:
            return AutoConfig.from_pretrained(str(folder))
        except (OSError, ValueError) as exc:
            raise PlanningError(f"{config_file}: not a usable model configuration ({exc})") from exc
    if name in MIB_CONFIGS:
        return AutoConfig.for_model(**mib_config_dict(name))
    known = ", ".join(sorted(MIB_CONFIGS))
    raise PlanningError(f"model {name!r}: its configuration is not available offline; pass an embedded model, a "
                        f"local folder holding its config.json, or one of MIB's models ({known})")


@dataclass(frozen=True)
class ModelShape:
    """The sizes of a decoder-only model that its memory use depends on."""

    family: str  # the config's model_type: gpt2, llama, qwen2, gemma2
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    vocab_size: int
    n_params: int  # unique parameters (tied embeddings counted once)
    activation: str = "gelu_new"  # the MLP's activation function (its name in the config)

    @property
    def group_size(self) -> int:
        """Query heads per key/value head (1 without grouped-query attention)."""
        return self.n_heads // self.n_kv_heads

    @property
    def native_activation(self) -> bool:
        """The engine's GPT-2 MLP runs tanh-GELUs (``gelu_new`` included) as one native op, which keeps only
        its input for backward; other activations go through the HF module (``NewGELUActivation``-style
        Python keeps four ``F``-wide tensors)."""
        from mibench.models.gpt2 import _TANH_GELU

        return self.gated_mlp or self.activation in _TANH_GELU

    @property
    def gated_mlp(self) -> bool:
        """Llama, Qwen2 and Gemma-2 MLPs: ``down(act(gate(x)) * up(x))``; GPT-2: ``proj(gelu(fc(x)))``."""
        return self.family != "gpt2"

    @property
    def rms_norm(self) -> bool:
        """RMSNorm written in Python (float32 copies kept for backward) vs GPT-2's native LayerNorm."""
        return self.family != "gpt2"

    @property
    def rotary(self) -> bool:
        return self.family != "gpt2"

    @property
    def post_norms(self) -> bool:
        """Gemma-2 normalises the attention and MLP outputs before adding them to the residual."""
        return self.family == "gemma2"

    @property
    def n_forward(self) -> int:
        """Source nodes of MIB's graph: input + (heads + MLP) per layer."""
        return 1 + self.n_layers * (self.n_heads + 1)


def shape_of(config) -> ModelShape:
    """A :class:`ModelShape` from an HF config; the parameter count comes from instantiating the model on
    PyTorch's ``meta`` device (exact, ties included, no memory allocated)."""
    import torch
    from transformers import AutoModelForCausalLM

    from mibench.models.families import family_for_model_type

    family = family_for_model_type(getattr(config, "model_type", "")).name
    text = getattr(config, "text_config", None) or config
    n_layers = int(_first(text, "num_hidden_layers", "n_layer"))
    n_heads = int(_first(text, "num_attention_heads", "n_head"))
    d_model = int(_first(text, "hidden_size", "n_embd"))
    n_kv = int(getattr(text, "num_key_value_heads", None) or n_heads)
    d_head = int(getattr(text, "head_dim", None) or d_model // n_heads)
    d_mlp = int(getattr(text, "intermediate_size", None) or getattr(text, "n_inner", None) or 4 * d_model)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    n_params = sum(p.numel() for p in model.parameters())
    activation = str(getattr(text, "activation_function", None) or getattr(text, "hidden_activation", None)
                     or getattr(text, "hidden_act", None) or "")
    return ModelShape(family=family, n_layers=n_layers, n_heads=n_heads, n_kv_heads=n_kv, d_model=d_model,
                      d_head=d_head, d_mlp=d_mlp, vocab_size=int(text.vocab_size), n_params=n_params,
                      activation=activation)


def _first(config, *names: str):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    raise PlanningError(f"{type(config).__name__} has none of the fields {', '.join(names)}")


def random_model(config, *, dtype=None, device=None, seed: int = 0):
    """A random-weight HF model built from ``config`` (eager attention, eval mode), for benchmarks and tests.

    ``device``: where the weights are created and initialised. Building on the GPU directly matters at MIB's
    largest shape: an 8B-parameter model initialised on the CPU takes minutes and 32 GB of float32 first."""
    import contextlib

    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    with torch.device(device) if device is not None else contextlib.nullcontext():
        model = AutoModelForCausalLM.from_config(config, attn_implementation="eager",
                                                 **({} if dtype is None else {"dtype": dtype}))
    if dtype is not None:
        model = model.to(dtype)
    return model.eval()
