"""Device placement for models spread over several devices (``from_pretrained(..., device_map=...)``).

The engine keeps its own state on one *home* device: the device of the input embeddings, where the
residual stream starts. That state is the residual stream, the ablated activations, the delta buffers,
masks and logits. A model loaded with an accelerate ``device_map`` keeps each decoder layer, and the
final norm and unembedding, on devices of their own. The adapter reaches into those modules directly
(the engine never calls a block's ``forward``), so accelerate's hooks, which sit on the blocks, never move
anything.

:func:`placed_adapter` wraps such a model's adapter so that:

* every module that owns parameters moves the tensors it is called with to its own device (a forward
  pre-hook), so the inputs of a layer's norms, projections and MLP, and of the final norm and unembedding,
  follow the module they enter;
* what an adapter step returns moves back to the home device;
* the per-head attention weights the engine multiplies itself come to the home device, one layer at a
  time while that layer runs, so the engine's own products meet their inputs there.

A model on one device gets its adapter back unchanged: nothing is wrapped or moved, and every result
stays bit-identical. Offloading to ``"meta"`` or disk is not supported. Weights that are not resident
cannot be read through the per-head views, so such models are refused with a clear error.
"""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

import torch
from torch import Tensor

from mibench.errors import MibenchError
from mibench.models.adapter import AttentionWeights, ModelAdapter


def parameter_devices(model: torch.nn.Module) -> set[torch.device]:
    """The devices the model's parameters and buffers sit on."""
    return {t.device for t in (*model.parameters(), *model.buffers())}


def placed_adapter(adapter: ModelAdapter, *, force: bool = False) -> ModelAdapter:
    """``adapter`` itself for a model on one device; a :class:`PlacedAdapter` for a spread one.

    ``force`` wraps a single-device model too. Tests use it to check that the placement logic changes no
    result.
    """
    if isinstance(adapter, PlacedAdapter):
        return adapter
    devices = parameter_devices(adapter.model)
    if any(d.type == "meta" for d in devices):
        raise MibenchError("the model has weights on the 'meta' device (offloaded with device_map); mibench runs "
                           "models whose weights are all resident -- use a device_map without 'disk'/'meta' offload")
    if len(devices) <= 1 and not force:
        return adapter
    return PlacedAdapter(adapter)  # type: ignore[return-value]  (a proxy with the adapter's interface)


def _to(value: Any, device: torch.device) -> Any:
    """Tensors in ``value`` (a tensor, a tuple of them, or None) on ``device``."""
    if isinstance(value, Tensor):
        return value.to(device)
    if isinstance(value, tuple):
        return tuple(_to(v, device) for v in value)
    return value


def _module_device(module: torch.nn.Module, fallback: torch.device) -> torch.device:
    first = next(module.parameters(), None)
    return fallback if first is None else first.device


def _inputs_to(device: torch.device):
    """A forward pre-hook moving a module's tensor arguments to ``device`` (its own parameters')."""

    def hook(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
        return _to(args, device), {k: _to(v, device) for k, v in kwargs.items()}

    return hook


#: Set on a model once its modules carry the input-moving hooks (several engines may share a model).
_HOOKED = "_mibench_inputs_follow_devices"


def follow_module_devices(model: torch.nn.Module) -> None:
    """Make every module that owns parameters move its inputs to its own device when it is called.

    The adapter calls the HF modules (norms, projections, MLP parts, unembedding) directly, and one
    adapter step may chain modules that sit on different devices (a final norm on the last layer's GPU,
    the unembedding on another). A hook is a no-op when an input is already in place, and installing
    the hooks twice is a no-op too."""
    if getattr(model, _HOOKED, False):
        return
    for module in model.modules():
        own = next(module.parameters(recurse=False), None)
        if own is not None:
            module.register_forward_pre_hook(_inputs_to(own.device), with_kwargs=True)
    setattr(model, _HOOKED, True)


class PlacedAdapter:
    """A model adapter whose model is spread over devices; see the module docstring.

    Attributes it does not override are the wrapped adapter's own, for example ``layout``, ``n_heads``,
    ``attention_settings`` and ``model``.
    """

    def __init__(self, adapter: ModelAdapter) -> None:
        self._adapter = adapter
        self.home = _module_device(adapter.model.get_input_embeddings(), adapter.device)
        follow_module_devices(adapter.model)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._adapter, name)

    @property
    def device(self) -> torch.device:
        """The home device: where the engine keeps its state (the input embeddings' device)."""
        return self.home

    def _home(self, value: Any) -> Any:
        return _to(value, self.home)

    # ------------------------------------------------ pieces: outputs come home
    def embed(self, input_ids: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor | None]:
        return self._home(self._adapter.embed(input_ids, position_ids))

    def rotary(self, hidden: Tensor, position_ids: Tensor) -> tuple[Tensor, Tensor] | None:
        return self._home(self._adapter.rotary(hidden, position_ids))

    def attention_weights(self, layer: int) -> AttentionWeights:
        weights = self._adapter.attention_weights(layer)
        return replace(weights, **{f.name: self._home(getattr(weights, f.name)) for f in fields(weights)})

    def attn_pre_norm(self, layer: int, x: Tensor) -> Tensor:
        return self._home(self._adapter.attn_pre_norm(layer, x))

    def fused_qkv(self, layer: int, normed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        return self._home(self._adapter.fused_qkv(layer, normed))

    def attn_post(self, layer: int, attn_sum: Tensor) -> Tensor:
        return self._home(self._adapter.attn_post(layer, attn_sum))

    def mlp(self, layer: int, z: Tensor) -> Tensor:
        return self._home(self._adapter.mlp(layer, z))

    def unembed(self, z: Tensor) -> Tensor:
        return self._home(self._adapter.unembed(z))
