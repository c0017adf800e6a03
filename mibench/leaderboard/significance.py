"""Which methods of a column are "best": the top mean and every method not significantly worse than it.

A largest mean alone says little when the next method is within its error, so each column (one comparability
key) is ranked by a test:

* the **top** is the method with the best mean (all of them on an exact tie); it is always best;
* every other method whose records have usable per-example files for the same data as the top's (same
  ``data_hash`` and ``n``) is compared with the top by a **paired bootstrap** of the metric difference:
  :data:`RESAMPLES` resamples of example indices, drawn once per column from a seed derived from the column
  key (so a rebuild gives the same bytes), the same indices for every method; each resample's metric is
  recomputed by the track's own function, and a cell folded from several seeds takes the mean over its seeds
  of each resample's metric. The one-sided p-value of "the top is better" is the share of resamples in which
  the top is not better (a tie within :data:`TIE`, or a resample where either value is undefined, counts as
  not better);
* a cell without a usable file (older or external records, a file for other data) -- or any cell when the
  top has none -- is compared by a **normal approximation** with the two bootstrap standard errors,
  unpaired: ``p = 1 - Phi(d / sqrt(se_top^2 + se^2))``; a cell with no standard error cannot be tested and is
  best only on a tie;
* a method is best when ``p >= ALPHA``: not significantly worse than the top at 5 %.

A track without per-example data (AUROC against known circuits) keeps the plain maximum.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from mibench.leaderboard.per_example import Examples, load_examples
from mibench.leaderboard.tracks import Entry, Metric, Track

#: bootstrap resamples of the example indices per column
RESAMPLES = 2000
#: a method is best unless the top is better than it at this one-sided significance level
ALPHA = 0.05
#: a resampled difference within this of zero is a tie (the recomputation may run in float32: IIA, say, is a
#: mean of 0/1 values, and two equal means can come back 1e-8 apart)
TIE = 1e-6
#: resamples recomputed at a time (bounds the memory of one [rows, n] index block per recomputation)
_CHUNK = 250

TOP, PAIRED, NORMAL, UNTESTED, PLAIN_MAX = "top", "paired bootstrap", "normal approximation", "untested", "max"


@dataclass(frozen=True)
class Verdict:
    """How one cell was compared with its column's top, and whether it is marked best."""

    test: str  # TOP, PAIRED, NORMAL, UNTESTED (no error to test with), or PLAIN_MAX (track without a test)
    p_value: float | None  # one-sided p of "the top is better than this cell"; None for the top and untested cells
    best: bool

    @property
    def fallback(self) -> bool:
        """Compared without per-example data (the tables mark such cells)."""
        return self.test in (NORMAL, UNTESTED)


def column_seed(column_key: str) -> int:
    """The resampling seed of a column: a function of its comparability key only."""
    return int.from_bytes(hashlib.sha256(column_key.encode("utf-8")).digest()[:8], "little")


def resample_indices(column_key: str, n: int, strata: np.ndarray | None = None,
                     resamples: int | None = None) -> np.ndarray:
    """``[resamples, n]`` example indices drawn with replacement (default :data:`RESAMPLES` rows), the same for
    every method of the column; with ``strata`` (``[n]`` group labels) each position is drawn from the
    examples of its own group."""
    resamples = RESAMPLES if resamples is None else resamples
    rng = np.random.default_rng(column_seed(column_key))
    if strata is None:
        return rng.integers(0, n, size=(resamples, n))
    indices = np.empty((resamples, n), dtype=np.int64)
    for label in np.unique(strata):
        positions = np.flatnonzero(strata == label)
        indices[:, positions] = positions[rng.integers(0, len(positions), size=(resamples, len(positions)))]
    return indices


def _usable(entry: Entry) -> list[Examples] | None:
    """The cell's per-example files, one per seed, if every one is usable and all are for the same data."""
    if not entry.examples:
        return None
    loaded = [load_examples(source) for source in entry.examples]
    if any(x is None for x in loaded) or not all(loaded[0].same_data(x) for x in loaded[1:]):
        return None
    return loaded


