"""Leaderboard "best": paired bootstrap over per-example files, the normal-approximation fallback, the no-op floor.

Per-example files here are synthetic, built so the truth is known; p-values are checked against oracles
computed directly with numpy (circuit: faithfulness areas from means; causal: accuracies per site).
"""

from __future__ import annotations

import csv
import io
from statistics import NormalDist

import numpy as np
import pytest

from mibench.circuits.areas import area_weights
from mibench.leaderboard import build_leaderboard, collect_leaderboard
from mibench.leaderboard import significance
from mibench.leaderboard.significance import NORMAL, PAIRED, PLAIN_MAX, TOP, UNTESTED, resample_indices
from mibench.results.causal_record import SiteRecord
from mibench.results.examples import publish_examples
from mibench.results.record import write_record
from tests.test_leaderboard import FRACTIONS, make_causal_record, make_record, save, save_causal

N = 500  # make_record's n_examples
rng = np.random.default_rng(1234)
FULL = (2.0 + rng.normal(0, 0.5, N)).astype(np.float32)
EMPTY = (-1.0 + rng.normal(0, 0.5, N)).astype(np.float32)
LEVELS = np.array([0.0, 0.05, 0.1, 0.2, 0.3, 0.45, 0.6, 0.75, 0.9, 1.0])


def circuit_arrays(shift: np.ndarray | float = 0.0) -> dict[str, np.ndarray]:
    """Per-example values of a method whose circuits sit at LEVELS of the way from empty to full, plus ``shift``
    (per example) on every signed-ranking circuit below the whole model."""
    curve = EMPTY[None, :] + LEVELS[:, None] * (FULL - EMPTY)[None, :]
    signed = curve.copy()
    signed[:-1] += shift
    return {"full": FULL, "empty": EMPTY, "signed": signed.astype(np.float32),
            "absolute": curve.astype(np.float32)}


def oracle_cpr(arrays: dict[str, np.ndarray], index: np.ndarray | None = None) -> np.ndarray:
    """CPR straight from the definition: f_k = (mean m(C_k) - mean m(empty)) / (mean m(full) - mean m(empty))."""
    take = (lambda a: a.astype(np.float64).mean(-1)) if index is None else (
        lambda a: a.astype(np.float64)[..., index].mean(-1))
    full, empty, signed = take(arrays["full"]), take(arrays["empty"]), take(arrays["signed"])  # signed: [K, R?]
    f = (signed - empty) / (full - empty)
    return np.tensordot(area_weights(tuple(FRACTIONS)), f, axes=(0, 0))


def save_circuit(root, method: str, arrays: dict[str, np.ndarray] | None, *, stderr: float = 0.01,
                 data_hash: str | None = None, seed: int = 0, cpr: float | None = None):
    """A record whose CPR is its per-example file's (or ``cpr``), with the file beside it when ``arrays``."""
    record = make_record(method, cpr=float(oracle_cpr(arrays)) if cpr is None else cpr, stderr=stderr)
    if data_hash is not None:
        record.task.data_hash = data_hash
    record.seed = seed
    run = f"{method}_seed{seed}"
    path = save(root, record, run=run, plot=False)
    if arrays is not None:
        publish_examples(path.parent, record.artifacts, "circuit", record.task.data_hash, arrays)
        save(root, record, run=run, plot=False)  # rewrite the record with artifacts.examples
    return path


def _table(root):
    (table,) = collect_leaderboard(root).tables
    cpr, cmd = table.track.metrics
    return table, cpr, cmd, table.columns[0]


def test_identical_methods_are_both_best_and_a_clear_loser_is_not(tmp_path):
    root = tmp_path / "records"
    save_circuit(root, "a", circuit_arrays())
    save_circuit(root, "b", circuit_arrays())
    save_circuit(root, "loser", circuit_arrays(shift=-1.0))
    table, cpr, _, column = _table(root)
    assert table.best(cpr, column) == {"a", "b"}
    assert table.verdict(cpr, column, "a").test == TOP and table.verdict(cpr, column, "b").test == TOP
    loser = table.verdict(cpr, column, "loser")
    assert loser.test == PAIRED and loser.p_value == 0.0 and not loser.best


