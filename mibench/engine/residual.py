"""Block-by-block forward passes for interchange interventions (the causal-variable track).

The causal track intervenes on the residual stream after a decoder block (pyvene's ``block_output``,
HF's ``hidden_states[layer + 1]``) or on each head's attention output before the output projection
(pyvene's ``head_attention_value_output``). This module runs the model from the adapter's pieces, like
the patching engine, so it works identically for every family the adapters support (Gemma-2's extra
norms, grouped K/V, Qwen2 without ``head_dim`` on its config).

Why not pyvene for the runs themselves: training one featurizer per (layer, position) site re-runs the
same frozen model thousands of times, and almost all of that work is identical across steps. Here a run
can *start* at any layer from a cached residual stream (:meth:`ResidualRunner.run_from`), so a training
step at layer ``L`` costs only the blocks after ``L``, and counterfactual (source) activations are
recorded once per site and reused across epochs and featurizers. pyvene re-runs the source and the
whole base model for every step (its issue #76). pyvene remains the independent oracle in the tests:
an identity interchange here equals its ``VanillaIntervention`` and DAS equals its
``LowRankRotatedSpaceIntervention``.

Padding is on the right: token positions are the unpadded indices of the prompt, for base and
counterfactual alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from mibench.engine.attention import apply_rotary, attention_pattern_mask, multihead_attention
from mibench.engine.placement import placed_adapter
from mibench.models.adapter import ModelAdapter

#: ``edit(layer, resid)`` returns the residual stream to continue with after block ``layer``.
ResidualEdit = Callable[[int, Tensor], Tensor]
#: ``edit(layer, z)`` returns the per-head attention outputs ``[B, H, T, dh]`` (before W_O) to use.
HeadEdit = Callable[[int, Tensor], Tensor]
#: ``watch(layer, q, k, v)``: a layer's queries ``[B, H, T, dh]`` and (grouped) keys and values ``[B, Hkv, T, dh]``,
#: before rotary embeddings (which act position by position).
AttentionWatch = Callable[[int, Tensor, Tensor, Tensor], None]


@dataclass
class _Context:
    attention_mask: Tensor
    position_ids: Tensor
    rotary: tuple[Tensor, Tensor] | None
    pattern_masks: dict[int | None, Tensor]


class ResidualRunner:
    """Plain forward passes of an adapted model, with optional edits and starts at any block."""

    def __init__(self, adapter: ModelAdapter) -> None:
        self.adapter = placed_adapter(adapter)  # a model spread over devices: see mibench.engine.placement

    @property
    def n_layers(self) -> int:
        return self.adapter.n_layers

    @property
    def d_model(self) -> int:
        return self.adapter.d_model

    @property
    def device(self) -> torch.device:
        return self.adapter.device

    @property
    def dtype(self) -> torch.dtype:
        return self.adapter.dtype

    def frozen(self):
        """Context in which the model's own parameters take no gradient (featurizer training)."""
        return _FrozenParameters(self.adapter.model)

    # ------------------------------------------------------------------ public
    def residuals(self, input_ids: Tensor, attention_mask: Tensor | None = None, *,
                  layers: Iterable[int] | None = None) -> dict[int, Tensor]:
        """Residual stream after each block in ``layers`` (default: all), ``[B, T, d]`` each.

        Stops after the deepest requested block, so recording layer 0 costs one block.
        """
        wanted = sorted(set(range(self.n_layers) if layers is None else layers))
        self._check_layers(wanted)
        out: dict[int, Tensor] = {}
        if not wanted:
            return out

        def keep(layer: int, resid: Tensor) -> Tensor:
            if layer in out or layer in wanted:
                out[layer] = resid
            return resid

        ctx = self._context(input_ids, attention_mask)
        resid = self._embed(input_ids, ctx)
        self._blocks(resid, ctx, start=0, stop=wanted[-1] + 1, resid_edit=keep)
        return out

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, *,
                read_positions: Tensor | None = None, resid_edit: ResidualEdit | None = None,
                head_edit: HeadEdit | None = None, watch_attention: AttentionWatch | None = None,
                embeddings_require_grad: bool = False) -> Tensor:
        """Logits of a full forward pass, with ``resid_edit`` applied after every block, ``head_edit``
        to every layer's per-head attention outputs, and ``watch_attention`` shown every layer's q/k/v.

        ``read_positions`` ``[B, m]`` selects the positions whose logits are returned (``[B, m, V]``);
        None returns all positions. ``embeddings_require_grad`` makes the embedded input a gradient leaf, so
        activations downstream (e.g. the ``z`` given to ``head_edit``) carry gradients with frozen weights.
        """
        ctx = self._context(input_ids, attention_mask)
        resid = self._embed(input_ids, ctx)
        if embeddings_require_grad:
            resid = resid.detach().requires_grad_(True)
        resid = self._blocks(resid, ctx, start=0, stop=self.n_layers, resid_edit=resid_edit, head_edit=head_edit,
                             watch_attention=watch_attention)
        return self._unembed(resid, read_positions)

    def attention(self, layer: int, q: Tensor, k: Tensor, v: Tensor, attention_mask: Tensor) -> Tensor:
        """Layer ``layer``'s per-head attention output ``z`` ``[R, H, T, dh]`` recomputed from given (pre-rotary)
        ``q``/``k``/``v`` (as :data:`AttentionWatch` sees them), exactly as the forward computes it."""
        ids_like = torch.zeros(attention_mask.shape, dtype=torch.long, device=self.device)
        ctx = self._context(ids_like, attention_mask, hidden=q.transpose(1, 2).flatten(2))
        settings = self.adapter.attention_settings(layer)
        return multihead_attention(q, k, v, self._pattern_mask(ctx, settings.sliding_window), settings,
                                   ctx.rotary if settings.rotary else None)

    def run_from(self, layer: int, resid: Tensor, attention_mask: Tensor | None = None, *,
                 read_positions: Tensor | None = None, prefix: list[Tensor] | None = None,
                 start: int = 0) -> Tensor:
        """Logits when the residual stream after block ``layer`` is ``resid`` ``[B, T, d]``: only the
        blocks after ``layer`` run (``layer = n_layers - 1`` runs the unembedding alone).

        Suffix mode: when nothing before position ``start`` differs from an unedited run whose residual
        streams after blocks ``layer .. n_layers - 2`` are ``prefix`` (``[B, T, d]`` each), causal attention
        guarantees positions ``< start`` are unchanged in every later block, so only the queries, attention
        outputs and MLPs of positions ``>= start`` are computed (keys and values still cover every
        position). ``read_positions`` must then be ``>= start``. An intervention at the last prompt token
        costs a small fraction of a forward this way.
        """
        self._check_layers([layer])
        ids_like = torch.zeros(resid.shape[:2], dtype=torch.long, device=resid.device)
        ctx = self._context(ids_like, attention_mask, hidden=resid)
        if start <= 0 or prefix is None:
            resid = self._blocks(resid, ctx, start=layer + 1, stop=self.n_layers)
            return self._unembed(resid, read_positions)
        if len(prefix) != self.n_layers - 1 - layer:
            raise ValueError(f"prefix needs the residuals after blocks {layer}..{self.n_layers - 2}, got {len(prefix)}")
        if read_positions is not None and bool((read_positions < start).any()):
            raise ValueError("suffix mode reads logits only at positions >= start")
        suffix = resid[:, start:]
        for i, block in enumerate(range(layer + 1, self.n_layers)):
            full = torch.cat([prefix[i][:, :start].to(suffix.dtype), suffix], dim=1)
            suffix = self._block(block, full, ctx, start=start)
        return self._unembed(suffix, None if read_positions is None else read_positions - start)

    # --------------------------------------------------------------- internals
    def _check_layers(self, layers: list[int]) -> None:
        bad = [layer for layer in layers if not 0 <= layer < self.n_layers]
        if bad:
            raise ValueError(f"layers {bad} out of range: the model has blocks 0..{self.n_layers - 1}")

    def _context(self, input_ids: Tensor, attention_mask: Tensor | None, hidden: Tensor | None = None) -> _Context:
        device = self.device
        if attention_mask is None:
            attention_mask = torch.ones(input_ids.shape, dtype=torch.long, device=device)
        attention_mask = attention_mask.to(device)
        position_ids = torch.arange(input_ids.shape[1], device=device).unsqueeze(0)
        rotary = None
        if any(self.adapter.attention_settings(layer).rotary for layer in range(self.n_layers)):
            probe = hidden if hidden is not None else torch.zeros(1, input_ids.shape[1], 1, dtype=self.dtype,
                                                                   device=device)
            rotary = self.adapter.rotary(probe, position_ids)
        return _Context(attention_mask, position_ids, rotary, {})

    def _embed(self, input_ids: Tensor, ctx: _Context) -> Tensor:
        tokens, constant = self.adapter.embed(input_ids.to(self.device), ctx.position_ids)
        return tokens if constant is None else tokens + constant

    def _pattern_mask(self, ctx: _Context, window: int | None) -> Tensor:
        if window not in ctx.pattern_masks:
            ctx.pattern_masks[window] = attention_pattern_mask(ctx.attention_mask, window)
        return ctx.pattern_masks[window]

    def _blocks(self, resid: Tensor, ctx: _Context, *, start: int, stop: int,
                resid_edit: ResidualEdit | None = None, head_edit: HeadEdit | None = None,
                watch_attention: AttentionWatch | None = None) -> Tensor:
        for layer in range(start, stop):
            resid = self._block(layer, resid, ctx, head_edit=head_edit, watch_attention=watch_attention)
            if resid_edit is not None:
                resid = resid_edit(layer, resid)
        return resid

    def _block(self, layer: int, resid: Tensor, ctx: _Context, *, start: int = 0,
               head_edit: HeadEdit | None = None, watch_attention: AttentionWatch | None = None) -> Tensor:
        """Block ``layer`` on input ``resid`` ``[B, T, d]``; returns the output at positions ``>= start``."""
        adapter = self.adapter
        settings = adapter.attention_settings(layer)
        weights = adapter.attention_weights(layer)
        normed = adapter.attn_pre_norm(layer, resid)
        q, k, v = (x.unflatten(-1, (-1, adapter.d_head)).transpose(1, 2) for x in adapter.fused_qkv(layer, normed))
        if watch_attention is not None:
            watch_attention(layer, q, k, v)
        pattern_mask = self._pattern_mask(ctx, settings.sliding_window)
        rotary = ctx.rotary if settings.rotary else None
        if start > 0:
            if rotary is not None:
                cos, sin = rotary
                q, k = apply_rotary(q[:, :, start:], cos[:, start:], sin[:, start:]), apply_rotary(k, cos, sin)
                rotary = None
            else:
                q = q[:, :, start:]
            pattern_mask = pattern_mask[:, :, start:]
        z = multihead_attention(q, k, v, pattern_mask, settings, rotary)
        if head_edit is not None:
            z = head_edit(layer, z)
        attn = torch.einsum("bhtk,hdk->btd", z, weights.wo)
        if weights.bo is not None:
            attn = attn + weights.bo
        out = resid[:, start:] + adapter.attn_post(layer, attn)
        return out + adapter.mlp(layer, out)

    def _unembed(self, resid: Tensor, read_positions: Tensor | None) -> Tensor:
        if read_positions is not None:
            read_positions = read_positions.to(resid.device)
            rows = torch.arange(resid.shape[0], device=resid.device).unsqueeze(1)
            resid = resid[rows, read_positions]
        return self.adapter.unembed(resid)


class _FrozenParameters:
    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.saved: list[tuple[torch.nn.Parameter, bool]] = []

    def __enter__(self) -> None:
        self.saved = [(p, p.requires_grad) for p in self.model.parameters()]
        for p, _ in self.saved:
            p.requires_grad_(False)

    def __exit__(self, *exc) -> None:
        for p, flag in self.saved:
            p.requires_grad_(flag)


KeyValues = dict[int, tuple[Tensor, Tensor]]  # layer -> (k, v), [B or 1, Hkv, T or 1, dh]


def record_key_values(runner: ResidualRunner, input_ids: Tensor, attention_mask: Tensor) -> KeyValues:
    """Every layer's (pre-rotary) keys and values on a batch (what crossing-edge ablations patch in)."""
    kv: KeyValues = {}

    def watch(layer: int, q: Tensor, k: Tensor, v: Tensor) -> None:
        kv[layer] = (k.detach(), v.detach())

    with torch.no_grad():
        runner.forward(input_ids, attention_mask, read_positions=torch.zeros(input_ids.shape[0], 1, dtype=torch.long),
                       watch_attention=watch)
    return kv
