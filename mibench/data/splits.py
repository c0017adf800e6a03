"""Deterministic, disjoint splits for procedurally generated tasks.

Every example has a *split key*: the part of it that must not be shared across splits (an unordered name
pair, an operand pair, a template, ...). The key is hashed with the task id into one of four disjoint
partitions, so a model cannot pass a test split by memorising keys it saw in training:

    train 70% | validation 10% | test 10% | private_test 10%

Public splits are sampled with fixed seeds. ``private_test`` is sampled only with a seed supplied at run
time through ``MIBENCH_PRIVATE_SEED``. Its *membership* is not secret: the partition hash has no key, so
anyone can enumerate the held-out keys and train on all of them. The secret seed hides which examples of
that partition are drawn and how they are built, which guards against tuning to a known sample and against
accidental leakage, not against deliberate training on the partition. A keyed hash would hide membership
only by re-partitioning every key, which changes the public splits (and every score), so it is not used.
"""

from __future__ import annotations

import hashlib
import os

SPLITS = ("train", "validation", "test", "private_test")
_BOUNDS = {"train": (0, 700), "validation": (700, 800), "test": (800, 900), "private_test": (900, 1000)}
_PUBLIC_SEEDS = {"train": 0, "validation": 1, "test": 2}
PRIVATE_SEED_ENV = "MIBENCH_PRIVATE_SEED"


def partition_of(task_id: str, key: str) -> str:
    """The split a key belongs to (stable across Python versions and platforms)."""
    digest = hashlib.sha256(f"{task_id}\x00{key}".encode()).digest()
    bucket = int.from_bytes(digest[:8], "big") % 1000
    for split, (low, high) in _BOUNDS.items():
        if low <= bucket < high:
            return split
    raise AssertionError("unreachable")


def check_split(split: str) -> str:
    if split not in SPLITS:
        import difflib

        close = difflib.get_close_matches(split, SPLITS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown split {split!r}{hint} (splits: {', '.join(SPLITS)})")
    return split


def sampling_seed(split: str, seed: int | None = None) -> int:
    """The seed a split is sampled with: fixed for public splits, from the environment for private_test."""
    check_split(split)
    if split != "private_test":
        return _PUBLIC_SEEDS[split] if seed is None else seed
    value = os.environ.get(PRIVATE_SEED_ENV)
    if value is None:
        raise RuntimeError(
            f"the private_test split is generated only from a secret seed: set {PRIVATE_SEED_ENV} to an integer"
        )
    try:
        return int(value)
    except ValueError:
        raise RuntimeError(f"{PRIVATE_SEED_ENV} must be an integer, got {value!r}") from None
