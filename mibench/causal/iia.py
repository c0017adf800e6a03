"""Interchange intervention accuracy (IIA): per site, per layer, and the two headline numbers.

Aggregation is MIB's (``aggregate_results.py``):

1. ``acc(site)`` = unweighted mean over the test counterfactual kinds of the fraction of pairs whose
   intervened output is the causal model's label;
2. ``best(layer)`` = max over token positions of ``acc``;
3. **average** = mean over layers of ``best(layer)``; **best** = max over layers.

"average" is only defined when every layer *of the model* was scored (MIB's leaderboard ranks it only
for complete submissions): an average over a chosen subset of layers (``--layers``) would not be comparable
with one over all of them, so it is None then. Requested sites without a result are listed as missing. Standard errors come
from a seeded bootstrap over test pairs (each kind resampled on its own), recomputing the whole
aggregation (max over positions, mean/max over layers) in every replicate, so they include the optimism
of taking maxima.

:func:`per_pair_correct` lays the per-pair results out as the record's sidecar stores them, and
:func:`causal_metrics_from_examples` recomputes the headline numbers from that layout with :func:`aggregate`
itself (optionally on resampled pair indices, as the leaderboard's paired bootstrap does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

import torch
from torch import Tensor

#: Version of the causal-track scoring; records from another version are not ranked together.
SCORER_VERSION = "1"
#: How an intervened output is judged correct (recorded in every causal record's scorer block).
CHECKER = "greedy: argmax predicts every label token (teacher forcing)"


@dataclass
class SiteResult:
    layer: int
    role: str
    correct: dict[str, Tensor]  # kind -> [N_kind] bool

    @property
    def by_kind(self) -> dict[str, float]:
        return {kind: float(c.float().mean()) if c.numel() else float("nan") for kind, c in self.correct.items()}

    @property
    def accuracy(self) -> float:
        values = list(self.by_kind.values())
        return sum(values) / len(values)


@dataclass
class Aggregate:
    per_layer: dict[int, float]  # best over positions
    best_role: dict[int, str]
    average: float | None
    best: float
    average_stderr: float | None
    best_stderr: float | None
    missing: list[tuple[int, str]]


def aggregate(results: list[SiteResult], layers: list[int], roles: list[str], *, n_layers: int | None = None,
              bootstrap: int = 1000, seed: int = 0) -> Aggregate:
    """Per-layer best, average and best over layers, with bootstrap standard errors.

    ``layers`` x ``roles`` are the requested sites; ``n_layers`` is the model's depth (default: the
    requested layers are all there are). "average" needs a result at every one of the model's layers.
    """
    by_site = {(r.layer, r.role): r for r in results}
    missing = [(layer, role) for layer in layers for role in roles if (layer, role) not in by_site]
    scored_layers = sorted({r.layer for r in results})
    per_layer, best_role = {}, {}
    for layer in scored_layers:
        candidates = [r for r in results if r.layer == layer]
        top = max(candidates, key=lambda r: r.accuracy)
        per_layer[layer], best_role[layer] = top.accuracy, top.role
    complete = _covers_model(per_layer, layers, n_layers)
    average = sum(per_layer.values()) / len(per_layer) if complete and per_layer else None
    best = max(per_layer.values()) if per_layer else float("nan")
    avg_se, best_se = _bootstrap(results, scored_layers, complete, bootstrap, seed)
    return Aggregate(per_layer, best_role, average, best, avg_se, best_se, missing)


def _bootstrap(results: list[SiteResult], layers: list[int], complete: bool, replicates: int,
               seed: int) -> tuple[float | None, float | None]:
    if replicates <= 0 or not results:
        return None, None
    kinds = list(results[0].correct)
    generator = torch.Generator().manual_seed(seed)
    # accuracy[b, s] averaged over kinds, each kind resampled independently (same indices for every site)
    acc = torch.zeros(replicates, len(results), dtype=torch.float64)
    for kind in kinds:
        stacked = torch.stack([r.correct[kind] for r in results]).to(torch.float64)  # [S, N]
        n = stacked.shape[1]
        if n < 2:
            return None, None
        idx = torch.randint(0, n, (replicates, n), generator=generator)
        acc += stacked[:, idx].mean(-1).T / len(kinds)
    per_layer, best, average = _layer_summary(acc, [r.layer for r in results], layers, complete)
    return (float(average.std()) if average is not None else None), float(best.std())


def _covers_model(scored, layers: list[int], n_layers: int | None) -> bool:
    """Whether every layer of the model (``n_layers``; default: the requested ``layers``) has a scored site."""
    every_layer = range(n_layers) if n_layers is not None else layers
    return all(layer in scored for layer in every_layer)


def _layer_summary(acc: Tensor, site_layers: list[int], layers: list[int],
                   complete: bool) -> tuple[Tensor, Tensor, Tensor | None]:
    """Per-layer best ``[B, L]`` (max over a layer's sites), best ``[B]`` and average ``[B]`` (None unless every
    layer was scored) from per-site accuracies ``acc`` ``[B, S]``."""
    layer_of = torch.tensor(site_layers)
    per_layer = torch.stack([acc[:, layer_of == layer].max(-1).values for layer in layers], -1)  # [B, L]
    return per_layer, per_layer.max(-1).values, (per_layer.mean(-1) if complete else None)


def per_pair_correct(results: list[SiteResult]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """``(correct [S, N] uint8, kind [N] uint8, kinds)``: every scored site's per-pair correctness, rows in
    ``results`` order, the pairs of each counterfactual kind after one another (``kind`` indexes ``kinds``)."""
    if not results:
        return np.zeros((0, 0), dtype=np.uint8), np.zeros(0, dtype=np.uint8), []
    kinds = list(results[0].correct)
    correct = np.stack([np.concatenate([r.correct[k].cpu().numpy().astype(np.uint8).reshape(-1) for k in kinds])
                        for r in results])
    kind = np.concatenate([np.full(results[0].correct[k].numel(), i, dtype=np.uint8) for i, k in enumerate(kinds)])
    return correct, kind, kinds


def causal_metrics_from_examples(correct: np.ndarray, sites: Sequence, kind: np.ndarray | None = None, *,
                                 n_layers: int | None = None, index: np.ndarray | None = None) -> Aggregate:
    """A causal record's IIA (per layer, best, average) from its per-pair correctness (the sidecar).

    ``correct`` is ``[S, N]`` (1 = the intervened output was right), one row per entry of ``sites`` (the
    record's ``sites``: objects with ``layer`` and ``role``, or ``(layer, role)`` pairs); ``kind`` ``[N]`` gives
    each pair's counterfactual kind (``None``: one kind); ``n_layers`` is the model's depth (the record's
    ``model.n_layers``; "average" needs every layer). ``index`` ``[m]`` picks (resampled) pairs, the same for
    every site; resample within each kind to keep the kinds' sizes. Computed by :func:`aggregate` itself, so
    the record's numbers come back exactly; :func:`causal_metrics_resampled` does many resamples at once.
    """
    correct = np.asarray(correct)
    kind = np.zeros(correct.shape[-1], dtype=np.int64) if kind is None else np.asarray(kind)
    if index is not None:
        correct, kind = correct[:, np.asarray(index)], kind[np.asarray(index)]
    located = _located(sites, correct.shape[0])
    kinds = sorted(set(kind.tolist()))
    results = [SiteResult(layer, role, {k: torch.from_numpy(row[kind == k].astype(bool)) for k in kinds})
               for (layer, role), row in zip(located, correct)]
    layers = sorted({layer for layer, _ in located})
    roles = list(dict.fromkeys(role for _, role in located))
    return aggregate(results, layers, roles, n_layers=n_layers, bootstrap=0)


@dataclass
class ResampledIIA:
    """IIA over ``R`` resamples of the pairs: ``per_layer`` ``[R, L]`` (columns: ``layers``), ``best`` ``[R]``,
    ``average`` ``[R]`` (None unless every layer of the model was scored)."""

    layers: list[int]
    per_layer: np.ndarray
    best: np.ndarray
    average: np.ndarray | None


def causal_metrics_resampled(correct: np.ndarray, sites: Sequence, kind: np.ndarray | None = None, *,
                             n_layers: int | None = None, index: np.ndarray) -> ResampledIIA:
    """:func:`causal_metrics_from_examples` for ``R`` resamples at once (``index`` ``[R, m]``), vectorised for a
    bootstrap: a site's accuracy in a resample is the unweighted mean over kinds of its resampled pairs'
    correctness (a kind absent from a resample gives NaN), then the same per-layer, best and average
    aggregation as :func:`aggregate`'s bootstrap."""
    correct = np.asarray(correct, dtype=np.float64)
    n = correct.shape[-1]
    kind = np.zeros(n, dtype=np.int64) if kind is None else np.asarray(kind)
    located = _located(sites, correct.shape[0])
    counts = np.stack([np.bincount(row, minlength=n) for row in np.asarray(index)]).astype(np.float64)  # [R, n]
    kinds = sorted(set(kind.tolist()))
    acc = np.zeros((counts.shape[0], correct.shape[0]))
    with np.errstate(invalid="ignore", divide="ignore"):
        for k in kinds:
            of_kind = counts * (kind == k)  # [R, n]
            acc += (of_kind @ correct.T) / of_kind.sum(-1, keepdims=True) / len(kinds)
    layers = sorted({layer for layer, _ in located})
    complete = _covers_model(layers, layers, n_layers)
    per_layer, best, average = _layer_summary(torch.from_numpy(acc), [layer for layer, _ in located], layers,
                                              complete)
    return ResampledIIA(layers, per_layer.numpy(), best.numpy(), None if average is None else average.numpy())


def _located(sites: Sequence, rows: int) -> list[tuple[int, str]]:
    """``(layer, role)`` of each site (record ``SiteRecord``s or pairs); as many as ``correct`` has rows."""
    located = [(s.layer, s.role) if hasattr(s, "layer") else (int(s[0]), str(s[1])) for s in sites]
    if len(located) != rows:
        raise ValueError(f"{rows} rows of per-pair correctness for {len(located)} sites")
    return located
