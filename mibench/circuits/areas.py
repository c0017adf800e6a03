"""Faithfulness, CPR and CMD, and their bootstrap standard errors.

``f(C) = (m(C) - m(empty)) / (m(full) - m(empty))`` with ``m`` the mean logit difference over examples
(a ratio of dataset means, no clipping). CPR is the trapezoid area under ``f`` over the *linear*
fractions (first point 0.001, no point at 0); CMD the area of ``|1 - f|``. In closed form
``CPR = sum_i w_i f_i`` with ``w = (0.0005, 0.002, 0.004, 0.0075, 0.02, 0.04, 0.075, 0.2, 0.4, 0.25)``.

MIB reports no uncertainty. We bootstrap over examples (resampling the same example indices for every
circuit, so the curve's points stay paired) with a fixed seed, and report the standard deviation of
the replicates as the standard error.
"""

from __future__ import annotations

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
