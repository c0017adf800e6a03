"""A tiny float64 GPT-2 with one batch of random clean/counterfactual prompts (shared by the learned-baseline tests)."""

from __future__ import annotations

import torch

from mibench.circuits.batches import CircuitBatch
from mibench.engine import PatchingEngine
from mibench.models.adapter import adapter_for
from mibench.models.tiny import tiny_model


def tiny_engine_and_batch(batch: int, seq: int, *, padded_rows: int = 0) -> tuple[PatchingEngine, CircuitBatch]:
    """``padded_rows`` leading prompts end in two padding tokens."""
    model = tiny_model("gpt2", n_layers=2, dtype=torch.float64)
    engine = PatchingEngine(adapter_for(model))
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(3, 101, (batch, seq), generator=gen)
    cf = clean.clone()
    cf[:, 1:3] = torch.randint(3, 101, (batch, 2), generator=gen)
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[:padded_rows, -2:] = 0
    answers, cf_answers = torch.randint(3, 101, (2, batch), generator=gen)
    return engine, CircuitBatch(clean, cf, mask, answers, cf_answers, [f"ex{i}" for i in range(batch)])
