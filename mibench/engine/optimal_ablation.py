"""Optimal ablation (Li & Janson, 2024): every source node's ablated value is a learned constant.

For each source node ``u`` (the input, every attention head, every MLP) a constant vector ``c_u`` is fitted
so that the model, with ``u`` alone outputting ``c_u`` at every position, predicts the next token of the
fit prompts as well as it can (mean cross-entropy over every real token). The constants are then an
:class:`~mibench.engine.ablation.Ablation` like mean ablation's (one ``[1, U, 1, d]`` tensor per source
group), so every method that takes an ablation uses them unchanged: ``Delta_u = c_u - a_u``.

MIB's procedure (``oa.py``), kept here: Adam, learning rate 1e-3, at most 1000 steps, initialised at the
mean, a check every 10 steps with patience 3, 5 prompts per step. Deliberate differences: the initial value
is the true per-node mean over tokens (MIB's "mean" was a sum over positions and batch divided by the
number of batches); every head keeps its own constant (MIB's loader kept head 0's vector and left the other
heads at zero); each head is fitted with that head alone replaced (MIB replaced a whole attention layer's
heads at once).

All nodes are fitted in parallel: one forward stacks ``n`` copies of the step's prompts, and copy ``i``
replaces node ``i``'s output with its constant (through the engine's ``edit_sources``). Copy ``i``'s loss
depends on ``c_i`` alone, and Adam is elementwise, so this is exactly ``n`` independent fits sharing
forwards. A node whose check loss stopped improving is frozen and leaves the stack.

Fitted constants are cached under ``$MIBENCH_CACHE_DIR/optimal_ablation`` (default
``~/.cache/mibench/optimal_ablation``), keyed by a fingerprint of the model's weights, the fit prompts'
token ids and the settings, as ``<key>.pt`` (tensors only, loaded with ``weights_only=True``) beside
``<key>.json`` (the card: settings, model, data, per-node steps and losses). A ``<key>.lock`` file beside
them serialises fits of one key on one machine, so concurrent runs fit it once.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from torch import Tensor

from mibench.engine.ablation import Ablation, mean_ablation
from mibench.engine.engine import PatchingEngine, SourceActivations, SourceGroup
from mibench.errors import MibenchError
from mibench.io_utils import atomic_path, atomic_write_text, exclusive_lock

#: Bumped when a change to the fit could change the constants (invalidates the cache).
FIT_VERSION = 1
CACHE_SUBDIR = "optimal_ablation"


@dataclass(frozen=True)
class OptimalAblationSettings:
    """The fit's settings (MIB's values by default); all of them enter the cache key."""

    lr: float = 1e-3
    max_steps: int = 1000
    check_every: int = 10
    patience: int = 3
    prompts_per_step: int = 5
    seed: int = 0


#: What ``--ablation optimal`` uses (module-level so that a caller, e.g. a test, can change it in one place).
DEFAULT_SETTINGS = OptimalAblationSettings()


# ---------------------------------------------------------------- objective
def replacement_losses(engine: PatchingEngine, input_ids: Tensor, attention_mask: Tensor,
                       constants: Sequence[Tensor], nodes: Sequence[int]) -> Tensor:
    """``[len(nodes)]``: the prompts' mean next-token cross-entropy when node ``nodes[i]`` alone outputs its
    constant (``constants``: one ``[1, U_g, 1, d]`` tensor per source group, as an :class:`Ablation` holds)."""
    n, batch = len(nodes), input_ids.shape[0]
    index = torch.tensor(list(nodes), dtype=torch.long)

    def replace(group: SourceGroup, output: Tensor) -> Tensor:
        local = index - group.start
        hit = ((local >= 0) & (local < group.size)).nonzero().flatten()
        if hit.numel() == 0:
            return output
        chosen = torch.zeros(n, group.size, dtype=torch.bool)
        chosen[hit, local[hit]] = True
        chosen = chosen.repeat_interleave(batch, 0).to(output.device)[:, :, None, None]  # copy-major rows
        constant = constants[engine.groups.index(group)].to(output.device, output.dtype)
        return torch.where(chosen, constant, output)

    ids = input_ids.to(engine.device).repeat(n, 1)
    mask = attention_mask.to(engine.device).repeat(n, 1)
    logits = engine.forward(ids, mask, logit_positions="all", edit_sources=replace).logits
    return next_token_loss(logits, ids, mask).view(n, batch).sum(1) / _token_counts(mask).view(n, batch).sum(1)


def next_token_loss(logits: Tensor, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """Per row, the summed cross-entropy of predicting each real token from the ones before it."""
    wide = logits[:, :-1].to(torch.promote_types(logits.dtype, torch.float32))
    valid = (attention_mask[:, 1:] * attention_mask[:, :-1]).to(wide.dtype)
    ce = torch.nn.functional.cross_entropy(wide.flatten(0, 1), input_ids[:, 1:].flatten(),
                                           reduction="none").view_as(valid)
    return (ce * valid).sum(1)


def _token_counts(attention_mask: Tensor) -> Tensor:
    return (attention_mask[:, 1:] * attention_mask[:, :-1]).sum(1).clamp_min(1)


# ---------------------------------------------------------------------- fit
@dataclass
class FitResult:
    ablation: Ablation
    card: dict


def fit_optimal_ablation(engine: PatchingEngine, batches: Iterable[tuple[Tensor, Tensor | None]],
                         settings: OptimalAblationSettings = OptimalAblationSettings(),
                         init: Ablation | None = None) -> FitResult:
    """Fit every source node's constant on the prompts of ``batches`` (``(input_ids, attention_mask)``)."""
    batches = [(ids, torch.ones_like(ids) if mask is None else mask) for ids, mask in batches]
    steps_data = _step_batches(batches, settings)
    if init is None:
        init = mean_ablation(engine, batches)
    # at least float32: Adam's small steps vanish in bf16 (the forward casts to the model's dtype)
    master = torch.promote_types(engine.dtype, torch.float32)
    constants = [g.detach().clone().to(engine.device, master).requires_grad_(True) for g in init.sources.groups]
    optimizer = torch.optim.Adam(constants, lr=settings.lr)
    n_nodes = engine.layout.n_forward
    active = list(range(n_nodes))
    best = torch.full((n_nodes,), float("inf"), dtype=torch.float64)
    stale = torch.zeros(n_nodes, dtype=torch.long)
    steps = torch.zeros(n_nodes, dtype=torch.long)
    window = torch.zeros(n_nodes, dtype=torch.float64)
    first_window: Tensor | None = None
    per_forward = _nodes_per_forward(engine, steps_data[0][0].shape, settings)
    started = time.perf_counter()
    with engine.frozen_parameters():
        for step in range(settings.max_steps):
            if not active:
                break
            ids, mask = steps_data[step % len(steps_data)]
            optimizer.zero_grad(set_to_none=False)
            for start in range(0, len(active), per_forward):
                chunk = active[start : start + per_forward]
                losses = replacement_losses(engine, ids, mask, constants, chunk)
                losses.sum().backward()
                window[chunk] += losses.detach().double().cpu()
            frozen = [c.detach().clone() for c in constants]
            optimizer.step()
            _restore_frozen(engine, constants, frozen, active)
            steps[active] += 1
            if (step + 1) % settings.check_every == 0:
                mean_loss = window / settings.check_every
                if first_window is None:
                    first_window = mean_loss.clone()
                improved = mean_loss < best
                for node in list(active):
                    if improved[node]:
                        best[node], stale[node] = mean_loss[node], 0
                    else:
                        stale[node] += 1
                        if stale[node] >= settings.patience:
                            active.remove(node)
                window.zero_()
    card = {
        "fit_version": FIT_VERSION,
        "settings": asdict(settings),
        "nodes": engine.layout.forward_names,
        "steps": steps.tolist(),
        "stopped_early": [n not in active for n in range(n_nodes)],
        "first_check_loss": None if first_window is None else [round(float(x), 6) for x in first_window],
        "best_check_loss": [None if x == float("inf") else round(float(x), 6) for x in best],
        "n_prompts": sum(int(ids.shape[0]) for ids, _ in batches),
        "fit_seconds": round(time.perf_counter() - started, 3),
    }
    fitted = Ablation("optimal", SourceActivations([c.detach() for c in constants]))
    return FitResult(fitted, card)


