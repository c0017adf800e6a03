"""Edge Pruning (Bhaskar, Wettig, Friedman & Chen, 2024): hard-concrete edge masks trained to a target sparsity.

Each real edge has a ``log_alpha``; a step draws one hard-concrete mask (Louizos et al.: stretched to
``(-0.1, 1.1)``, temperature 2/3, clipped to ``[0, 1]``) shared by the step's prompts, and lowers

    KL(full || circuit) at the answer position + l1 (s - t) + l2 (s - t)^2,     s = 1 - sum_e z_e / |E|

where ``t`` ramps linearly from 0 to ``target_sparsity`` over ``sparsity_warmup`` steps and the Lagrange
multipliers ``l1``, ``l2`` are *maximised* (AdamW with ``maximize``), as in the paper's code. Learning rates
warm up linearly for ``lr_warmup`` steps and then decay linearly to 0 (their scheduler); AdamW keeps torch's
default weight decay 0.01 and the gradient norm is clipped to 1 (the Hugging Face Trainer's default), as there.

Score: ``-log P(z_e = 0) = softplus(log_alpha_e + (2/3) log 11)``, the log-odds-like confidence that the
edge is kept; it ranks exactly like ``log_alpha`` but is positive (so signed and absolute rankings agree) and
does not saturate to ties as a probability would. Edges only (the paper's optional node masks and node
Lagrangian are not modelled).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from mibench.circuits.learned_masks import EdgeParameters, clip_gradient, cycle_steps, kl_from_full, training_steps
from mibench.circuits.method import AttributionContext, CircuitMethod
from mibench.errors import MibenchError
from mibench.graph.graph import Graph
from mibench.method_registry import register_method

LIMIT_LEFT, LIMIT_RIGHT, TEMPERATURE = -0.1, 1.1, 2 / 3
EPS = 1e-6


def hard_concrete(log_alpha: Tensor, uniform: Tensor) -> Tensor:
    """A hard-concrete sample for noise ``uniform`` in (0, 1); differentiable in ``log_alpha``."""
    s = torch.sigmoid((torch.log(uniform) - torch.log(1 - uniform) + log_alpha) / TEMPERATURE)
    return (s * (LIMIT_RIGHT - LIMIT_LEFT) + LIMIT_LEFT).clamp(0, 1)


def keep_log_odds(log_alpha: Tensor) -> Tensor:
    """``-log P(z = 0)``: positive, increasing in ``log_alpha``."""
    return torch.nn.functional.softplus(log_alpha - TEMPERATURE * math.log(-LIMIT_LEFT / LIMIT_RIGHT))


def target_sparsity(step: int, target: float, warmup: int) -> float:
    return target if step >= warmup else target * step / max(warmup, 1)


def lr_factor(step: int, warmup: int, total: int) -> float:
    """Linear warm-up then linear decay to 0 (transformers' ``get_linear_schedule_with_warmup``)."""
    if step < warmup:
        return step / max(1, warmup)
    return max(0.0, (total - step) / max(1, total - warmup))


def sparsity_penalty(z: Tensor, edges: EdgeParameters, target: float, lambdas: Tensor) -> Tensor:
    sparsity = 1 - edges.real_sum(z) / edges.n_edges
    gap = sparsity - target
    return lambdas[0] * gap + lambdas[1] * gap**2


@register_method("edge-pruning")
class EdgePruning(CircuitMethod):
    def score(self, context: AttributionContext) -> Graph:
        args = self.arguments
        n_steps, warmup = int(args["steps"]), int(args["sparsity_warmup"])
        target = float(args["target_sparsity"])
        if not 0 <= target <= 1.5 or n_steps < 0:
            raise MibenchError(f"method 'edge-pruning': target_sparsity must be in [0, 1.5] and steps >= 0, "
                               f"got {target}, {n_steps}")
        engine = context.engine
        generator = torch.Generator().manual_seed(context.seed)
        init_mean, init_std = float(args["init_mean"]), float(args["init_std"])
        edges = EdgeParameters(
            engine.layout,
            lambda shape: init_mean + init_std * torch.randn(shape, generator=generator),
            engine.device, torch.float32)
        lambdas = torch.zeros(2, device=engine.device, requires_grad=True)
        lr, reg_lr = float(args["lr"]), float(args["reg_lr"])
        optimizer = torch.optim.AdamW([{"params": [edges.values], "lr": lr},
                                       {"params": [lambdas], "lr": reg_lr, "maximize": True}],
                                      weight_decay=float(args["weight_decay"]))
        base_lrs = [lr, reg_lr]
        order = cycle_steps(training_steps(context, int(args["prompts_per_step"])), context.seed)
        with engine.frozen_parameters():
            for step_index in range(n_steps):
                factor = lr_factor(step_index, int(args["lr_warmup"]), n_steps)
                for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
                    group["lr"] = base * factor
                step = next(order)
                uniform = torch.empty(edges.values.shape).uniform_(EPS, 1 - EPS, generator=generator)
                z = hard_concrete(edges.values, uniform.to(engine.device))
                loss = (kl_from_full(engine, step, z.to(engine.dtype)).mean()
                        + sparsity_penalty(z, edges, target_sparsity(step_index, target, warmup), lambdas))
                optimizer.zero_grad()
                loss.backward()
                clip_gradient([edges.values, lambdas], float(args["clip"]))
                optimizer.step()
        if context.on_batch is not None:
            context.on_batch(context.n_examples)
        return edges.to_graph(keep_log_odds(edges.values))
