"""Position-aware circuit evaluation: a forward pass in which every edge is live or ablated *per span*.

The semantics extend the patching engine's (:mod:`mibench.engine.engine`) to the position-aware graph
(:mod:`mibench.graph.positional`). With ``s(t)`` the span of position ``t`` in its example:

* **non-crossing edges**: destination ``v`` (a head's q/k/v input, an MLP input, the logits) reads at
  position ``t``::

      z_v[t] = r[t] + sum_u (1 - keep[s(t), u, v]) * (a~_u[t] - a_u[t])

  so an edge can be kept at one span and ablated at another;
* **crossing edges**: the query of head ``h`` at position ``t`` reads the key (value) at an earlier-span
  position ``j`` as computed in this run from its own patched k (v) input when the crossing edge
  ``h<k>:s(j)->s(t)`` is kept, and as its ablated value (the counterfactual run's key, or the mean / zero)
  otherwise. Within one span the run's own keys and values are read: that attention is governed by the
  k/v inputs at that span.

With everything kept this is the unpatched model; with nothing kept, every destination reads the ablated
residual and every query the ablated keys and values, so under counterfactual patching the output is the
counterfactual run. A position-invariant circuit copied to every span with every crossing edge kept gives
exactly the patching engine's result; the tests check all three, plus single crossing edges against
exact patching.

This evaluator favours clarity over the patching engine's shortcuts (no node skipping): destination inputs
come from one contraction of a per-position weight ``[R, T, U, V]`` with the deltas, which is fine for the
graphs position-aware circuits are computed on and is chunked over circuits. Models whose residual
receives a nonlinear function of the summed heads (Gemma-2's post-attention norm) are refused: their
per-head edges do not compose additively per position.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from mibench.engine.ablation import Ablation
from mibench.engine.attention import apply_rotary, attention_pattern_mask
from mibench.engine.engine import PatchingEngine, _project_head_major, _sum_heads
from mibench.engine.residual import KeyValues, ResidualRunner, record_key_values
from mibench.errors import MibenchError
from mibench.graph.graph import real_edge_mask


@dataclass
class PositionalMask:
    """Keep-masks of ``C`` position-aware circuits.

    ``edges`` ``[C, S, F, B]`` (non-crossing, per span) and ``crossing`` ``[C, L, H, 2, S, S]`` (``[..., s_kv,
    s_q]``, kv 0 = keys, 1 = values). Values outside the graph's real edges are ignored.
    """

    edges: Tensor
    crossing: Tensor

    @property
    def n_circuits(self) -> int:
        return self.edges.shape[0]

    @classmethod
    def full(cls, graph, n_circuits: int = 1) -> PositionalMask:
        return cls(torch.ones(n_circuits, *graph.edge_scores.shape), torch.ones(n_circuits, *graph.crossing_scores.shape))

    @classmethod
    def empty(cls, graph, n_circuits: int = 1) -> PositionalMask:
        return cls(torch.zeros(n_circuits, *graph.edge_scores.shape),
                   torch.zeros(n_circuits, *graph.crossing_scores.shape))

    @classmethod
    def from_graphs(cls, graphs) -> PositionalMask:
        """The circuits that :class:`~mibench.graph.positional.PositionalGraph` objects mark in-graph."""
        return cls(torch.stack([(g.edges_in_graph & g.real_edge_mask).float() for g in graphs]),
                   torch.stack([(g.crossings_in_graph & g.real_crossing_mask).float() for g in graphs]))


class PositionalPatcher:
    """Runs a model under position-aware circuit masks (see the module docstring for the semantics)."""

    def __init__(self, engine: PatchingEngine, max_weight_elements: int = 1 << 26) -> None:
        if not engine.adapter.attn_is_additive:
            raise MibenchError(f"position-aware circuits are not supported for the {engine.adapter.family} family: "
                               "its post-attention norm makes per-head edges non-additive")
        self.engine = engine
        self.adapter = engine.adapter
        self.layout = engine.layout
        self.max_weight_elements = max_weight_elements
        self._real = real_edge_mask(self.layout)

    # ----------------------------------------------------------------- public
    def ablated_key_values(self, ablation: Ablation, cf_ids: Tensor | None, attention_mask: Tensor,
                           reference: KeyValues | None = None) -> KeyValues | None:
        """What a query reads at a position whose crossing edge is ablated: the counterfactual run's keys and
        values (patching), the reference means (mean), or None for zeros."""
        if ablation.kind == "zero":
            return None
        if ablation.kind == "mean":
            if reference is None:
                raise ValueError("mean ablation of crossing edges needs mean keys and values (mean_key_values)")
            return reference

        return record_key_values(ResidualRunner(self.adapter), cf_ids, attention_mask)

    @torch.no_grad()
    def forward(self, input_ids: Tensor, attention_mask: Tensor, span_ids: Tensor, mask: PositionalMask,
                ablation: Ablation, ablated_kv: KeyValues | None, logit_positions: Tensor) -> Tensor:
        """Logits ``[C * B, vocab]`` at ``logit_positions`` ``[B]`` for each circuit (circuit-major rows).

        ``span_ids`` ``[B, T]`` gives each position's span (-1 at padding)."""
        # the per-position keep-mask is [C * B, T, F, B_slots]: bound it by chunking the circuits
        per_circuit = max(1, self.max_weight_elements // max(1, input_ids.numel() * self.layout.n_forward
                                                               * self.layout.n_backward))
        if mask.n_circuits > per_circuit:
            parts = [self.forward(input_ids, attention_mask, span_ids,
                                  PositionalMask(mask.edges[i:i + per_circuit], mask.crossing[i:i + per_circuit]),
                                  ablation, ablated_kv, logit_positions)
                     for i in range(0, mask.n_circuits, per_circuit)]
            return torch.cat(parts)
        return self._forward(input_ids, attention_mask, span_ids, mask, ablation, ablated_kv, logit_positions)

    # -------------------------------------------------------------- internals
    def _forward(self, input_ids, attention_mask, span_ids, mask: PositionalMask, ablation: Ablation,
                 ablated_kv: KeyValues | None, logit_positions: Tensor) -> Tensor:
        adapter, layout, device, dtype = self.adapter, self.layout, self.engine.device, self.engine.dtype
        n_circuits = mask.n_circuits
        batch, seq = input_ids.shape
        rows = n_circuits * batch
        ids = input_ids.to(device).repeat(n_circuits, 1)
        attn_mask = attention_mask.to(device).repeat(n_circuits, 1)
        spans = span_ids.to(device).repeat(n_circuits, 1)
        circuit_of_row = torch.arange(n_circuits, device=device).repeat_interleave(batch)
        span_of = spans.clamp_min(0)
        # Per row and position: the non-crossing keep-mask of its circuit at its span, [R, T, F, B].
        edges = mask.edges.to(device, dtype) * self._real.to(device, dtype)
        keep = edges[circuit_of_row[:, None], span_of]
        ablated: list[Tensor | None] = ([None] * len(self.engine.groups) if ablation.sources is None
                                        else [_tile(g.to(device, dtype), rows, batch) for g in ablation.sources.groups])
        position_ids = torch.arange(seq, device=device).unsqueeze(0)

        deltas = torch.zeros(layout.n_forward, rows, seq, layout.d_model, dtype=dtype, device=device)

        def emit(index: int, output: Tensor) -> None:
            group = self.engine.groups[index]
            other = ablated[index] if ablated[index] is not None else torch.zeros_like(output)
            deltas[group.start:group.stop] = (other.expand_as(output) - output).transpose(0, 1)

        def inputs(cols: list[int], prev: int, resid: Tensor) -> Tensor:
            """``[R, V, T, d]``: ``r + sum_u (1 - keep) * D`` per position."""
            weight = 1 - keep[:, :, :prev][..., cols]  # [R, T, U, V]
            correction = torch.einsum("rtuv,urtd->rvtd", weight, deltas[:prev])
            return resid.unsqueeze(1) + correction

        tokens, constant = adapter.embed(ids, position_ids)
        emit(0, tokens.unsqueeze(1))
        resid = tokens if constant is None else tokens + constant
        rotary = adapter.rotary(resid, position_ids)
        pattern = {None: attention_pattern_mask(attn_mask, None)}
        crossing = mask.crossing.to(device)
        for layer in range(layout.n_layers):
            settings = adapter.attention_settings(layer)
            if settings.sliding_window not in pattern:
                pattern[settings.sliding_window] = attention_pattern_mask(attn_mask, settings.sliding_window)
            heads = self._attention(layer, resid, inputs, rotary if settings.rotary else None,
                                    pattern[settings.sliding_window], settings, crossing[:, layer], circuit_of_row,
                                    spans, None if ablated_kv is None else ablated_kv[layer], batch)
            emit(1 + 2 * layer, heads)
            weights = adapter.attention_weights(layer)
            resid = resid + adapter.attn_post(layer, _sum_heads(heads, weights.bo))
            mlp_in = inputs([layout.mlp_backward_index(layer)], layout.mlp_prev_index(layer), resid)[:, 0]
            mlp_out = adapter.mlp(layer, mlp_in)
            emit(2 + 2 * layer, mlp_out.unsqueeze(1))
            resid = resid + mlp_out
        positions = logit_positions.to(device).repeat(n_circuits)
        final = inputs([layout.logits_backward_index], layout.n_forward, resid)[:, 0]
        return adapter.unembed(final[torch.arange(rows, device=device), positions])

    def _attention(self, layer, resid, inputs, rotary, pattern_mask, settings, crossing, circuit_of_row, spans,
                   ablated_kv, batch) -> Tensor:
        """Per-head outputs ``[R, H, T, d]`` with per-position q/k/v inputs and crossing-edge key/value choice."""
        adapter, layout = self.adapter, self.layout
        n_heads = adapter.n_heads
        weights = adapter.attention_weights(layer)
        start = layout.attn_backward_start(layer)
        cols = list(range(start, start + 3 * n_heads))
        z = inputs(cols, layout.attn_prev_index(layer), resid)  # [R, 3H, T, d]
        normed = adapter.attn_pre_norm(layer, z)
        per_head = normed.transpose(0, 1)  # head-major [3H, R, T, d] (copied per kind by the projection)
        q = _project_head_major(per_head[:n_heads], weights.wq, weights.bq)
        k = _project_head_major(per_head[n_heads:2 * n_heads], weights.wk, weights.bk)
        v = _project_head_major(per_head[2 * n_heads:], weights.wv, weights.bv)
        rows = q.shape[0]
        if ablated_kv is None:
            k_abl, v_abl = torch.zeros_like(k), torch.zeros_like(v)
        else:
            k_abl, v_abl = (_per_query_head(_tile(x.to(q.device, q.dtype), rows, batch), n_heads).expand_as(k)
                            for x in ablated_kv)
        if rotary is not None:
            cos, sin = rotary
            q, k, k_abl = (apply_rotary(x, cos, sin) for x in (q, k, k_abl))
        # live[r, h, kv, t, j]: does query t of head h read this run's key/value at j? (crossing edges)
        span_of = spans.clamp_min(0)
        per_row = crossing[circuit_of_row]  # [R, H, 2, S, S] ([s_kv, s_q])
        s_q, s_kv = span_of[:, :, None], span_of[:, None, :]  # [R, T, 1], [R, 1, T]
        gathered = per_row[torch.arange(rows, device=q.device)[:, None, None], :, :, s_kv, s_q]  # [R, T, T, H, 2]
        earlier = s_kv < s_q
        live = torch.where(earlier[..., None, None], gathered, torch.ones_like(gathered)).permute(0, 3, 4, 1, 2)
        scale = settings.scaling
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale
        scores_abl = torch.matmul(q, k_abl.transpose(-1, -2)) * scale
        scores = live[:, :, 0] * scores + (1 - live[:, :, 0]) * scores_abl
        if settings.softcap is not None:
            scores = torch.tanh(scores / settings.softcap) * settings.softcap
        scores = scores.masked_fill(~pattern_mask, torch.finfo(scores.dtype).min)
        probs = torch.softmax(scores, dim=-1, dtype=torch.promote_types(scores.dtype, torch.float32)).to(v.dtype)
        value_live = live[:, :, 1].to(v.dtype)
        out = torch.matmul(probs * value_live, v) + torch.matmul(probs * (1 - value_live), v_abl)
        return torch.einsum("bhtk,hdk->bhtd", out, weights.wo)


def _tile(x: Tensor, rows: int, batch: int) -> Tensor:
    """Per-example tensors repeated for stacked circuits (circuit-major rows); one row broadcasts."""
    if x.shape[0] == 1 or x.shape[0] == rows:
        return x
    return x.repeat(rows // batch, *([1] * (x.dim() - 1)))


def _per_query_head(x: Tensor, n_heads: int) -> Tensor:
    """Grouped ``[R, Hkv, T, dh]`` keys or values as one (view) row per query head ``[R, H, T, dh]``."""
    if x.shape[1] == n_heads:
        return x
    return x.unsqueeze(2).expand(-1, -1, n_heads // x.shape[1], -1, -1).flatten(1, 2)
