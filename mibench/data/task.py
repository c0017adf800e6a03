"""Task base class: a card plus a way to produce :class:`~mibench.data.example.Example` lists per split."""

from __future__ import annotations

import dataclasses
import random
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, ClassVar

from mibench.data.card import TaskCard
from mibench.data.example import Example
from mibench.data.splits import check_split, partition_of, sampling_seed

if TYPE_CHECKING:
    from mibench.causal.causal_model import CausalModel


class Task:
    """A registered task. Subclasses implement :meth:`draw`; everything else is shared."""

    task_id: ClassVar[str] = ""
    #: True when examples come from a generator (offline, any size); False for official-data-only tasks.
    procedural: ClassVar[bool] = True
    #: Partitions whose keys a model trained on this task (the embedded zoo) may see. Held-out keys test
    #: generalisation, so by default only ``train``. A knowledge task overrides it: RAVEL holds cities out
    #: from *featurizer* training, but a model can only answer about cities it was taught.
    model_training_splits: ClassVar[tuple[str, ...]] = ("train",)

    def __init__(self, card: TaskCard) -> None:
        self.card = card

    @property
    def version(self) -> str:
        return str(self.card.version)

    def examples(self, split: str, n: int | None = None, *, seed: int | None = None) -> list[Example]:
        """``n`` examples of ``split`` (default: the card's size), the same on every call and machine.

        Public splits use fixed seeds unless ``seed`` is given; ``private_test`` requires the secret seed
        from the environment (see :mod:`mibench.data.splits`).
        """
        check_split(split)
        if n is None:
            if split not in self.card.splits:
                raise ValueError(f"task {self.card.id!r} declares no size for split {split!r}")
            n = self.card.splits[split]
        seed = sampling_seed(split, seed)
        rng = random.Random(f"{self.card.id}:{split}:{seed}")  # str seeds hash deterministically
        return self._sample_unique(rng, split, n)

    def draw(self, rng: random.Random) -> tuple[str, Example]:
        """One random example and its split key (the part that must not be shared across splits)."""
        raise NotImplementedError

    def contained_prompts(self, example: Example) -> list[tuple[str, str, str]]:
        """``(split key, prompt, answer)`` of every shorter prompt of this task that ``example.prompt`` begins
        with (default: none).

        Why: a causal LM computes every prefix of a prompt in the same forward pass, so the zoo trainer can
        supervise these answers at their own last tokens for free (induction's shorter copies, for one).
        Each carries its split key so that the trainer keeps only train-partition ones.
        """
        return []

    def causal_model(self) -> "CausalModel":
        """The task's high-level algorithm for the causal-variable track (tasks whose card has a
        ``causal`` section override this)."""
        from mibench.errors import MibenchError

        raise MibenchError(f"task {self.card.id!r} declares no causal model (its card has no 'causal' section)")

    def _sample_unique(self, rng: random.Random, split: str, n: int) -> list[Example]:
        seen: set[str] = set()
        out: list[Example] = []
        attempts = 0
        budget = 200 * n + 10_000
        while len(out) < n:
            attempts += 1
            if attempts > budget:
                raise RuntimeError(
                    f"task {self.card.id!r} could only generate {len(out)} distinct {split} examples of {n} "
                    "requested; its example space is too small for that size"
                )
            key, example = self.draw(rng)
            if example.prompt in seen or partition_of(self.card.id, key) != split:
                continue
            seen.add(example.prompt)
            out.append(dataclasses.replace(example, id=f"{self.card.id}/{split}/{len(out):06d}"))
        return out


def fill(template: str, values: dict[str, str]) -> tuple[str, dict[str, tuple[int, int]]]:
    """Fill ``{slot}`` placeholders and return the text with each slot's character span.

    Spans are how token roles are located for any tokenizer; a slot that occurs twice gets the span of
    its first occurrence under its own name (tasks that need both name them differently).
    """
    text, spans = "", {}
    for part in _split_template(template):
        if part.startswith("{") and part.endswith("}"):
            slot = part[1:-1]
            value = values[slot]
            spans.setdefault(slot, (len(text), len(text) + len(value)))
            text += value
        else:
            text += part
    return text, spans


def last_word_span(text: str) -> tuple[int, int]:
    """Character span of the prompt's last whitespace-separated word (the ``END`` role of most tasks)."""
    match = re.search(r"\S+\s*$", text)
    if match is None:
        raise ValueError("a prompt needs at least one word")
    return match.start(), match.start() + len(match.group().rstrip())


def _split_template(template: str) -> list[str]:
    return [p for p in re.split(r"(\{[^{}]+\})", template) if p]


Draw = Callable[[random.Random], tuple[str, Example]]
