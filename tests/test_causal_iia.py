"""IIA aggregation (MIB's rule) computed by hand, and its bootstrap standard errors."""

from __future__ import annotations

import math

import pytest
import torch

from mibench.causal.iia import SiteResult, aggregate


def _site(layer: int, role: str, **kinds: list[int]) -> SiteResult:
    return SiteResult(layer, role, {kind: torch.tensor(values, dtype=torch.bool) for kind, values in kinds.items()})


def test_average_and_best_by_hand():
    results = [
        _site(0, "a", x=[1, 0, 0, 0], y=[1, 1]),  # (0.25 + 1.0) / 2 = 0.625
        _site(0, "b", x=[1, 1, 0, 0], y=[0, 0]),  # 0.25
        _site(1, "a", x=[1, 1, 1, 1], y=[0, 1]),  # 0.75
        _site(1, "b", x=[1, 1, 1, 0], y=[1, 1]),  # 0.875
        _site(2, "a", x=[0, 0, 0, 0], y=[0, 0]),  # 0
        _site(2, "b", x=[0, 0, 0, 1], y=[0, 0]),  # 0.125
    ]
    assert results[0].by_kind == {"x": 0.25, "y": 1.0} and results[0].accuracy == 0.625
    summary = aggregate(results, [0, 1, 2], ["a", "b"], bootstrap=0)
    assert summary.per_layer == {0: 0.625, 1: 0.875, 2: 0.125}
    assert summary.best_role == {0: "a", 1: "b", 2: "b"}
    assert summary.average == pytest.approx((0.625 + 0.875 + 0.125) / 3)
    assert summary.best == 0.875 and summary.missing == []
    assert summary.average_stderr is None and summary.best_stderr is None  # no replicates asked for


def test_missing_sites_are_listed_and_a_missing_layer_leaves_no_average():
    results = [_site(0, "a", x=[1, 0]), _site(2, "b", x=[1, 1])]
    summary = aggregate(results, [0, 1, 2], ["a", "b"], bootstrap=50)
    assert summary.missing == [(0, "b"), (1, "a"), (1, "b"), (2, "a")]
    assert summary.per_layer == {0: 0.5, 2: 1.0}  # never filled with anything for the missing sites
    assert summary.average is None and summary.average_stderr is None and summary.best == 1.0
    # a chosen subset of a deeper model's layers has no average either, though nothing requested is missing
    chosen = aggregate(results, [0, 2], ["a"], n_layers=3, bootstrap=50)
    assert chosen.missing == [(2, "a")] and chosen.average is None and chosen.best == 1.0
    assert aggregate(results[:1], [0], ["a"], n_layers=1).average == 0.5


def test_bootstrap_error_of_one_site_is_the_standard_error_of_a_mean():
    g = torch.Generator().manual_seed(0)
    n = 400
    correct = torch.rand(n, generator=g) < 0.7
    summary = aggregate([SiteResult(0, "a", {"x": correct})], [0], ["a"], bootstrap=4000, seed=1)
    p = float(correct.float().mean())
    assert summary.best_stderr == pytest.approx(math.sqrt(p * (1 - p) / n), rel=0.08)
    assert summary.average_stderr == pytest.approx(summary.best_stderr)
    again = aggregate([SiteResult(0, "a", {"x": correct})], [0], ["a"], bootstrap=4000, seed=1)
    assert again.best_stderr == summary.best_stderr  # seeded


def test_bootstrap_resamples_the_same_pairs_at_every_site():
    """Replicates are paired across sites (one resample of the test pairs per replicate), so two sites with
    identical outcomes have a maximum exactly as variable as either one alone."""
    g = torch.Generator().manual_seed(3)
    outcome = torch.rand(200, generator=g) < 0.5
    twins = [SiteResult(0, "a", {"x": outcome}), SiteResult(0, "b", {"x": outcome.clone()})]
    assert aggregate(twins, [0], ["a", "b"], bootstrap=500).best_stderr == \
        aggregate(twins[:1], [0], ["a"], bootstrap=500).best_stderr
