"""Storage of ablation deltas ``D_u = a~_u - a_u`` and their contraction with keep-masks.

Deltas are kept **source-major**, ``[n_forward, R, T, d]``, so that the sources feeding a destination (always
a prefix of forward indices) form one contiguous block: a destination group's whole correction is then one
matrix product ``W^T [V, U] @ D [U, R*T*d]`` whose output is written once. Writing one output per
(source group, destination group) pair instead costs ~10x more memory traffic on CPU.

Two stores share that interface:

* :class:`BufferDeltaStore` writes into one preallocated buffer (reused across forwards, so large runs do
  not page-fault on every call). Its deltas carry no autograd history. That is exact for evaluation and
  also for gradients taken at ``keep == 1`` (edge attribution), where ``d z / d D = 1 - keep = 0``.
* :class:`DifferentiableDeltaStore` keeps per-group tensors with their history and concatenates the prefix
  on demand, for gradients at arbitrary masks (e.g. learning a mask).
"""

from __future__ import annotations

import torch
from torch import Tensor


class BufferDeltaStore:
    """Deltas in one reusable ``[n_forward, R, T, d]`` buffer (no autograd history)."""

    _cache: dict[tuple, Tensor] = {}

    def __init__(self, n_forward: int, rows: int, seq: int, width: int, dtype: torch.dtype,
                 device: torch.device, *, reuse: bool = True) -> None:
        """``reuse``: share one cached buffer across forwards. Must be off when a backward pass will
        read the deltas later (another forward could overwrite a reused buffer before it runs)."""
        if not reuse:
            self.buffer = torch.empty(n_forward, rows, seq, width, dtype=dtype, device=device)
            return
        key = (n_forward, rows, seq, width, dtype, str(device))
        buffer = self._cache.get(key)
        if buffer is None:
            self._cache.clear()  # keep at most one buffer alive
            buffer = torch.empty(n_forward, rows, seq, width, dtype=dtype, device=device)
            self._cache[key] = buffer
        self.buffer = buffer

    def put(self, start: int, ablated: Tensor | None, output: Tensor, n_circuits: int) -> None:
        """Store ``ablated - output`` for sources ``start : start + U``; ``output`` is ``[R, U, T, d]``."""
        units = output.shape[1]
        target = self.buffer[start : start + units]  # [U, R, T, d], contiguous
        out_view = output.detach().transpose(0, 1)
        if ablated is None:
            torch.neg(out_view, out=target)
            return
        ablated = ablated.detach().transpose(0, 1)  # [U, B or 1, T or 1, d]
        if n_circuits > 1 and ablated.shape[1] > 1:
            rows = output.shape[0]
            target = target.unflatten(1, (n_circuits, rows // n_circuits))
            out_view = out_view.unflatten(1, (n_circuits, rows // n_circuits))
            ablated = ablated.unsqueeze(1)
        torch.sub(ablated, out_view, out=target)

    def prefix(self, prev: int) -> Tensor:
        return self.buffer[:prev]


class DifferentiableDeltaStore:
    """Per-group deltas with autograd history; the prefix is concatenated when a destination reads it."""

    def __init__(self) -> None:
        self.parts: list[Tensor] = []

    def put(self, start: int, ablated: Tensor | None, output: Tensor, n_circuits: int) -> None:
        if ablated is None:
            delta = -output
        elif n_circuits > 1 and ablated.shape[0] > 1:
            rows = output.shape[0]
            delta = (ablated.unsqueeze(0) - output.unflatten(0, (n_circuits, rows // n_circuits))).flatten(0, 1)
        else:
            delta = ablated - output
        self.parts.append(delta.expand(output.shape).transpose(0, 1))

    def prefix(self, prev: int) -> Tensor:
        pieces, total = [], 0
        for part in self.parts:
            if total >= prev:
                break
            pieces.append(part)
            total += part.shape[0]
        return torch.cat(pieces)[:prev]


def weighted_sum(weights: Tensor, deltas: Tensor, *, sparse: bool, base: Tensor | None = None) -> Tensor | None:
    """``out[v] = base + sum_u weights[u, v] * deltas[u]`` -> ``[V, *deltas.shape[1:]]`` (None if all weights
    are 0, whatever ``base``).

    ``weights`` is ``[U, V]``, ``deltas`` ``[U, ...]`` and ``base`` (optional) shaped like one ``deltas[u]``;
    it is added inside the matrix product, which saves a pass over the (large) output. With ``sparse``,
    only source rows with a nonzero weight are multiplied (they are gathered first when fewer than half
    are active).
    """
    if sparse:
        active = (weights != 0).any(-1)
        n_active = int(active.sum())
        if n_active == 0:
            return None
        if n_active <= weights.shape[0] // 2:
            weights, deltas = weights[active], deltas[active]
    flat = deltas.reshape(deltas.shape[0], -1)
    if weights.requires_grad and not deltas.requires_grad:
        product = _ProductWithFrozenDeltas.apply(weights, flat)
        if base is not None:
            product = product + base.reshape(1, -1)
    elif base is not None:
        product = torch.addmm(base.reshape(1, -1), weights.transpose(0, 1), flat)
    else:
        product = weights.transpose(0, 1) @ flat
    return product.view(weights.shape[1], *deltas.shape[1:])


class _ProductWithFrozenDeltas(torch.autograd.Function):
    """``weights^T @ deltas`` differentiable in ``weights`` only, for deltas read from a buffer.

    Later sources are written into the same buffer in place after this product, which autograd's
    version check would reject although the rows read here are never written again during the forward.
    The rows are therefore kept as a plain reference; the buffer is not reused while a backward pass is
    pending (``BufferDeltaStore(reuse=False)``).
    """

    @staticmethod
    def forward(ctx, weights: Tensor, deltas: Tensor) -> Tensor:
        ctx.deltas = deltas
        return weights.transpose(0, 1) @ deltas

    @staticmethod
    def backward(ctx, grad: Tensor):
        return ctx.deltas @ grad.transpose(0, 1), None