def test_a_gap_within_noise_bolds_both_where_the_plain_maximum_bolded_one(tmp_path):
    root = tmp_path / "records"
    noise = rng.normal(0, 1.0, N)
    noise -= noise.mean() + 0.001  # a little worse on average, by far less than its spread
    top, close = circuit_arrays(), circuit_arrays(shift=noise)
    save_circuit(root, "top", top)
    save_circuit(root, "close", close)
    table, cpr, _, column = _table(root)
    values = {m: table.cell(m, column).values["CPR"][0] for m in ("top", "close")}
    assert values["close"] < values["top"]  # the old rule (the largest mean) bolded "top" alone
    verdict = table.verdict(cpr, column, "close")
    assert verdict.test == PAIRED and verdict.best and table.best(cpr, column) == {"top", "close"}
    # the p-value is the share of resamples in which "top" is not better, by the definition of CPR
    index = resample_indices(column.key, N)
    expected = np.mean(~(oracle_cpr(top, index) - oracle_cpr(close, index) > significance.TIE))
    assert verdict.p_value == pytest.approx(expected, abs=1e-12) and verdict.p_value > 0.2


def test_pairing_detects_a_consistent_gap_that_the_standard_errors_hide(tmp_path):
    """A method worse by the same small amount on every example: each alone has a wide error bar, so an
    unpaired comparison calls it a tie, but the paired differences leave no doubt."""
    root = tmp_path / "records"
    save_circuit(root, "top", circuit_arrays(), stderr=0.05)
    save_circuit(root, "shifted", circuit_arrays(shift=-0.02), stderr=0.05)
    save_circuit(root, "shifted-no-file", None, stderr=0.05, cpr=float(oracle_cpr(circuit_arrays(shift=-0.02))))
    table, cpr, _, column = _table(root)
    paired, unpaired = table.verdict(cpr, column, "shifted"), table.verdict(cpr, column, "shifted-no-file")
    assert paired.test == PAIRED and paired.p_value == 0.0 and not paired.best
    gap = table.cell("top", column).values["CPR"][0] - table.cell("shifted-no-file", column).values["CPR"][0]
    assert unpaired.test == NORMAL and unpaired.best
    assert unpaired.p_value == pytest.approx(1 - NormalDist().cdf(gap / np.hypot(0.05, 0.05)), abs=1e-12)


def test_cells_without_a_usable_file_fall_back_and_the_tables_say_which(tmp_path):
    root = tmp_path / "records"
    save_circuit(root, "top", circuit_arrays(), stderr=0.01)
    save_circuit(root, "old", None, stderr=0.01, cpr=float(oracle_cpr(circuit_arrays())) - 0.005)
    save_circuit(root, "other-data", circuit_arrays(shift=-0.1), data_hash="sha256:other")
    broken = save_circuit(root, "broken", circuit_arrays(shift=-0.05))
    (broken.parent / "examples.safetensors").write_bytes(b"not a safetensors file")
    save_circuit(root, "no-error", None, stderr=None, cpr=0.1)
    table, cpr, cmd, column = _table(root)
    tests = {m: table.verdict(cpr, column, m).test for m in table.methods}
    assert tests == {"top": TOP, "old": NORMAL, "other-data": NORMAL, "broken": NORMAL, "no-error": UNTESTED}
    assert table.verdict(cpr, column, "old").best  # 0.005 apart with errors of 0.01: not significantly worse
    assert not table.verdict(cpr, column, "no-error").best

    out = tmp_path / "site"
    build_leaderboard(root, out)
    markdown = (out / "leaderboard.md").read_text()
    top_value = table.cell("top", column).values["CPR"][0]
    assert f"| top | invariant | **{top_value:.3f} ± 0.010** |" in markdown  # the top is never marked
    assert f"| old | invariant | **{top_value - 0.005:.3f} ± 0.010 §** |" in markdown
    assert "§: no usable per-example file" in markdown and "paired bootstrap" in markdown
    assert r"\S{}" in (out / "leaderboard.tex").read_text()
    assert "§: no usable per-example file" in (out / "index.html").read_text()
    rows = list(csv.DictReader(io.StringIO((out / "leaderboard.csv").read_text())))
    by_method = {r["method"]: r for r in rows if r["metric"] == "CPR"}
    assert by_method["old"]["test"] == NORMAL and by_method["old"]["best"] == "true"
    assert float(by_method["old"]["p_value"]) == table.verdict(cpr, column, "old").p_value
    assert by_method["top"]["test"] == TOP and by_method["top"]["p_value"] == ""


