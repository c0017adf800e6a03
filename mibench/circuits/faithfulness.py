"""Evaluate many circuits on a task split: per-example logit differences, all circuits batched.

Every non-circuit edge carries its counterfactual activation (MIB always evaluates with counterfactual
patching, whatever ablation the method used for attribution). Per batch: one forward of the clean and
counterfactual inputs stacked (the counterfactual half is recorded; the logits give ``m(full)`` and
``m(empty)``), and one stacked forward in which each block of rows runs a different circuit. Identical
circuits (e.g. the signed and absolute rankings at 100%) are evaluated once, and the complete and empty
circuits are not run at all: the engine computes them exactly as the clean and counterfactual runs, whose
logits are already there.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from mibench.circuits.batches import CircuitBatch
from mibench.circuits.metrics import logit_difference
from mibench.engine.ablation import patching_with_clean_run
from mibench.engine.engine import PatchingEngine
from mibench.engine.masks import CircuitMask
from mibench.graph.graph import Graph


@dataclass
class CircuitEvaluation:
    """Logit differences per example: ``circuits`` ``[C, n]`` (input order), ``full`` and ``empty`` ``[n]``."""

    circuits: np.ndarray
    full: np.ndarray
    empty: np.ndarray
    example_ids: list[str]


def _mask_key(mask: CircuitMask) -> bytes:
    key = mask.edges.to(torch.bool).numpy().tobytes()
    if mask.neurons is not None:
        key += b"|" + mask.neurons.to(torch.bool).numpy().tobytes()
    return key


def _shortcut(engine: PatchingEngine, mask: CircuitMask) -> str | None:
    """``"full"`` / ``"empty"`` when the circuit is the whole graph / nothing, else None."""
    if int(mask.edges.count_nonzero()) == 0:
        return "empty"
    return "full" if engine.is_complete(mask) else None


def evaluate_circuits(
    engine: PatchingEngine,
    batches: Iterable[CircuitBatch],
    circuits: list[Graph],
    *,
    on_batch: Callable[[int], None] | None = None,
) -> CircuitEvaluation:
    unique: dict[bytes, int] = {}
    masks: list[CircuitMask] = []
    which: list[int | str] = []  # index into the stacked circuits, or "full" / "empty"
    for graph in circuits:
        mask = CircuitMask.from_graph(graph)
        shortcut = _shortcut(engine, mask)
        if shortcut is not None:
            which.append(shortcut)
            continue
        key = _mask_key(mask)
        if key not in unique:
            unique[key] = len(masks)
            masks.append(mask)
        which.append(unique[key])
    stacked = CircuitMask.stack(masks) if masks else None
    per_circuit: list[np.ndarray] = []
    full: list[np.ndarray] = []
    empty: list[np.ndarray] = []
    ids: list[str] = []
    with torch.no_grad():
        for batch in batches:
            positions = batch.last_positions
            ablation, clean, cf = patching_with_clean_run(engine, batch.clean_ids, batch.cf_ids,
                                                          batch.attention_mask, logit_positions=positions)
            empty.append(logit_difference(cf.logits, batch.answers, batch.cf_answers).cpu().numpy())
            full.append(logit_difference(clean.logits, batch.answers, batch.cf_answers).cpu().numpy())
            if stacked is not None:
                out = engine.forward(batch.clean_ids, batch.attention_mask, mask=stacked, ablation=ablation,
                                     logit_positions=positions)
                ld = logit_difference(out.logits, batch.answers, batch.cf_answers).view(len(masks), batch.size)
                per_circuit.append(ld.cpu().numpy())
            ids += batch.example_ids
            if on_batch is not None:
                on_batch(batch.size)
    # float64 throughout, so that a shortcut circuit's row is bit-identical to ``full`` / ``empty``.
    unique_results = (np.concatenate(per_circuit, axis=1) if per_circuit else np.zeros((0, len(ids)))).astype(np.float64)
    full_ld = (np.concatenate(full) if full else np.zeros(0)).astype(np.float64)
    empty_ld = (np.concatenate(empty) if empty else np.zeros(0)).astype(np.float64)
    rows = [full_ld if w == "full" else empty_ld if w == "empty" else unique_results[w] for w in which]
    return CircuitEvaluation(
        circuits=np.stack(rows) if rows else np.zeros((0, len(ids))),
        full=full_ld,
        empty=empty_ld,
        example_ids=ids,
    )
