"""Per-example files beside results records (``examples.safetensors``), as the leaderboard's paired bootstrap
reads them.

A record that lists ``artifacts["examples"]`` keeps the per-example values its aggregates are computed from
(format ``mibench-examples/1``, written by the runs). The leaderboard resamples the same example indices for
every method of a column and recomputes each method's metrics on them with the scorers' own functions (each
track's ``resample``, see :mod:`mibench.leaderboard.tracks`); nothing here computes a metric. A file that
cannot be used -- missing, malformed, of another track, or for other data than its record says -- is not an
error: the cell is compared by a normal approximation instead (see :mod:`mibench.leaderboard.significance`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mibench.errors import MibenchError
from mibench.results.examples import ARTIFACT_KEY as EXAMPLES_ARTIFACT
from mibench.results.examples import record_examples

__all__ = ["EXAMPLES_ARTIFACT", "ExampleSource", "Examples", "Resampler", "load_examples"]


@dataclass(frozen=True)
class ExampleSource:
    """A record that lists a per-example file, and the folder it was read from (the file lies beside it)."""

    record: Any  # the validated CircuitRecord or CausalRecord: recomputing its metrics needs its fields
    folder: Path


@dataclass(frozen=True)
class Examples:
    """A usable per-example file: ``n`` examples (or pairs) of the data named by ``data_hash``."""

    source: ExampleSource
    data_hash: str
    n: int
    arrays: Mapping[str, np.ndarray]

    @property
    def strata(self) -> np.ndarray | None:
        """Groups to resample within: causal pairs by counterfactual kind (a site's IIA is the unweighted mean
        over kinds, so a resample keeps each kind's size); None: resample all examples together."""
        return self.arrays.get("kind")

    def same_data(self, other: Examples) -> bool:
        """Whether the two files hold values for the same examples, in the same order (so they can be paired)."""
        if (self.data_hash, self.n) != (other.data_hash, other.n):
            return False
        mine, theirs = self.strata, other.strata
        return (mine is None) == (theirs is None) and (mine is None or np.array_equal(mine, theirs))


#: recompute a record's metrics on resampled example indices ``[R, n]``: metric name -> ``[R]`` values
Resampler = Callable[[Examples, np.ndarray], dict[str, np.ndarray]]


def load_examples(source: ExampleSource) -> Examples | None:
    """The file's arrays if it is readable and belongs to its record (track, data hash, number of examples,
    sizes or sites: :func:`mibench.results.examples.record_examples`); else None."""
    try:
        found = record_examples(source.record, source.folder)
    except (MibenchError, OSError):
        return None
    if found is None:
        return None
    metadata, arrays = found
    n = int(metadata["n"])
    return Examples(source=source, data_hash=metadata["data_hash"], n=n, arrays=arrays) if n > 0 else None
