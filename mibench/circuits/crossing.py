"""PEAP's crossing edges: how much a head's reading of one span's keys (or values) from a later span matters.

For head ``h`` of layer ``l``, source span ``s`` and a later query span ``s'``, the crossing edge
``a_l.h_h<k>:s->s'`` is scored (Haklay et al., 2025) by replacing the keys at the positions of ``s`` with
their ablated values, recomputing the attention pattern and output *exactly* (the softmax is not
linearised), and taking the change of the head's output at the positions of ``s'`` times the gradient of
the metric there::

    score = sum over t in s' of ( z_h[t](K with K[s] ablated) - z_h[t] ) . dL/dz_h[t]      (L = -logit diff)

and likewise for values. All spans are done at once: the ``S`` variants of a layer's keys (one per source
span) are stacked along the batch and run through one attention call, for every example of the batch
together -- not the per-example, per-span Python loops of the reference code.

The ablated keys/values come from the counterfactual run (``patching``), are zero (``zero``), or are the
mean key/value of a reference set over real tokens (``mean``). Grouped-query models replace the shared K/V
head; each query head's share of the effect is its own output change, so scores stay per query head.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from mibench.circuits.batches import CircuitBatch
from mibench.circuits.metrics import logit_difference
from mibench.engine.residual import KeyValues, ResidualRunner, record_key_values

def mean_key_values(runner: ResidualRunner, batches: Iterable[tuple[Tensor, Tensor]]) -> KeyValues:
    """Per layer, the mean key and value over every real token of ``batches`` (``[1, Hkv, 1, dh]``)."""
    sums: dict[int, list[Tensor]] = {}
    count = 0.0
    for ids, mask in batches:
        weights = mask.to(runner.device, torch.float64)[:, None, :, None]
        for layer, (k, v) in record_key_values(runner, ids, mask).items():
            parts = [(x.double() * weights).sum((0, 2), keepdim=True) for x in (k, v)]
            sums[layer] = parts if layer not in sums else [a + b for a, b in zip(sums[layer], parts)]
        count += float(mask.sum())
    return {layer: tuple((x / count).to(runner.dtype) for x in parts) for layer, parts in sums.items()}


def crossing_attribution(runner: ResidualRunner, batch: CircuitBatch, span_ids: Tensor, n_spans: int, *,
                         ablation: str = "patching", reference: KeyValues | None = None) -> Tensor:
    """``[L, H, 2, S, S]`` crossing-edge scores summed over the batch's examples (``[..., s_kv, s_q]``; only
    ``s_kv < s_q`` is meaningful, the rest is zero). ``span_ids`` ``[B, T]`` holds span indices (-1 at padding)."""
    device = runner.device
    mask = batch.attention_mask.to(device)
    span_ids = span_ids.to(device)
    clean_qkv: dict[int, tuple[Tensor, Tensor, Tensor]] = {}
    outputs: dict[int, Tensor] = {}

    def watch(layer: int, q: Tensor, k: Tensor, v: Tensor) -> None:
        clean_qkv[layer] = (q.detach(), k.detach(), v.detach())

    def keep(layer: int, z: Tensor) -> Tensor:
        z.retain_grad()
        outputs[layer] = z
        return z

    with runner.frozen():
        logits = runner.forward(batch.clean_ids, mask, read_positions=batch.last_positions.unsqueeze(1),
                                head_edit=keep, watch_attention=watch, embeddings_require_grad=True)[:, 0]
        (-logit_difference(logits, batch.answers.to(device), batch.cf_answers.to(device)).sum()).backward()
    if ablation == "patching":
        ablated = record_key_values(runner, batch.cf_ids, mask)
    elif ablation == "zero":
        ablated = {layer: (torch.zeros_like(k), torch.zeros_like(v)) for layer, (_, k, v) in clean_qkv.items()}
    elif ablation == "mean":
        if reference is None:
            raise ValueError("mean ablation of keys and values needs reference means (mean_key_values)")
        ablated = reference
    else:
        raise ValueError(f"unknown ablation {ablation!r} (patching, mean or zero)")

    onehot = torch.nn.functional.one_hot(span_ids.clamp_min(0), n_spans).to(torch.float64)
    onehot = onehot * (span_ids >= 0).unsqueeze(-1).to(torch.float64)  # [B, T, S]
    in_span = onehot.permute(2, 0, 1).bool()  # [S, B, T]
    rows = batch.size
    layers = sorted(clean_qkv)
    n_heads = clean_qkv[layers[0]][0].shape[1]
    scores = torch.zeros(len(layers), n_heads, 2, n_spans, n_spans, dtype=torch.float64)
    with torch.no_grad():
        for layer in layers:
            q, k, v = clean_qkv[layer]
            grad = outputs[layer].grad.double()  # [B, H, T, dh]
            base = runner.attention(layer, q, k, v, mask).double()
            stacked_q = q.repeat(n_spans, 1, 1, 1)
            stacked_mask = mask.repeat(n_spans, 1)
            for kv_index, (clean, other) in enumerate(((k, ablated[layer][0]), (v, ablated[layer][1]))):
                other = other.expand_as(clean)
                select = in_span[:, :, None, :, None]  # [S, B, 1, T, 1]: which positions take the ablated value
                variants = torch.where(select, other.unsqueeze(0), clean.unsqueeze(0)).flatten(0, 1)  # [S*B, ...]
                keys, values = (variants, v.repeat(n_spans, 1, 1, 1)) if kv_index == 0 else \
                    (k.repeat(n_spans, 1, 1, 1), variants)
                changed = runner.attention(layer, stacked_q, keys, values, stacked_mask).double()
                delta = changed.unflatten(0, (n_spans, rows)) - base  # [S, B, H, T, dh]
                effect = (delta * grad.unsqueeze(0)).sum(-1)  # [S_kv, B, H, T]
                scores[layer, :, kv_index] = torch.einsum("sbht,bto->hso", effect, onehot).cpu()
    later = torch.arange(n_spans)[:, None] < torch.arange(n_spans)[None, :]
    return scores * later
