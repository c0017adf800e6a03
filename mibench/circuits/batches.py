"""Tokenised clean/counterfactual batches for the circuit track.

MIB patches position by position, so a clean prompt and its counterfactual must have the same token
length, and the logit-difference metric needs single-token answers. Examples that violate either are
dropped (as MIB's loaders filter them) and counted by reason, so a run reports how many it used; a task
whose examples are *all* dropped is an error that names the first offender.

Examples are grouped by token length before batching, so batches carry (almost) no padding. The
per-example results do not depend on the order, and every batch keeps its examples' ids.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mibench.data.example import Example
from mibench.data.padding import pad_token_id, right_pad
from mibench.data.tokenization import TokenizationError, answer_token, encode
from mibench.errors import MibenchError


@dataclass
class CircuitBatch:
    """Right-padded clean and counterfactual token ids sharing one attention mask."""

    clean_ids: Tensor  # [B, T]
    cf_ids: Tensor  # [B, T]
    attention_mask: Tensor  # [B, T]
    answers: Tensor  # [B] the clean answer token
    cf_answers: Tensor  # [B] the counterfactual's answer token
    example_ids: list[str]

    @property
    def size(self) -> int:
        return self.clean_ids.shape[0]

    @property
    def last_positions(self) -> Tensor:
        """Index of the last real token per row (where the answer is predicted)."""
        return self.attention_mask.sum(-1) - 1


@dataclass
class BatchedData:
    """The batches of one task split, and what was dropped while building them."""

    batches: list[CircuitBatch]
    counterfactual: str
    dropped: Counter = field(default_factory=Counter)

    @property
    def n_examples(self) -> int:
        return sum(b.size for b in self.batches)

    @property
    def example_ids(self) -> list[str]:
        return [i for b in self.batches for i in b.example_ids]


def build_batches(
    examples: Sequence[Example], tokenizer: Any, counterfactual: str, batch_size: int
) -> BatchedData:
    """Tokenise ``examples`` with their ``counterfactual`` kind into length-grouped batches."""
    if batch_size < 1:
        raise MibenchError(f"batch size must be at least 1, got {batch_size}")
    rows: list[tuple[list[int], list[int], int, int, str]] = []
    dropped: Counter = Counter()
    first_problem: str | None = None
    for example in examples:
        cf = example.counterfactual(counterfactual)
        if not cf.has_answer:
            raise MibenchError(
                f"counterfactual {counterfactual!r} has no single correct answer (example {example.id}); "
                "the logit-difference metric needs one -- choose another counterfactual kind"
            )
        clean, corrupted = encode(tokenizer, example.prompt), encode(tokenizer, cf.prompt)
        if len(clean) != len(corrupted):
            dropped["unequal token lengths"] += 1
            first_problem = first_problem or (
                f"example {example.id}: clean prompt has {len(clean)} tokens, its {counterfactual!r} "
                f"counterfactual {len(corrupted)}")
            continue
        try:
            answer = answer_token(tokenizer, example.answer, example.id)
            cf_answer = answer_token(tokenizer, cf.answer, example.id)
        except TokenizationError as exc:
            dropped["answer is not one known token"] += 1
            first_problem = first_problem or str(exc)
            continue
        rows.append((clean, corrupted, answer, cf_answer, example.id))
    if not rows:
        raise MibenchError(f"no usable examples out of {len(examples)}: {first_problem or 'none given'}")
    rows.sort(key=lambda r: len(r[0]))  # stable: equal lengths keep their order
    batches = [_collate(rows[i : i + batch_size], tokenizer) for i in range(0, len(rows), batch_size)]
    return BatchedData(batches, counterfactual, dropped)


def _collate(rows, tokenizer: Any) -> CircuitBatch:
    pad = pad_token_id(tokenizer)
    clean, mask = right_pad([r[0] for r in rows], pad)
    cf, _ = right_pad([r[1] for r in rows], pad, width=clean.shape[1])
    return CircuitBatch(
        clean, cf, mask,
        torch.tensor([r[2] for r in rows]), torch.tensor([r[3] for r in rows]), [r[4] for r in rows],
    )
