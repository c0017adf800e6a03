"""Faithfulness, CPR and CMD, and their bootstrap standard errors.

``f(C) = (m(C) - m(empty)) / (m(full) - m(empty))`` with ``m`` the mean logit difference over examples
(a ratio of dataset means, no clipping). CPR is the trapezoid area under ``f`` over the *linear*
fractions (first point 0.001, no point at 0); CMD the area of ``|1 - f|``. In closed form
``CPR = sum_i w_i f_i`` with ``w = (0.0005, 0.002, 0.004, 0.0075, 0.02, 0.04, 0.075, 0.2, 0.4, 0.25)``.

MIB reports no uncertainty. We bootstrap over examples (resampling the same example indices for every
circuit, so the curve's points stay paired) with a fixed seed, and report the standard deviation of
the replicates as the standard error.

:func:`metrics_from_means` is the one place the curves, CPR and CMD are computed from mean metric values:
the scorer's point estimates and bootstrap replicates go through it, and so does
:func:`circuit_metrics_from_examples`, which recomputes a record from its per-example sidecar (optionally on
resampled example indices, as the leaderboard's paired bootstrap does).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from mibench.circuits.selection import FRACTIONS


def area_weights(fractions: tuple[float, ...] = FRACTIONS) -> np.ndarray:
    """Weights ``w`` with ``trapezoid(y, x=fractions) == w @ y``."""
    x = np.asarray(fractions, dtype=np.float64)
    w = np.zeros_like(x)
    gaps = np.diff(x)
    w[:-1] += gaps / 2
    w[1:] += gaps / 2
    return w


def faithfulness(circuit_means: np.ndarray, full_mean: np.ndarray | float, empty_mean: np.ndarray | float) -> np.ndarray:
    """``f`` per circuit (last axis) -- works on bootstrap replicates (leading axes) too."""
    full = np.asarray(full_mean)[..., None]
    empty = np.asarray(empty_mean)[..., None]
    return (circuit_means - empty) / (full - empty)


def cpr(f: np.ndarray, fractions: tuple[float, ...] = FRACTIONS) -> np.ndarray:
    return f @ area_weights(fractions)


def cmd(f: np.ndarray, fractions: tuple[float, ...] = FRACTIONS) -> np.ndarray:
    return np.abs(1.0 - f) @ area_weights(fractions)


def bootstrap_replicate_means(per_example: np.ndarray, n_replicates: int, seed: int) -> np.ndarray:
    """Means of ``per_example`` (``[..., n_examples]``) over ``n_replicates`` resamples: ``[R, ...]``."""
    n = per_example.shape[-1]
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n, np.full(n, 1.0 / n), size=n_replicates).astype(np.float64)  # [R, n]
    return np.einsum("rn,...n->r...", counts, per_example) / n


@dataclass(frozen=True)
class CircuitMetricValues:
    """Curves and areas from mean metric values; leading axes (bootstrap replicates) are kept throughout."""

    full: np.ndarray  # mean m(full) [...]
    empty: np.ndarray  # mean m(empty) [...]
    signed_means: np.ndarray  # mean m(C_k), signed ranking [..., K]
    absolute_means: np.ndarray  # mean m(C_k), absolute ranking [..., K]
    signed: np.ndarray  # faithfulness of the signed ranking [..., K]
    absolute: np.ndarray  # faithfulness of the absolute ranking [..., K]
    cpr: np.ndarray  # [...]
    cmd: np.ndarray  # [...]
    baseline_means: np.ndarray | None = None  # [..., K]
    baseline: np.ndarray | None = None  # faithfulness of the baseline [..., K]


def metrics_from_means(signed_means: np.ndarray, absolute_means: np.ndarray, full_mean: np.ndarray | float,
                       empty_mean: np.ndarray | float, *, baseline_means: np.ndarray | None = None,
                       fractions: tuple[float, ...] = FRACTIONS) -> CircuitMetricValues:
    """Faithfulness curves, CPR (signed curve) and CMD (absolute curve) from mean metric values."""
    full, empty = np.asarray(full_mean), np.asarray(empty_mean)
    signed = faithfulness(np.asarray(signed_means), full, empty)
    absolute = faithfulness(np.asarray(absolute_means), full, empty)
    baseline = None if baseline_means is None else faithfulness(np.asarray(baseline_means), full, empty)
    return CircuitMetricValues(full=full, empty=empty, signed_means=np.asarray(signed_means),
                               absolute_means=np.asarray(absolute_means), signed=signed, absolute=absolute,
                               cpr=cpr(signed, fractions), cmd=cmd(absolute, fractions),
                               baseline_means=None if baseline_means is None else np.asarray(baseline_means),
                               baseline=baseline)


def circuit_metrics_from_examples(arrays: Mapping[str, np.ndarray], fractions: tuple[float, ...] = FRACTIONS,
                                  index: np.ndarray | None = None) -> CircuitMetricValues:
    """A circuit record's metrics from its per-example values (the ``examples.safetensors`` sidecar).

    ``arrays`` holds ``full`` and ``empty`` ``[n]``, ``signed`` and ``absolute`` (and optionally ``baseline``)
    ``[K, n]``. ``index`` picks the examples to average over: ``None`` (all of them: the record's numbers),
    ``[m]`` (one resample) or ``[R, m]`` (R resamples at once; every result then has a leading ``R`` axis).
    The same indices are used for every curve point and for ``full``/``empty``, so the curve stays paired.
    """

    picks = None if index is None else np.asarray(index)
    counts = None
    if picks is not None and picks.ndim == 2:  # how often each example is drawn, per resample: [R, n]
        n = np.asarray(arrays["full"]).shape[-1]
        counts = np.stack([np.bincount(row, minlength=n) for row in picks]).astype(np.float64)

    def mean(name: str) -> np.ndarray:
        values = np.asarray(arrays[name], dtype=np.float64)
        if picks is None:
            return values.mean(axis=-1)
        if counts is None:
            return np.take(values, picks, axis=-1).mean(axis=-1)
        means = values @ counts.T / picks.shape[-1]  # [K?, R]
        return means.T  # resamples first, curve points last

    baseline = mean("baseline") if "baseline" in arrays else None
    return metrics_from_means(mean("signed"), mean("absolute"), mean("full"), mean("empty"),
                              baseline_means=baseline, fractions=fractions)
