"""The task metric of MIB's circuit track: logit difference at the prediction position."""

from __future__ import annotations

import torch
from torch import Tensor


def logit_difference(logits: Tensor, answers: Tensor, cf_answers: Tensor) -> Tensor:
    """``logit[y] - logit[y_cf]`` per row, from ``[R, vocab]`` logits at the last prompt token.

    ``R`` may be a multiple of the number of answers (stacked circuits, circuit-major rows); the answers
    are tiled to match. Computed in at least float32 whatever the model dtype, so bf16 models do not lose the
    small differences between nearly equal logits.
    """
    rows = logits.shape[0]
    repeat = rows // answers.shape[0]
    answers = answers.to(logits.device).repeat(repeat)
    cf_answers = cf_answers.to(logits.device).repeat(repeat)
    index = torch.arange(rows, device=logits.device)
    logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
    return logits[index, answers] - logits[index, cf_answers]
