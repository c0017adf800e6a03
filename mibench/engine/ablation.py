"""What an ablated edge carries: counterfactual (patching), mean, zero or optimal (learned constant) activations.

Every ablation is a list of per-source-group tensors broadcastable to ``[B, U_g, T, d]`` (the layout of
:class:`~mibench.engine.engine.SourceActivations`). Patching takes them from a recorded counterfactual
run; mean ablation averages recorded runs over a reference set; zero ablation needs none; optimal
ablation holds constants fitted to the LM loss (:mod:`mibench.engine.optimal_ablation`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from mibench.engine.engine import EngineOutput, PatchingEngine, SourceActivations


@dataclass
class Ablation:
    """Ablated activations per source group; ``None`` means zero ablation."""

    kind: Literal["patching", "mean", "zero", "optimal"]
    sources: SourceActivations | None
    #: For patching: the attention mask of the recorded counterfactual run. When a forward uses the same
    #: mask, a node none of whose inputs keeps an edge reads exactly the counterfactual residual, so its
    #: output *is* the recorded one and the engine skips computing it.
    attention_mask: Tensor | None = None

    @classmethod
    def zero(cls) -> "Ablation":
        return cls("zero", None)

    @classmethod
    def patching(
        cls, engine: PatchingEngine, cf_input_ids: Tensor, attention_mask: Tensor | None = None
    ) -> "Ablation":
        """Record the counterfactual run's source outputs (MIB's evaluation ablation)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(cf_input_ids)
        with torch.no_grad():
            out = engine.forward(cf_input_ids, attention_mask, record=True, logit_positions="none")
        return cls("patching", out.sources, attention_mask.to(engine.device))


def patching_with_clean_run(
    engine: PatchingEngine,
    clean_input_ids: Tensor,
    cf_input_ids: Tensor,
    attention_mask: Tensor | None = None,
    *,
    logit_positions: Tensor | str = "none",
) -> tuple[Ablation, EngineOutput, EngineOutput]:
    """Counterfactual patching and the clean run together: ``(ablation, clean output, counterfactual
    output)``, both outputs with recorded sources and logits at ``logit_positions``.

    The two inputs share one attention mask (patching needs equal lengths), so they run as one forward of
    both stacked: the same arithmetic as two forwards, with half the per-call overhead that dominates
    small models. Values agree with separate runs to float rounding.
    """
    batch = clean_input_ids.shape[0]
    if attention_mask is None:
        attention_mask = torch.ones_like(clean_input_ids)
    if isinstance(logit_positions, Tensor):
        logit_positions = logit_positions.repeat(2)
    with torch.no_grad():
        both = engine.forward(torch.cat([clean_input_ids, cf_input_ids]), attention_mask.repeat(2, 1), record=True,
                              logit_positions=logit_positions)
    halves = [
        EngineOutput(None if both.logits is None else both.logits[rows],
                     SourceActivations([g[rows] for g in both.sources.groups]))
        for rows in (slice(0, batch), slice(batch, 2 * batch))
    ]
    ablation = Ablation("patching", halves[1].sources, attention_mask.to(engine.device))
    return ablation, halves[0], halves[1]


def mean_ablation(
    engine: PatchingEngine,
    batches: Iterable[tuple[Tensor, Tensor | None]],
    *,
    positional: bool = False,
) -> Ablation:
    """Mean source outputs over a reference set of ``(input_ids, attention_mask)`` batches.

    Unlike MIB's reference code (which took the last token divided by the length and then averaged
    *across nodes*), this is the plain per-node mean over every non-padding token; ``positional=True``
    keeps one mean per position instead (all batches must then share one length).
    """
    sums: list[Tensor] | None = None
    count: Tensor | float = 0.0
    for input_ids, attention_mask in batches:
        with torch.no_grad():
            out = engine.forward(input_ids, attention_mask, record=True, logit_positions="none")
        weights = (
            torch.ones(input_ids.shape, dtype=engine.dtype)
            if attention_mask is None
            else attention_mask.to(engine.dtype)
        ).to(engine.device)
        w = weights[:, None, :, None]  # [B, 1, T, 1]
        if positional:
            contrib = [(g * w).sum(0, keepdim=True) for g in out.sources.groups]
            batch_count = w.sum(0, keepdim=True)
        else:
            contrib = [(g * w).sum((0, 2), keepdim=True) for g in out.sources.groups]
            batch_count = w.sum()
        sums = contrib if sums is None else [s + c for s, c in zip(sums, contrib)]
        count = count + batch_count
    if sums is None:
        raise ValueError("mean ablation needs at least one reference batch")
    means = [s / torch.clamp(torch.as_tensor(count), min=1.0) for s in sums]
    return Ablation("mean", SourceActivations(means))
