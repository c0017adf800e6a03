"""Per-head receiver gradients of an unpatched forward, without per-head copies of the input.

Edge attribution needs ``dL/dz_h`` at every head's q (or k, v) input ``z_h``. In an unpatched run all heads
of a kind read the same residual ``r``, so only the backward is per head::

    dL/dz_h = J_norm(r)^T (W_h^T dL/dq_h)

Building one normalised copy of ``r`` per head for autograd to differentiate (the general path, needed
once a mask makes the inputs differ) normalises ``r`` ``H`` times and copies it ``H`` times in the forward.
:class:`SharedInputProjection` instead normalises once, projects with all heads' weights in one product,
and in the backward hands the per-head gradients to a callback and returns their sum as ``r``'s
gradient: what autograd computes through the ``H`` copies. The norm's vector-Jacobian product comes
from autograd on a re-run of the norm, batched over heads (``is_grads_batched``), so it holds for any
norm module (LayerNorm, RMSNorm, Gemma's).

The weights must be frozen (attribution runs under ``PatchingEngine.frozen_parameters``): no parameter
gradient is produced.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


class SharedInputProjection(torch.autograd.Function):
    """``norm(r) @ W_h^T + b_h`` for every head ``h`` of each given projection (q, k, v: one
    ``[R, H, T, dh]`` output each); the backward reports each projection's ``dL/dz_h`` ``[R, H, T, d]``
    through ``report`` (a list, in the order given; see the module docstring).

    All projections of a layer go through one node, so the norm is re-run and its VJP batched once per
    layer rather than once per projection (the per-call overhead dominates small models).
    """

    @staticmethod
    def forward(ctx, resid: Tensor, norm: Callable[[Tensor], Tensor], report: Callable[[list[Tensor]], None],
                *weights_and_biases: Tensor | None) -> tuple[Tensor, ...]:
        normed = norm(resid)
        weights = weights_and_biases[0::2]  # each [H, dh, d]
        outputs = []
        for weight, bias in zip(weights, weights_and_biases[1::2], strict=True):
            out = torch.einsum("btd,hkd->bhtk", normed, weight)
            outputs.append(out if bias is None else out + bias[None, :, None, :])
        ctx.save_for_backward(resid)
        ctx.norm, ctx.weights, ctx.report = norm, weights, report
        return tuple(outputs)

    @staticmethod
    def backward(ctx, *grads: Tensor):
        (resid,) = ctx.saved_tensors
        # W_h^T dL/dq_h at norm(r) for every head of every projection: [n * H, R, T, d]
        cotangents = torch.cat([torch.einsum("bhtk,hkd->hbtd", g, w) for g, w in zip(grads, ctx.weights, strict=True)])
        with torch.enable_grad():
            probe = resid.detach().requires_grad_()
            (per_head,) = torch.autograd.grad(ctx.norm(probe), probe, cotangents, is_grads_batched=True)
        ctx.report([part.transpose(0, 1) for part in per_head.chunk(len(grads))])
        return (per_head.sum(0), None, None) + (None,) * (2 * len(grads))