def _restore_frozen(engine: PatchingEngine, constants: list[Tensor], frozen: list[Tensor],
                    active: list[int]) -> None:
    """Undo the optimizer's step on stopped nodes (Adam's momentum would keep moving them)."""
    live = torch.zeros(engine.layout.n_forward, dtype=torch.bool)
    live[active] = True
    with torch.no_grad():
        for group, constant, before in zip(engine.groups, constants, frozen, strict=True):
            keep = ~live[group.start : group.stop].to(constant.device)
            constant[:, keep] = before[:, keep]


def _step_batches(batches: list[tuple[Tensor, Tensor]],
                  settings: OptimalAblationSettings) -> list[tuple[Tensor, Tensor]]:
    """The fit prompts in a seeded order, ``prompts_per_step`` to a step, trimmed of all-padding columns."""
    if settings.prompts_per_step < 1:
        raise MibenchError(f"optimal ablation: prompts_per_step must be at least 1, got {settings.prompts_per_step}")
    rows = [(ids[i], mask[i]) for ids, mask in batches for i in range(ids.shape[0])]
    if not rows:
        raise MibenchError("optimal ablation needs at least one fit prompt")
    order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(settings.seed)).tolist()
    out = []
    for start in range(0, len(order), settings.prompts_per_step):
        chunk = [rows[i] for i in order[start : start + settings.prompts_per_step]]
        width = max(int(m.sum()) for _, m in chunk)
        pad = [(torch.nn.functional.pad(ids, (0, max(0, width - ids.shape[0])))[:width],
                torch.nn.functional.pad(m, (0, max(0, width - m.shape[0])))[:width]) for ids, m in chunk]
        out.append((torch.stack([p[0] for p in pad]), torch.stack([p[1] for p in pad])))
    return out


