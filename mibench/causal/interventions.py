"""Interchange interventions at one site (layer, token role): cached activations, training, accuracy.

Everything the frozen model computes that does not depend on the intervention is computed once per site
and reused: the base residual stream after block ``layer`` (all positions, since later blocks attend to
them) and the source vector at the source's role position. A training step or an evaluation batch then
edits one vector per row and runs only the blocks after ``layer``
(:meth:`~mibench.engine.residual.ResidualRunner.run_from`).

Training (shared by every trainable featurizer and feature selection) follows MIB's interchange
intervention training: AdamW over the intervention's parameters only (weight decay 0, constant learning
rate), shuffled batches, cross-entropy of the label tokens under the intervention, plus the selection's
sparsity penalty; the selection's temperature is annealed once per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from mibench.causal.featurizer import Interchange
from mibench.causal.pairs import PairSet, predictions_match
from mibench.engine.residual import ResidualRunner


#: Largest cache of later-layer base residuals kept for suffix-only tail runs (bytes).
PREFIX_CACHE_BYTES = 1 << 30


@dataclass
class SiteActivations:
    """The frozen model's activations for one set of pairs at one (layer, role)."""

    layer: int
    role: str
    base_resid: Tensor  # [N, T, d] residual after block `layer` on the base sequences
    base_positions: Tensor  # [N]
    source_vectors: Tensor  # [N, d]
    pairs: PairSet
    #: residuals after blocks layer..n-2 (unedited), for suffix-only tail runs; None when over budget
    later_resid: list[Tensor] | None = None

    def __len__(self) -> int:
        return self.base_resid.shape[0]

    def base_vectors(self) -> Tensor:
        rows = torch.arange(len(self), device=self.base_resid.device)
        return self.base_resid[rows, self.base_positions]


class LayerCache:
    """Base residual streams and source residuals of a pair set at one layer, shared by its roles."""

    def __init__(self, runner: ResidualRunner, pairs: PairSet, layer: int, batch_size: int = 64,
                 prefix_budget: int = PREFIX_CACHE_BYTES) -> None:
        self.runner, self.pairs, self.layer = runner, pairs, layer
        ids, mask = pairs.base.ids, pairs.base.mask
        later = list(range(layer, runner.n_layers - 1))
        item = ids.numel() * runner.d_model * torch.finfo(runner.dtype).bits // 8
        keep = later if later and item * len(later) <= prefix_budget else []
        base = _residuals(runner, ids, mask, sorted({layer, *keep}), batch_size)
        self.base_resid = base[layer]
        self.later_resid = [base[i] for i in keep] if keep else None
        self.source_resid = _residuals(runner, pairs.source.ids, pairs.source.mask, [layer], batch_size)[layer]

    def site(self, role: str) -> SiteActivations:
        rows = torch.arange(len(self.pairs))
        source_vectors = self.source_resid[rows, self.pairs.source_positions[role].to(self.source_resid.device)]
        return SiteActivations(self.layer, role, self.base_resid, self.pairs.base_positions[role].to(
            self.base_resid.device), source_vectors, self.pairs, self.later_resid)


@torch.no_grad()
def _residuals(runner: ResidualRunner, ids: Tensor, mask: Tensor, layers: list[int],
               batch_size: int) -> dict[int, Tensor]:
    parts = [runner.residuals(ids[i:i + batch_size], mask[i:i + batch_size], layers=layers)
             for i in range(0, ids.shape[0], batch_size)]
    return {layer: torch.cat([p[layer] for p in parts]) for layer in layers}


def intervened_logits(runner: ResidualRunner, interchange: Interchange, site: SiteActivations, rows: Tensor, *,
                      training: bool) -> Tensor:
    """Logits ``[b, m, V]`` at the label positions of ``rows`` with the interchange applied."""
    resid = site.base_resid[rows]
    positions = site.base_positions[rows]
    index = torch.arange(rows.shape[0], device=resid.device)
    edited = interchange(resid[index, positions], site.source_vectors[rows], training=training).to(resid.dtype)
    resid = resid.index_put((index, positions), edited)
    base = site.pairs.base
    prefix = None if site.later_resid is None else [r[rows] for r in site.later_resid]
    return runner.run_from(site.layer, resid, base.mask[rows], read_positions=base.read_positions[rows],
                           prefix=prefix, start=int(positions.min()))


@torch.no_grad()
def interchange_correct(runner: ResidualRunner, interchange: Interchange, site: SiteActivations,
                        batch_size: int = 256) -> Tensor:
    """[N] bool: the model outputs the interchange label under the (hard) intervention."""
    interchange.eval()
    out = []
    base = site.pairs.base
    for start in range(0, len(site), batch_size):
        rows = torch.arange(start, min(start + batch_size, len(site)))
        logits = intervened_logits(runner, interchange, site, rows, training=False)
        out.append(predictions_match(logits, base.answer_ids[rows], base.answer_mask[rows]))
    return torch.cat(out)


@dataclass
class TrainingSettings:
    epochs: int = 4
    lr: float = 1e-2
    batch_size: int = 64
    seed: int = 0


def train_interchange(runner: ResidualRunner, interchange: Interchange, site: SiteActivations,
                      settings: TrainingSettings, on_step: Callable[[], None] | None = None) -> list[float]:
    """Interchange intervention training; returns the mean loss of each epoch."""
    params = [p for p in interchange.parameters() if p.requires_grad]
    if not params:
        return []
    optimizer = torch.optim.AdamW(params, lr=settings.lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(settings.seed)
    n = len(site)
    steps_per_epoch = math.ceil(n / settings.batch_size)
    total = max(1, settings.epochs * steps_per_epoch)
    base = site.pairs.base
    history: list[float] = []
    step = 0
    interchange.train()
    with runner.frozen():
        for _ in range(settings.epochs):
            order = torch.randperm(n, generator=generator)
            losses = []
            for start in range(0, n, settings.batch_size):
                rows = order[start:start + settings.batch_size]
                interchange.selection.step(step / max(1, total - 1))
                logits = intervened_logits(runner, interchange, site, rows, training=True)
                loss = label_loss(logits, base.answer_ids[rows], base.answer_mask[rows])
                penalty = interchange.selection.penalty()
                if penalty is not None:
                    loss = loss + penalty
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
                step += 1
                if on_step is not None:
                    on_step()
            history.append(sum(losses) / len(losses))
    interchange.selection.step(1.0)
    interchange.eval()
    return history


def label_loss(logits: Tensor, answer_ids: Tensor, answer_mask: Tensor) -> Tensor:
    """Cross-entropy of the label tokens, averaged over real label tokens."""
    flat = logits.flatten(0, 1).float()
    targets = answer_ids.to(logits.device).flatten().masked_fill(~answer_mask.to(logits.device).flatten(), -100)
    return torch.nn.functional.cross_entropy(flat, targets, ignore_index=-100)