class _ColumnSamples:
    """Each method's metrics on the column's resamples, computed on first use and kept for the other metrics."""

    def __init__(self, track: Track, column_key: str, files: Mapping[str, list[Examples]]):
        self._track, self._key, self._files = track, column_key, files
        self._indices: list[tuple[Examples, np.ndarray]] = []
        self._values: dict[str, dict[str, np.ndarray]] = {}

    def has_files(self, method: str) -> bool:
        return method in self._files

    def paired(self, top: str, method: str) -> bool:
        """Whether both cells have usable files for the same examples."""
        mine, theirs = self._files.get(top), self._files.get(method)
        return mine is not None and theirs is not None and mine[0].same_data(theirs[0])

    def _indices_for(self, examples: Examples) -> np.ndarray:
        """The column's resample indices for this data (drawn once; normally a column holds one dataset)."""
        for seen, indices in self._indices:
            if seen.same_data(examples):
                return indices
        indices = resample_indices(self._key, examples.n, examples.strata)
        self._indices.append((examples, indices))
        return indices

    def values(self, method: str, metric: Metric) -> np.ndarray:
        if method not in self._values:
            files = self._files[method]
            indices = self._indices_for(files[0])
            per_seed = []
            for examples in files:
                chunks = [self._track.resample(examples, indices[i:i + _CHUNK])
                          for i in range(0, len(indices), _CHUNK)]
                per_seed.append({name: np.concatenate([np.asarray(c[name], dtype=np.float64) for c in chunks])
                                 for name in chunks[0]})
            self._values[method] = {name: np.mean([s[name] for s in per_seed], axis=0) for name in per_seed[0]}
        return self._values[method][metric.name]


def _normal_p(top: tuple[float, float | None], other: tuple[float, float | None], sign: float) -> float | None:
    """One-sided p of "top better than other" from the two means and standard errors (unpaired)."""
    (top_value, top_error), (value, error) = top, other
    if top_error is None or error is None:
        return None
    scale = math.hypot(top_error, error)
    difference = sign * (top_value - value)
    if scale == 0:
        return 1.0 if difference <= 0 else 0.0
    return 0.5 * math.erfc(difference / scale / math.sqrt(2))


def _rank_metric(track: Track, metric: Metric, cells: Mapping[str, Entry],
                samples: _ColumnSamples | None) -> dict[str, Verdict]:
    """The verdict of every cell with a finite value of ``metric`` (cells: method -> entry of one column)."""
    values = {m: e.values[metric.name][0] for m, e in cells.items() if math.isfinite(e.values[metric.name][0])}
    if not values:
        return {}
    target = max(values.values()) if metric.higher_is_better else min(values.values())
    tops = sorted(m for m, v in values.items() if v == target)
    if track.resample is None or samples is None:
        return {m: Verdict(PLAIN_MAX, None, m in tops) for m in values}
    top = next((m for m in tops if samples.has_files(m)), tops[0])  # on a tie, a top with per-example values
    sign = 1.0 if metric.higher_is_better else -1.0
    verdicts = {m: Verdict(TOP, None, True) for m in tops}
    for method in sorted(values.keys() - set(tops)):
        if samples.paired(top, method):
            difference = sign * (samples.values(top, metric) - samples.values(method, metric))
            p = float(np.count_nonzero(~(difference > TIE))) / len(difference)  # NaN counts as not better
            verdicts[method] = Verdict(PAIRED, p, p >= ALPHA)
            continue
        p = _normal_p(cells[top].values[metric.name], cells[method].values[metric.name], sign)
        verdicts[method] = Verdict(UNTESTED, None, False) if p is None else Verdict(NORMAL, p, p >= ALPHA)
    return verdicts


def rank_column(track: Track, column_key: str, cells: Mapping[str, Entry]) -> dict[str, dict[str, Verdict]]:
    """Every metric's verdicts in one column: metric name -> method -> verdict."""
    samples = None
    if track.resample is not None:
        files = {m: loaded for m, e in cells.items() if (loaded := _usable(e)) is not None}
        samples = _ColumnSamples(track, column_key, files)
    return {metric.name: _rank_metric(track, metric, cells, samples) for metric in track.metrics}