def _nodes_per_forward(engine: PatchingEngine, shape: torch.Size, settings: OptimalAblationSettings) -> int:
    """How many nodes' copies share a forward: logits and residual streams of all copies within the
    engine's memory budget (``max_delta_bytes``)."""
    config = engine.adapter.model.config
    vocab = int(getattr(config, "vocab_size", 0) or 0)
    per_node = settings.prompts_per_step * shape[1] * (vocab + 8 * engine.layout.d_model) * 4
    return max(1, min(engine.layout.n_forward, engine.max_delta_bytes // max(per_node, 1)))


# -------------------------------------------------------------------- cache
def cache_dir() -> Path:
    """``$MIBENCH_CACHE_DIR/optimal_ablation``, else ``$XDG_CACHE_HOME/mibench/...``, else ``~/.cache/...``."""
    root = os.environ.get("MIBENCH_CACHE_DIR")
    if root:
        return Path(root) / CACHE_SUBDIR
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mibench" / CACHE_SUBDIR


def model_fingerprint(engine: PatchingEngine) -> str:
    """A digest of the model's configuration and weights (each tensor's shape, dtype, sum and edges), cheap
    enough for large models and different for any retrained or edited checkpoint in practice."""
    model = engine.adapter.model
    digest = hashlib.sha256(model.config.to_json_string(use_diff=False).encode())
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            flat = tensor.detach().flatten()
            digest.update(f"{name}|{tuple(tensor.shape)}|{tensor.dtype}|".encode())
            digest.update(repr(float(flat.double().sum())).encode())
            digest.update(torch.cat([flat[:64], flat[-64:]]).double().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def cache_key(engine: PatchingEngine, batches: Sequence[tuple[Tensor, Tensor | None]],
              settings: OptimalAblationSettings) -> str:
    digest = hashlib.sha256(f"oa{FIT_VERSION}|{model_fingerprint(engine)}|{engine.dtype}|".encode())
    digest.update(json.dumps(asdict(settings), sort_keys=True).encode())
    for ids, mask in batches:
        digest.update(ids.to(torch.int64).cpu().numpy().tobytes())
        if mask is not None:
            digest.update(mask.to(torch.int64).cpu().numpy().tobytes())
    return digest.hexdigest()[:24]


def _cached_ablation(engine: PatchingEngine, tensors_path: Path) -> Ablation | None:
    """The cache entry at ``tensors_path`` as an ablation, or None when there is none yet."""
    if not tensors_path.is_file():
        return None
    return Ablation("optimal", SourceActivations(_load_constants(engine, tensors_path)))


def optimal_ablation(engine: PatchingEngine, batches: Sequence[tuple[Tensor, Tensor | None]],
                     settings: OptimalAblationSettings | None = None, *,
                     directory: Path | None = None, label: dict | None = None) -> Ablation:
    """The fitted constants for these prompts: loaded from the cache, or fitted and cached.

    ``settings`` default to :data:`DEFAULT_SETTINGS`; ``label`` (e.g. model, task and split names) is written
    into the card for people reading the cache."""
    settings = DEFAULT_SETTINGS if settings is None else settings
    directory = cache_dir() if directory is None else Path(directory)
    key = cache_key(engine, batches, settings)
    tensors_path, card_path = directory / f"{key}.pt", directory / f"{key}.json"
    if (cached := _cached_ablation(engine, tensors_path)) is not None:  # a hit never creates a lock file
        return cached
    # Runs of one sweep on this machine that need the same fit (EAP, EAP-IG and exact patching on one task)
    # would otherwise each fit it; the first fits, the others wait here and then read its cache entry.
    with exclusive_lock(directory / f"{key}.lock"):
        if (cached := _cached_ablation(engine, tensors_path)) is not None:  # fitted while this run waited
            return cached
        result = fit_optimal_ablation(engine, batches, settings)
        card = {"key": key, "model": getattr(engine.adapter.model.config, "_name_or_path", None),
                "model_fingerprint": model_fingerprint(engine), "dtype": str(engine.dtype).replace("torch.", ""),
                **(label or {}), **result.card}
        with atomic_path(tensors_path) as tmp:
            torch.save({"fit_version": FIT_VERSION, "groups": [g.cpu() for g in result.ablation.sources.groups]},
                       tmp)
        atomic_write_text(card_path, json.dumps(card, indent=1) + "\n")
    return result.ablation


def _load_constants(engine: PatchingEngine, path: Path) -> list[Tensor]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: name it
        raise MibenchError(f"{path}: not a readable optimal-ablation file ({exc}); delete it to refit") from None
    groups = payload.get("groups") if isinstance(payload, dict) else None
    expected = [(1, g.size, 1, engine.layout.d_model) for g in engine.groups]
    if not isinstance(groups, list) or [tuple(g.shape) for g in groups if isinstance(g, Tensor)] != expected:
        raise MibenchError(f"{path}: field 'groups' must hold {len(expected)} tensors shaped {expected}; "
                           "delete the file to refit")
    return [g.to(engine.device, engine.dtype) for g in groups]
