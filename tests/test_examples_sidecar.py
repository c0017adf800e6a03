"""The per-example sidecar (``examples.safetensors``) beside every record.

Unit tests pin the file rules (round trip, every malformed case names the file and the field, reading a
pickle never runs it) and the recomputation functions against independent oracles (a hand-written trapezoid,
:func:`aggregate` on hand-built site results, the scorer's own bootstrap). End-to-end runs on the embedded
model prove that both tracks write the sidecar through the staging folder, list it in ``artifacts`` and
recompute the record's numbers; an interrupted run publishes neither the sidecar nor the record.
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from mibench.causal.iia import (
    SiteResult,
    aggregate,
    causal_metrics_from_examples,
    causal_metrics_resampled,
    per_pair_correct,
)
from mibench.circuits.areas import bootstrap_replicate_means, circuit_metrics_from_examples
from mibench.circuits.faithfulness import CircuitEvaluation
from mibench.circuits.scorer import summarise
from mibench.circuits.selection import FRACTIONS
from mibench.errors import MibenchError
from mibench.results.examples import (
    FILE_NAME,
    FORMAT,
    ExamplesFileError,
    read_examples,
    record_examples,
    write_examples,
)

K = len(FRACTIONS)


def _circuit_arrays(n: int = 7, seed: int = 0, baseline: bool = True) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    full = rng.normal(3.0, 1.0, n)
    empty = rng.normal(-1.0, 1.0, n)
    arrays = {"full": full, "empty": empty, "signed": rng.normal(1.0, 2.0, (K, n)),
              "absolute": rng.normal(1.5, 2.0, (K, n))}
    if baseline:
        arrays["baseline"] = rng.normal(0.0, 2.0, (K, n))
    return {name: value.astype(np.float32).astype(np.float64) for name, value in arrays.items()}


def _oracle_cpr_cmd(arrays, rows=None):
    """CPR / CMD written out from the definition: trapezoid over the linear fractions of the faithfulness."""
    pick = (lambda a: a) if rows is None else (lambda a: a[..., rows])
    full, empty = pick(arrays["full"]).mean(), pick(arrays["empty"]).mean()
    f_signed = (pick(arrays["signed"]).mean(-1) - empty) / (full - empty)
    f_absolute = (pick(arrays["absolute"]).mean(-1) - empty) / (full - empty)
    x = np.asarray(FRACTIONS)
    trapezoid = lambda y: float(np.sum((y[1:] + y[:-1]) / 2 * np.diff(x)))  # noqa: E731
    return trapezoid(f_signed), trapezoid(np.abs(1 - f_absolute))


# ============================================================================ file format
def test_circuit_sidecar_round_trip_is_float32_with_the_metadata(tmp_path):
    arrays = _circuit_arrays()
    path = write_examples(tmp_path / FILE_NAME, "circuit", "sha256:abc", arrays)
    metadata, read = read_examples(path)
    assert metadata == {"format": FORMAT, "track": "circuit", "data_hash": "sha256:abc", "n": "7"}
    assert set(read) == set(arrays) and all(v.dtype == np.float32 for v in read.values())
    for name, value in arrays.items():
        np.testing.assert_array_equal(read[name], value)  # exactly float32-representable: lossless
    assert [p.name for p in tmp_path.iterdir()] == [FILE_NAME]  # no temporary file left behind


def test_causal_sidecar_round_trip_keeps_kinds(tmp_path):
    correct = np.array([[1, 0, 1, 1], [0, 0, 1, 0]], dtype=np.uint8)
    kind = np.array([0, 0, 1, 1], dtype=np.uint8)
    write_examples(tmp_path / FILE_NAME, "causal", "h", {"correct": correct, "kind": kind}, kinds=["a", "b"])
    metadata, read = read_examples(tmp_path / FILE_NAME)
    assert metadata["n"] == "4" and json.loads(metadata["kinds"]) == ["a", "b"] and metadata["track"] == "causal"
    np.testing.assert_array_equal(read["correct"], correct)
    np.testing.assert_array_equal(read["kind"], kind)


def _save_raw(path: Path, tensors: dict, metadata: dict) -> Path:
    from safetensors.numpy import save_file

    save_file(tensors, str(path), metadata=metadata)
    return path


def _circuit_raw(**changes):
    tensors = {k: v.astype(np.float32) for k, v in _circuit_arrays(n=5, baseline=False).items()}
    metadata = {"format": FORMAT, "track": "circuit", "data_hash": "h", "n": "5"}
    for key, value in changes.items():
        target = metadata if key in metadata or key in ("kinds",) else tensors
        if value is None:
            target.pop(key)
        else:
            target[key] = value
    return tensors, metadata


@pytest.mark.parametrize("changes, field, words", [
    ({"format": "mibench-examples/0"}, "__metadata__.format", "expected 'mibench-examples/1'"),
    ({"track": "circuits"}, "__metadata__.track", "expected one of circuit, causal"),
    ({"n": "five"}, "__metadata__.n", "expected a count"),
    ({"data_hash": ""}, "__metadata__.data_hash", "missing"),
    ({"absolute": None}, "absolute", "missing"),
    ({"full": np.ones(4, dtype=np.float32)}, "full", "shape [4], expected [n] with n = 5"),
    ({"absolute": np.ones((K - 1, 5), dtype=np.float32)}, "absolute", "n_sizes = 10"),
    ({"baseline": np.ones(5, dtype=np.float32)}, "baseline", "expected [n_sizes, n]"),
    ({"empty": np.array([0, 1, np.nan, 0, 0], dtype=np.float32)}, "empty", "NaN or infinite"),
    ({"signed": np.full((K, 5), np.inf, dtype=np.float32)}, "signed", "NaN or infinite"),
    ({"full": np.ones(5, dtype=np.float64)}, "full", "expected float32"),
    ({"correct": np.ones((2, 5), dtype=np.uint8)}, "correct", "not a circuit-track tensor"),
])
def test_malformed_circuit_sidecars_name_the_file_and_field(tmp_path, changes, field, words):
    path = _save_raw(tmp_path / FILE_NAME, *_circuit_raw(**changes))
    with pytest.raises(ExamplesFileError) as caught:
        read_examples(path)
    assert caught.value.path == str(path) and caught.value.field == field and words in caught.value.message
    assert isinstance(caught.value, MibenchError) and str(path) in str(caught.value)


@pytest.mark.parametrize("tensors, metadata, field, words", [
    ({"correct": np.ones((2, 3), dtype=np.float32)}, {}, "correct", "expected uint8"),
    ({"correct": np.full((2, 3), 2, dtype=np.uint8)}, {}, "correct", "other than 0 and 1"),
    ({"correct": np.ones(3, dtype=np.uint8)}, {}, "correct", "expected [n_sites, n]"),
    ({"kind": np.zeros(3, dtype=np.uint8)}, {}, "correct", "missing"),
    ({"correct": np.ones((2, 3), dtype=np.uint8), "kind": np.array([0, 1, 2], dtype=np.uint8)},
     {"kinds": '["a", "b"]'}, "kind", "only 2 are named"),
    ({"correct": np.ones((2, 3), dtype=np.uint8), "kind": np.zeros(3, dtype=np.uint8)}, {}, "__metadata__.kinds",
     "JSON list"),
    ({"correct": np.ones((2, 3), dtype=np.uint8)}, {"kinds": '["a"]'}, "kind", "missing"),
])
def test_malformed_causal_sidecars_name_the_file_and_field(tmp_path, tensors, metadata, field, words):
    header = {"format": FORMAT, "track": "causal", "data_hash": "h", "n": "3", **metadata}
    path = _save_raw(tmp_path / FILE_NAME, tensors, header)
    with pytest.raises(ExamplesFileError) as caught:
        read_examples(path)
    assert caught.value.field == field and words in caught.value.message


class _Trap:
    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_a_pickle_or_garbage_under_the_sidecar_name_is_refused_and_never_run(tmp_path):
    trap = _Trap()
    trap.marker = str(tmp_path / "executed")
    path = tmp_path / FILE_NAME
    path.write_bytes(pickle.dumps(trap))
    with pytest.raises(ExamplesFileError, match="not a safetensors file") as caught:
        read_examples(path)
    assert caught.value.field is None and not (tmp_path / "executed").exists()
    good = write_examples(tmp_path / "good.safetensors", "circuit", "h", _circuit_arrays())
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-9])
    with pytest.raises(ExamplesFileError, match="not a safetensors file"):
        read_examples(truncated)
    with pytest.raises(ExamplesFileError, match="no such file"):
        read_examples(tmp_path / "absent.safetensors")


def test_the_writer_refuses_what_the_reader_would(tmp_path):
    arrays = _circuit_arrays()
    arrays["signed"][3, 2] = np.nan
    with pytest.raises(ExamplesFileError, match="signed"):
        write_examples(tmp_path / FILE_NAME, "circuit", "h", arrays)
    assert not list(tmp_path.iterdir())


def test_the_sidecar_must_belong_to_its_record(tmp_path):
    arrays = _circuit_arrays(n=4)
    write_examples(tmp_path / FILE_NAME, "circuit", "sha256:x", arrays)
    curve = SimpleNamespace(fractions=list(FRACTIONS))
    record = SimpleNamespace(track="circuit", artifacts={"examples": FILE_NAME},
                             task=SimpleNamespace(data_hash="sha256:x", n_examples=4),
                             metrics=SimpleNamespace(signed=curve, baseline=curve))
    metadata, read = record_examples(record, tmp_path)
    assert metadata["n"] == "4" and set(read) == set(arrays)
    assert record_examples(SimpleNamespace(artifacts={}), tmp_path) is None  # older / external records: valid
    for change, field in [({"data_hash": "sha256:y"}, "__metadata__.data_hash"), ({"n_examples": 5}, "__metadata__.n")]:
        other = SimpleNamespace(**{**vars(record), "task": SimpleNamespace(**{**vars(record.task), **change})})
        with pytest.raises(ExamplesFileError) as caught:
            record_examples(other, tmp_path)
        assert caught.value.field == field
    no_baseline = SimpleNamespace(**{**vars(record), "metrics": SimpleNamespace(signed=curve, baseline=None)})
    with pytest.raises(ExamplesFileError, match="without a baseline curve"):
        record_examples(no_baseline, tmp_path)
    with pytest.raises(ExamplesFileError, match="a causal-track record"):
        record_examples(SimpleNamespace(**{**vars(record), "track": "causal"}), tmp_path)
    causal = SimpleNamespace(track="causal", artifacts={"examples": "c.safetensors"}, sites=[1, 2],
                             task=SimpleNamespace(data_hash="h", test_pairs={"a": 2, "b": 1}, counterfactuals=["a", "b"]))
    write_examples(tmp_path / "c.safetensors", "causal", "h", {"correct": np.ones((2, 3)), "kind": [0, 0, 1]},
                   kinds=["a", "b"])
    assert record_examples(causal, tmp_path)[1]["correct"].shape == (2, 3)
    for change, field in [({"counterfactuals": ["b", "a"]}, "__metadata__.kinds"),
                          ({"test_pairs": {"a": 2, "b": 2}}, "__metadata__.n")]:
        other = SimpleNamespace(**{**vars(causal), "task": SimpleNamespace(**{**vars(causal.task), **change})})
        with pytest.raises(ExamplesFileError) as caught:
            record_examples(other, tmp_path)
        assert caught.value.field == field
    with pytest.raises(ExamplesFileError, match="3 sites"):
        record_examples(SimpleNamespace(**{**vars(causal), "sites": [1, 2, 3]}), tmp_path)
    with pytest.raises(ExamplesFileError, match="inside the record's folder"):
        record_examples(SimpleNamespace(**{**vars(record), "artifacts": {"examples": "../x.safetensors"}}), tmp_path)


# ============================================================================ recomputation
def test_circuit_metrics_from_examples_match_the_definition_and_resample_in_batches():
    arrays = _circuit_arrays(n=9, seed=3)
    values = circuit_metrics_from_examples(arrays)
    assert (float(values.cpr), float(values.cmd)) == pytest.approx(_oracle_cpr_cmd(arrays), abs=1e-12)
    rng = np.random.default_rng(1)
    index = rng.integers(0, 9, (5, 9))
    batched = circuit_metrics_from_examples(arrays, index=index)
    assert batched.cpr.shape == (5,) and batched.signed.shape == (5, K) and batched.baseline.shape == (5, K)
    for r in range(5):
        one = circuit_metrics_from_examples(arrays, index=index[r])
        assert float(one.cpr) == pytest.approx(_oracle_cpr_cmd(arrays, index[r])[0], abs=1e-12)
        assert float(batched.cmd[r]) == pytest.approx(float(one.cmd), abs=1e-12)
    every = circuit_metrics_from_examples(arrays, index=np.arange(9))
    assert float(every.cpr) == pytest.approx(float(values.cpr), abs=1e-12)


def test_the_scorer_reports_what_its_examples_recompute_and_its_bootstrap_is_the_same_function():
    arrays = _circuit_arrays(n=11, seed=5)
    evaluation = CircuitEvaluation(circuits=np.concatenate([arrays["signed"], arrays["absolute"], arrays["baseline"]]),
                                   full=arrays["full"], empty=arrays["empty"], example_ids=[str(i) for i in range(11)])
    circuits = [SimpleNamespace(weighted_edge_count=lambda: 1.0)] * K
    score = summarise(evaluation, level="edge", n_items=1000, cpr_circuits=("signed", circuits),
                      cmd_circuits=("absolute", circuits), baseline_circuits=(circuits, 1000), bootstrap=200, seed=4)
    again = circuit_metrics_from_examples(score.examples)
    assert score.cpr == float(again.cpr) and score.cmd == float(again.cmd)
    assert score.signed.faithfulness == again.signed.tolist() and score.baseline.faithfulness == again.baseline.tolist()
    # the bootstrap: the same multinomial resamples, written as index arrays, through the public function
    counts = np.random.default_rng(4).multinomial(11, np.full(11, 1 / 11), size=200)
    index = np.stack([np.repeat(np.arange(11), c) for c in counts])
    resampled = circuit_metrics_from_examples(score.examples, index=index)
    assert score.cpr_stderr == pytest.approx(float(np.std(resampled.cpr, ddof=1)), rel=1e-9)
    assert score.cmd_stderr == pytest.approx(float(np.std(resampled.cmd, ddof=1)), rel=1e-9)
    stacked = np.stack([arrays["full"]])
    assert bootstrap_replicate_means(stacked, 200, 4)[:, 0] == pytest.approx(resampled.full, rel=1e-12)


def _site_results() -> list[SiteResult]:
    generator = torch.Generator().manual_seed(0)
    out = []
    for layer in range(3):
        for role in ("a", "b"):
            out.append(SiteResult(layer, role, {"k1": torch.rand(6, generator=generator) > 0.4,
                                                "k2": torch.rand(4, generator=generator) > 0.6}))
    return out


def test_causal_metrics_from_examples_equal_aggregate_and_resample_within_the_layout():
    results = _site_results()
    correct, kind, kinds = per_pair_correct(results)
    assert correct.shape == (6, 10) and correct.dtype == np.uint8 and kinds == ["k1", "k2"]
    assert kind.tolist() == [0] * 6 + [1] * 4
    sites = [(r.layer, r.role) for r in results]
    expected = aggregate(results, [0, 1, 2], ["a", "b"], n_layers=3, bootstrap=0)
    got = causal_metrics_from_examples(correct, sites, kind, n_layers=3)
    assert (got.best, got.average, got.per_layer) == (expected.best, expected.average, expected.per_layer)
    assert causal_metrics_from_examples(correct, sites, kind, n_layers=4).average is None  # a layer not scored
    # a resample: by hand, the same pairs of every site taken from each kind
    index = np.array([0, 0, 3, 5, 6, 9, 9])
    picked = [SiteResult(r.layer, r.role, {"k1": r.correct["k1"][[0, 0, 3, 5]], "k2": r.correct["k2"][[0, 3, 3]]})
              for r in results]
    by_hand = aggregate(picked, [0, 1, 2], ["a", "b"], n_layers=3, bootstrap=0)
    resampled = causal_metrics_from_examples(correct, [SimpleNamespace(layer=l, role=r) for l, r in sites], kind,
                                             n_layers=3, index=index)
    assert (resampled.best, resampled.average) == (by_hand.best, by_hand.average)
    with pytest.raises(ValueError, match="6 rows"):
        causal_metrics_from_examples(correct, sites[:-1], kind)


def test_many_causal_resamples_at_once_equal_one_at_a_time():
    results = _site_results()
    correct, kind, _ = per_pair_correct(results)
    sites = [(r.layer, r.role) for r in results]
    rng = np.random.default_rng(2)
    index = np.stack([np.concatenate([rng.integers(0, 6, 6), rng.integers(6, 10, 4)]) for _ in range(8)])
    batched = causal_metrics_resampled(correct, sites, kind, n_layers=3, index=index)
    assert batched.layers == [0, 1, 2] and batched.per_layer.shape == (8, 3)
    for r in range(8):
        one = causal_metrics_from_examples(correct, sites, kind, n_layers=3, index=index[r])
        assert batched.best[r] == pytest.approx(one.best, abs=1e-6)
        assert batched.average[r] == pytest.approx(one.average, abs=1e-6)
        assert batched.per_layer[r].tolist() == pytest.approx([one.per_layer[layer] for layer in range(3)], abs=1e-6)
    assert causal_metrics_resampled(correct, sites, kind, n_layers=4, index=index).average is None


# ============================================================================ end to end
QUICK = {"limit": 12, "batch_size": 8, "bootstrap": 20, "progress": False}


def _recomputes_circuit_record(result) -> None:
    from mibench.results.record import read_record

    record = read_record(result.record_path)
    assert record.artifacts["examples"] == FILE_NAME and (result.folder / FILE_NAME).is_file()
    metadata, arrays = record_examples(record, result.folder)
    assert metadata["track"] == "circuit" and int(metadata["n"]) == record.task.n_examples
    values = circuit_metrics_from_examples(arrays, tuple(record.scorer.fractions))
    metrics = record.metrics
    assert float(values.cpr) == pytest.approx(metrics.cpr, abs=1e-6)
    assert float(values.cmd) == pytest.approx(metrics.cmd, abs=1e-6)
    assert float(values.full) == pytest.approx(metrics.full_logit_difference, abs=1e-6)
    assert float(values.empty) == pytest.approx(metrics.empty_logit_difference, abs=1e-6)
    for ours, curve in [(values.signed, metrics.signed), (values.absolute, metrics.absolute),
                        (values.baseline, metrics.baseline)]:
        assert ours.tolist() == pytest.approx(curve.faithfulness, abs=1e-6)
    assert values.signed_means.tolist() == pytest.approx(metrics.signed.mean_logit_difference, abs=1e-6)


@pytest.mark.slow
def test_both_tracks_write_a_sidecar_that_recomputes_the_record(tmp_path):
    import mibench
    from mibench.cli import main
    from mibench.results.causal_record import read_causal_record

    circuit = mibench.evaluate("eap", "ioi", "gpt2-tasks", output_dir=str(tmp_path / "run"), attribution_examples=8,
                               **QUICK)
    _recomputes_circuit_record(circuit)
    # a file scored with `mibench score` gets its sidecar too, with the same numbers
    assert main(["score", str(circuit.folder / "scores.json"), "--task", "ioi", "--model", "gpt2-tasks",
                 "--limit", "12", "--batch-size", "8", "--bootstrap", "20", "--quiet",
                 "--output-dir", str(tmp_path / "scored")]) == 0
    scored = next((tmp_path / "scored").rglob("record.json")).parent
    _recomputes_circuit_record(SimpleNamespace(folder=scored, record_path=scored / "record.json"))

    causal = mibench.evaluate_causal("full-vector", "ioi", "output_token", "gpt2-tasks",
                                     output_dir=str(tmp_path / "run"), train_examples=16, **{**QUICK, "limit": 24})
    record = read_causal_record(causal.record_path)
    assert record.artifacts["examples"] == FILE_NAME
    metadata, arrays = record_examples(record, causal.folder)
    assert json.loads(metadata["kinds"]) == record.task.counterfactuals
    assert arrays["correct"].shape == (len(record.sites), sum(record.task.test_pairs.values()))
    values = causal_metrics_from_examples(arrays["correct"], record.sites, arrays["kind"],
                                          n_layers=record.model.n_layers)
    assert record.metrics.average is not None  # every layer scored: "average" is recomputed too
    assert values.average == pytest.approx(record.metrics.average, abs=1e-6)
    assert values.best == pytest.approx(record.metrics.best, abs=1e-6)
    assert values.per_layer == pytest.approx({b.layer: b.iia for b in record.metrics.per_layer}, abs=1e-6)
    for row, site in zip(arrays["correct"], record.sites):  # per kind, exactly the denominator IIA uses
        for i, kind in enumerate(record.task.counterfactuals):
            picked = row[arrays["kind"] == i]
            assert len(picked) == record.task.test_pairs[kind]
            assert picked.mean() == pytest.approx(site.iia_by_kind[kind], abs=1e-6)


@pytest.mark.slow
def test_an_interrupted_run_publishes_no_sidecar_without_its_record(tmp_path, monkeypatch):
    import mibench
    from mibench.pipeline.circuit import CircuitTrack

    staged: list[str] = []

    def interrupted(self, record, folder):
        staged.extend(sorted(p.name for p in folder.rglob("*") if p.is_file()))
        raise KeyboardInterrupt

    monkeypatch.setattr(CircuitTrack, "plot", interrupted)  # after the sidecar was written, before the record
    out = tmp_path / "results"
    with pytest.raises(KeyboardInterrupt):
        mibench.evaluate("eap", "ioi", "gpt2-tasks", output_dir=str(out), attribution_examples=8, **QUICK)
    assert staged == [FILE_NAME, "scores.json"]
    assert not out.exists()  # nothing published, not even the sidecar
