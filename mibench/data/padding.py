"""Right-padding of token rows into a batch: the one implementation every batch builder uses.

Rows are left-aligned (position ``t`` of a prompt is column ``t``), so positions computed on the
unpadded prompt (answer slots, token roles) index the batch directly; the mask marks real tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def pad_token_id(tokenizer: Any) -> int:
    """The tokenizer's padding id, or 0 for tokenizers without one (padding is masked out anyway)."""
    pad = getattr(tokenizer, "pad_token_id", None)
    return 0 if pad is None else int(pad)


def right_pad(rows: Sequence[Sequence[int]], pad_id: int, width: int | None = None) -> tuple[Tensor, Tensor]:
    """``(ids, mask)``, both ``[len(rows), width]`` long tensors (width: the longest row by default)."""
    width = max(len(row) for row in rows) if width is None else width
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask
