"""ARC-Easy: MIB's official multiple-choice science questions, loaded from ``mib-bench/arc_easy``.

There is no procedural generator for this task: real science questions cannot be synthesised, so
``examples`` reads the official rows through :func:`mibench.data.official.load_official` (rows with
exactly four choices, as MIB keeps) and ``draw`` is never used. Without network access, point
``$MIBENCH_OFFICIAL_DATA_DIR`` at a folder holding ``arc_easy/<split>.jsonl`` (a downloaded copy).
"""

from __future__ import annotations

from mibench.causal.causal_model import CausalModel
from mibench.data.official import OfficialTask
from mibench.data.registry import register_task
from mibench.tasks.mcqa.causal import arc_causal_model


@register_task("arc_easy")
class ArcEasyTask(OfficialTask):
    """ARC-Easy questions (counterfactuals: answerPosition, randomLetter, answerPosition_randomLetter)."""

    def causal_model(self) -> CausalModel:
        return arc_causal_model(self.card.id)
