"""Induction: a list of distinct nouns, then its first m nouns again; the model must continue the copy.

``"apple river stone cloud king boat apple river"`` -> ``" stone"``. Nothing but the earlier occurrence
says what comes next, so the task isolates copying by induction heads (attend from the last word to the
token after its earlier occurrence, copy it), a different mechanism from IOI's or arithmetic's.

* Length n of the list: 6..10 distinct nouns; repeat length m: 2 <= m < n. The query is ``words[m-1]`` (the
  last word of the prompt), the answer ``words[m]``; the query index is at least 1, so both of its
  occurrences follow a space and are the same token.
* Counterfactual ``random``: the answer's only occurrence (right after the query's first occurrence) is
  replaced by a noun not in the list, which becomes the correct answer. Every noun is one GPT-2 token with
  and without a leading space, so the prompts stay token-aligned for BPE tokenizers of that family.
* Split key: the ordered (query, answer) pair at the induction point, so no test example asks for a
  transition seen in training; every noun still occurs in every split.
* Contained prompts: a prompt with repeat length m begins with the prompts of the same list with every
  shorter repeat ``2 <= j < m``; the zoo trainer supervises those too (see ``Task.contained_prompts``).
"""

from __future__ import annotations

import random
from typing import Any

from mibench.data.example import Counterfactual, Example, Span
from mibench.data.registry import register_task
from mibench.data.task import Task

# Each is a single GPT-2 token both as " word" and as "word" (checked by tests/test_task_induction.py).
NOUNS = (
    "apple", "river", "stone", "window", "table", "chair", "door", "house", "tree", "flower",
    "bird", "horse", "dog", "cat", "fish", "bread", "water", "book", "paper", "clock",
    "phone", "camera", "glass", "plate", "knife", "box", "bag", "coat", "shirt", "hat",
    "road", "bridge", "city", "forest", "lake", "cloud", "rain", "wind", "storm", "moon",
    "king", "doctor", "child", "baby", "friend", "mother", "father", "car", "ship", "boat",
    "plane", "bike", "wheel", "engine", "hammer", "wall", "floor", "church", "school", "market",
)
MIN_WORDS, MAX_WORDS = 6, 10
MIN_COPY = 2


def render(words: list[str], copy_len: int) -> tuple[str, dict[str, Span]]:
    """The prompt (``words`` then ``words[:copy_len]``, space-separated) and its role spans."""
    sequence = list(words) + list(words[:copy_len])
    starts, pos = [], 0
    for word in sequence:
        starts.append(pos)
        pos += len(word) + 1

    def span(index: int) -> Span:
        return starts[index], starts[index] + len(sequence[index])

    last = span(len(sequence) - 1)
    spans = {"query_first": span(copy_len - 1), "answer_first": span(copy_len), "query_last": last, "END": last}
    return " ".join(sequence), spans


def split_key(words: list[str], copy_len: int) -> str:
    """The ordered (query, answer) pair at the induction point."""
    return f"{words[copy_len - 1]}|{words[copy_len]}"


def variables(words: list[str], copy_len: int) -> dict[str, Any]:
    return {"answer": words[copy_len], "query": words[copy_len - 1], "copy_index": copy_len}


@register_task("induction")
class InductionTask(Task):
    def draw(self, rng: random.Random) -> tuple[str, Example]:
        n = rng.randint(MIN_WORDS, MAX_WORDS)
        words = rng.sample(NOUNS, n)
        copy_len = rng.randint(MIN_COPY, n - 1)
        replacement = rng.choice([noun for noun in NOUNS if noun not in words])
        cf_words = words[:copy_len] + [replacement] + words[copy_len + 1:]

        prompt, spans = render(words, copy_len)
        cf_prompt, cf_spans = render(cf_words, copy_len)
        example = Example(
            id="",
            prompt=prompt,
            answer=" " + words[copy_len],
            counterfactuals={
                "random": Counterfactual(cf_prompt, " " + replacement, variables(cf_words, copy_len), cf_spans),
            },
            spans=spans,
            variables=variables(words, copy_len),
        )
        return split_key(words, copy_len), example

    def contained_prompts(self, example: Example) -> list[tuple[str, str, str]]:
        """The same list with every shorter valid repeat (``MIN_COPY <= j < m``): the prompt's prefixes that
        are themselves induction prompts, each with its own (query, answer) split key."""
        sequence = example.prompt.split(" ")
        copy_len = example.variables["copy_index"]
        words = sequence[: len(sequence) - copy_len]
        return [(split_key(words, j), render(words, j)[0], " " + words[j]) for j in range(MIN_COPY, copy_len)]
