"""UGS, uniform gradient sampling (Li & Janson, 2024), as MIB ran it (``edge_pruning_unif_mib.py``).

Each real edge has a logit ``theta_e``; ``p_e = sigmoid(theta_e)`` is its keep probability. A step samples
``samples`` keep-masks (each evaluated on the step's prompts as one stacked circuit of the engine) from the
"modified uniform" distribution of the reference code: ``m = clamp(1/2 - (u - p) / w, 0, 1)`` with
``u ~ U(0, 1)`` and window ``w = p (1 - p)`` held constant, whose gradient in ``theta`` is ``p (1 - p) / w``
on the sampled window; edges fractional in few samples get their gradient scaled up by
``samples / #fractional``. Sampled masks lose dangling edges (kept edges whose source no kept path feeds or
whose destination reaches no output), and the loss is

    KL(full || circuit) at the answer position  +  lamb * sum_e p_e  +  node_reg * sum_heads tanh(2 (in + out) / (L H))

with ``in``/``out`` a head's summed incoming/outgoing ``p``. AdamW (betas 0.9 / 0.995, no weight decay),
gradient norm clipped to 5. Score ``= p_e``.

Deliberate differences: the ``samples`` masks of a step are shared by the step's prompts (MIB drew one
mask per prompt copy); the gradient clip is one norm over all edges (MIB clipped each edge family
separately); the beginning-of-sequence position is patched like any other (MIB left position 0 unpatched).
"""

from __future__ import annotations

import torch
from torch import Tensor

from mibench.circuits.learned_masks import (
    EdgeParameters,
    clip_gradient,
    cycle_steps,
    head_edge_totals,
    kl_from_full,
    prune_dangling,
    training_steps,
)
from mibench.circuits.method import AttributionContext, CircuitMethod
from mibench.errors import MibenchError
from mibench.graph.graph import Graph
from mibench.method_registry import register_method


def mib_learning_rate(lamb: float, ablation: str) -> float:
    """MIB's script: 0.15 / 0.1 / 0.05 for lamb <= 1e-4 / <= 5e-4 / larger, divided by 5 under counterfactual
    patching (its ``cf`` mode)."""
    lr = 0.15 if lamb <= 1e-4 else 0.1 if lamb <= 5e-4 else 0.05
    return lr / 5 if ablation == "patching" else lr


def sample_uniform_masks(theta: Tensor, uniform: Tensor) -> Tensor:
    """The reference code's "modified uniform" masks ``[S, ...]`` for logits ``theta`` and noise ``uniform``
    ``[S, ...]``, with its per-edge gradient reweighting by the number of fractional samples."""
    p = torch.sigmoid(theta)
    window = (p * (1 - p)).detach().clamp_min(1e-12)
    centre = window * p - (window - 1) * p.detach()  # value p, gradient scaled by the window
    samples = 1 - ((uniform - centre) / window + 0.5).clamp(0, 1)
    fractional = ((samples > 1e-3) & (samples < 1 - 1e-3)).sum(0).clamp_min(1)
    weight = (uniform.shape[0] / fractional).detach()
    return weight * samples + (1 - weight) * samples.detach()


def node_complexity(p: Tensor, edges: EdgeParameters) -> Tensor:
    """MIB's node regulariser: ``sum over heads of tanh(2 (in + out) / (n_layers n_heads))``."""
    layout = edges.layout
    totals = head_edge_totals(p * edges.real, layout)
    return torch.tanh(2 * totals / (layout.n_layers * layout.n_heads)).sum()


def _number(method: str, name: str, value, auto: float) -> float:
    if value == "auto":
        return auto
    try:
        return float(value)
    except (TypeError, ValueError):
        raise MibenchError(f"method {method!r}: argument {name!r} must be a number or 'auto', got {value!r}") from None


@register_method("ugs")
class UniformGradientSampling(CircuitMethod):
    def score(self, context: AttributionContext) -> Graph:
        args = self.arguments
        lamb = float(args["lamb"])
        lr = _number("ugs", "lr", args["lr"], mib_learning_rate(lamb, context.ablation))
        node_reg = _number("ugs", "node_reg", args["node_reg"], min(0.5 * lamb, 2e-4))
        n_samples, n_steps = int(args["samples"]), int(args["steps"])
        if n_samples < 1 or n_steps < 0:
            raise MibenchError(f"method 'ugs': samples must be >= 1 and steps >= 0, got {n_samples}, {n_steps}")
        engine = context.engine
        generator = torch.Generator().manual_seed(context.seed)
        edges = EdgeParameters(engine.layout, lambda shape: torch.full(shape, float(args["init"])),
                               engine.device, torch.float32)
        optimizer = torch.optim.AdamW([edges.values], lr=lr, betas=(0.9, float(args["beta2"])), weight_decay=0.0)
        steps = training_steps(context, int(args["prompts_per_step"]))
        order = cycle_steps(steps, context.seed)
        with engine.frozen_parameters():
            for _ in range(n_steps):
                step = next(order)
                uniform = torch.rand((n_samples, *edges.values.shape), generator=generator).to(engine.device)
                masks = sample_uniform_masks(edges.values, uniform)
                with torch.no_grad():
                    alive = prune_dangling(masks > 0, engine.layout)
                masks = masks * alive
                p = torch.sigmoid(edges.values)
                loss = (kl_from_full(engine, step, masks.to(engine.dtype)).mean() + lamb * edges.real_sum(p)
                        + node_reg * node_complexity(p, edges))
                optimizer.zero_grad()
                loss.backward()
                clip_gradient([edges.values], float(args["clip"]))
                optimizer.step()
        if context.on_batch is not None:
            context.on_batch(context.n_examples)
        return edges.to_graph(torch.sigmoid(edges.values))