def test_builds_are_byte_identical(tmp_path):
    root = tmp_path / "records"
    noise = rng.normal(0, 0.5, N)
    save_circuit(root, "a", circuit_arrays())
    save_circuit(root, "b", circuit_arrays(shift=noise - noise.mean() - 0.01))
    first = build_leaderboard(root, tmp_path / "one")
    second = build_leaderboard(root, tmp_path / "two")
    for name in ("leaderboard.md", "leaderboard.tex", "leaderboard.csv", "index.html"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()
    table = first.leaderboard.tables[0]
    cpr, column = table.track.metrics[0], table.columns[0]
    assert table.verdict(cpr, column, "b") == second.leaderboard.tables[0].verdict(cpr, column, "b")
    assert np.array_equal(resample_indices(column.key, N), resample_indices(column.key, N))
    assert not np.array_equal(resample_indices(column.key, N), resample_indices(column.key + "x", N))


def test_resamples_keep_each_stratum_to_its_own_examples():
    strata = np.array([0] * 30 + [1] * 50 + [2] * 20, dtype=np.uint8)
    indices = resample_indices("key", 100, strata, resamples=300)
    assert indices.shape == (300, 100)
    assert np.array_equal(strata[indices], np.broadcast_to(strata, indices.shape))
    assert len(np.unique(indices[:, :30])) == 30  # the draws cover the stratum


# ------------------------------------------------------------------------------------------ causal track
KINDS = ["answerPosition", "randomLetter", "answerPosition_randomLetter"]  # MCQA's counterfactual kinds
PAIRS = dict(zip(KINDS, (60, 40, 50)))  # the pairs of each kind, one after another


def save_causal_with_examples(root, method: str, correct: np.ndarray | None, *, seed: int = 0,
                              noop: float | None = None, best: float | None = None):
    """A two-layer causal record (one site per layer) with its per-pair correctness beside it."""
    record = make_causal_record(method)
    record.task.test_pairs = dict(PAIRS)
    record.seed = seed
    record.sites = [SiteRecord(layer=layer, role="END", iia=0.5, iia_by_kind={k: 0.5 for k in KINDS},
                               n_features=192, n_selected=192, seconds=1.0) for layer in (0, 1)]
    if correct is not None:
        values = _causal_oracle(correct)
        record.metrics.best, record.metrics.average = float(values[0]), float(values[1])
    if best is not None:
        record.metrics.best = best
    record.metrics.noop_iia = noop
    folder = root / record.task.id / record.model.id / f"causal_{record.task.variable}_{method}_test_seed{seed}"
    folder.mkdir(parents=True)
    if correct is not None:
        kind = np.repeat(np.arange(len(KINDS), dtype=np.uint8), list(PAIRS.values()))
        publish_examples(folder, record.artifacts, "causal", record.task.data_hash,
                         {"correct": correct, "kind": kind}, kinds=KINDS)
    write_record(record, folder / "record.json")


def _causal_oracle(correct: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
    """(IIA best, IIA average) by definition: per site the mean over kinds of the per-kind accuracy."""
    index = np.arange(correct.shape[1])[None, :] if index is None else index
    bounds = np.cumsum([0, *PAIRS.values()])
    per_kind = [correct[:, index[:, a:b]].astype(np.float64).mean(-1) for a, b in zip(bounds[:-1], bounds[1:])]
    per_site = np.mean(per_kind, axis=0)  # [sites, R]
    return np.stack([per_site.max(0), per_site.mean(0)]).squeeze()


def test_causal_cells_are_compared_pairwise_and_folded_seeds_use_the_mean_over_seeds(tmp_path, monkeypatch):
    monkeypatch.setattr(significance, "RESAMPLES", 300)  # each causal resample is one call of the scorer
    root = tmp_path / "records"
    generator = np.random.default_rng(7)
    n = sum(PAIRS.values())
    top = (generator.random((2, n)) < 0.8).astype(np.uint8)
    seeds = [(generator.random((2, n)) < p).astype(np.uint8) for p in (0.75, 0.78)]
    save_causal_with_examples(root, "top", top)
    for seed, correct in enumerate(seeds):
        save_causal_with_examples(root, "seeded", correct, seed=seed)
    (table,) = collect_leaderboard(root).tables
    column = table.columns[0]
    assert table.cell("seeded", column).seeds == (0, 1)
    kind = np.repeat(np.arange(len(KINDS)), list(PAIRS.values()))
    index = resample_indices(column.key, n, kind)
    resampled = {"top": _causal_oracle(top, index),  # [best, average] x resamples
                 "seeded": np.mean([_causal_oracle(c, index) for c in seeds], axis=0)}
    means = {"top": _causal_oracle(top), "seeded": np.mean([_causal_oracle(c) for c in seeds], axis=0)}
    metrics = {m.name: m for m in table.track.metrics}
    for row, name in enumerate(("IIA best", "IIA average")):
        leader, other = sorted(means, key=lambda m: -means[m][row])
        assert table.verdict(metrics[name], column, leader).test == TOP
        verdict = table.verdict(metrics[name], column, other)
        expected = np.mean(~(resampled[leader][row] - resampled[other][row] > significance.TIE))
        assert verdict.test == PAIRED and verdict.p_value == pytest.approx(expected, abs=1e-12)
        assert 0.0 < verdict.p_value < 1.0  # a real contest, not a certainty either way


def test_the_no_op_floor_is_an_italic_row_never_bold_with_a_range_when_records_disagree(tmp_path, monkeypatch):
    monkeypatch.setattr(significance, "RESAMPLES", 50)
    root = tmp_path / "records"
    save_causal_with_examples(root, "das", None, noop=1 / 3, best=0.9)
    save_causal_with_examples(root, "full-vector", None, noop=1 / 3, best=0.2)
    save_causal(root, make_causal_record("das", variable="answer", best=0.7))  # a column without a floor
    board = build_leaderboard(root, tmp_path / "site").leaderboard
    (table,) = board.tables
    pointer = next(c for c in table.columns if "answer_pointer" in c.task)
    answer = next(c for c in table.columns if c is not pointer)
    assert table.floor(pointer) == (1 / 3, 1 / 3) and table.floor(answer) is None
    for metric in table.track.metrics:  # the floor is not a method: no cell, no verdict, never best
        assert all("no-op (floor)" not in table.best(metric, c) and table.verdict(metric, c, "no-op (floor)") is None
                   for c in table.columns)
    markdown = (tmp_path / "site" / "leaderboard.md").read_text()
    assert markdown.count("| *no-op (floor)* |") == 2  # one per metric table
    floor_row = next(line for line in markdown.splitlines() if line.startswith("| *no-op (floor)* |"))
    assert "*0.333*" in floor_row and "**" not in floor_row
    assert "never bold and never ranked" in markdown
    assert r"\textit{no-op (floor)}" in (tmp_path / "site" / "leaderboard.tex").read_text()
    html = (tmp_path / "site" / "index.html").read_text()
    assert '<tfoot><tr class="floor"><td><em>no-op (floor)</em></td>' in html
    rows = list(csv.DictReader(io.StringIO((tmp_path / "site" / "leaderboard.csv").read_text())))
    floors = [r for r in rows if r["method"] == "no-op (floor)"]
    assert {(r["metric"], r["test"], r["best"]) for r in floors} == {("IIA best", "floor", "false"),
                                                                     ("IIA average", "floor", "false")}

    save_causal_with_examples(root, "pca", None, noop=0.35, best=0.3)  # the column's records disagree
    build_leaderboard(root, tmp_path / "site")
    markdown = (tmp_path / "site" / "leaderboard.md").read_text()
    assert "*0.333–0.350*" in markdown and "disagree on it" in markdown


def test_auroc_tables_keep_the_plain_maximum_and_say_so(tmp_path):
    from mibench.results.record import GroundTruthRecord

    root = tmp_path / "records"
    for method, auroc in (("a", 0.9), ("b", 0.89)):
        record = make_record(method, model="planted-ioi")
        record.metrics.ground_truth = GroundTruthRecord(file="ground_truth/ioi.json", n_true=10, n_edges=100,
                                                        auroc=auroc, fpr=[0.0, 1.0], tpr=[0.0, 1.0], auroc_full=auroc,
                                                        curve_fpr=[0, 1], curve_tpr=[0, 1])
        save(root, record)
    board = build_leaderboard(root, tmp_path / "site").leaderboard
    auroc_table = next(t for t in board.tables if t.track.name == "ground_truth")
    metric, column = auroc_table.track.metrics[0], auroc_table.columns[0]
    assert auroc_table.best(metric, column) == {"a"}
    assert auroc_table.verdict(metric, column, "b").test == PLAIN_MAX
    assert "the plain maximum: these records have no per-example values" in (
        tmp_path / "site" / "leaderboard.md").read_text()
