"""``mibench evaluate --track causal`` and ``mibench score --track causal`` end to end on the embedded model.

Every built-in featurizer runs on IOI, arithmetic and MCQA with tiny settings (one layer, a few dozen
pairs, one epoch); the numbers mean little, the point is that each run writes a valid record, a heatmap
and re-loadable featurizers. Saved featurizers re-score to the same IIA, and missing sites are reported,
never filled in.
"""

from __future__ import annotations

import pytest

from mibench.cli import main
from mibench.results.causal_record import read_causal_record
from mibench.results.examples import record_examples

MODEL = "gpt2-tasks"
QUICK = ["--limit", "24", "--train-examples", "24", "--batch-size", "16", "--bootstrap", "20", "--quiet"]
TRAINED = {"das", "dbm", "dbm-pca", "dbm-sae"}
CASES = {"ioi": "output_token", "arithmetic_addition": "ones_carry", "mcqa": "answer_pointer"}


def _evaluate(tmp_path, method: str, task: str, variable: str, *extra: str) -> int:
    epochs = ["--method-arg", "epochs=1"] if method in TRAINED else []
    return main(["evaluate", "--track", "causal", "--method", method, "--task", task, "--variable", variable,
                 "--model", MODEL, "--output-dir", str(tmp_path), *epochs, *QUICK, *extra])


def _record_folder(root):
    records = list(root.rglob("record.json"))
    assert len(records) == 1, records
    return records[0].parent


@pytest.mark.slow
@pytest.mark.parametrize("task", list(CASES))
@pytest.mark.parametrize("method", ["full-vector", "das", "dbm", "pca", "dbm-pca", "sae", "dbm-sae"])
def test_every_featurizer_runs_end_to_end(tmp_path, capsys, method, task):
    assert _evaluate(tmp_path, method, task, CASES[task], "--layers", "1") == 0
    printed = capsys.readouterr().out
    assert "IIA average" in printed and "IIA best" in printed
    folder = _record_folder(tmp_path)
    record = read_causal_record(folder / "record.json")
    roles = record.task.positions
    assert record.track == "causal" and record.method.id == method and record.task.layers == [1]
    assert {(s.layer, s.role) for s in record.sites} == {(1, role) for role in roles}
    for site in record.sites:
        assert 0.0 <= site.iia <= 1.0 and set(site.iia_by_kind) == set(record.task.counterfactuals)
        assert 1 <= site.n_selected <= site.n_features
        assert bool(site.train_loss) == (method in TRAINED)
    assert record.metrics.average is None and record.metrics.best == max(s.iia for s in record.sites)  # one layer
    assert all(n > 0 for n in record.task.test_pairs.values()) and record.task.train_pairs > 0
    assert not record.leaderboard_eligible and any("--limit" in note for note in record.eligibility_notes)
    assert (folder / "iia_heatmap.png").stat().st_size > 1000
    assert sorted(p.name for p in (folder / "featurizers").glob("*.json")) == sorted(f"L1_{r}.json" for r in roles)


@pytest.mark.slow
def test_saved_featurizers_rescore_to_the_same_iia_and_missing_sites_are_reported(tmp_path, capsys):
    runs = tmp_path / "runs"
    assert _evaluate(runs, "das", "mcqa", "answer_pointer") == 0
    original = read_causal_record(_record_folder(runs) / "record.json")
    featurizers = _record_folder(runs) / "featurizers"
    capsys.readouterr()

    rescored = tmp_path / "rescored"
    assert main(["score", "--track", "causal", str(featurizers), "--task", "mcqa", "--variable", "answer_pointer",
                 "--model", MODEL, "--output-dir", str(rescored), *QUICK]) == 0
    again = read_causal_record(_record_folder(rescored) / "record.json")
    assert again.method.source == "featurizers"
    assert {(s.layer, s.role): s.iia for s in again.sites} == {(s.layer, s.role): s.iia for s in original.sites}
    assert again.metrics.average == original.metrics.average and not again.metrics.missing_sites
    # the per-pair correctness in the sidecars is the same, pair by pair
    _, original_pairs = record_examples(original, _record_folder(runs))
    _, again_pairs = record_examples(again, _record_folder(rescored))
    assert (original_pairs["correct"] == again_pairs["correct"]).all()

    for suffix in (".json", ".safetensors"):  # a submission that leaves out one site
        (featurizers / f"L2_END{suffix}").unlink()
    partial = tmp_path / "partial"
    assert main(["score", "--track", "causal", str(featurizers), "--task", "mcqa", "--variable", "answer_pointer",
                 "--model", MODEL, "--output-dir", str(partial), *QUICK]) == 0
    printed = capsys.readouterr().out
    record = read_causal_record(_record_folder(partial) / "record.json")
    assert record.metrics.missing_sites == ["L2/END"] and "L2/END" in printed
    assert ("L2", "END") not in {(f"L{s.layer}", s.role) for s in record.sites}  # not filled with anything
    layer2 = {s.role: s.iia for s in original.sites if s.layer == 2 and s.role != "END"}
    assert {b.layer: b.iia for b in record.metrics.per_layer}[2] == max(layer2.values())
    # every layer is still scored at some position, so "average" exists; the record says what is missing
    assert record.metrics.average is not None
    assert record.eligibility_notes == again.eligibility_notes  # a partial submission is still rankable (MIB)


def test_causal_user_errors_are_one_line_with_suggestions(tmp_path, capsys):
    base = ["evaluate", "--track", "causal", "--model", MODEL, "--output-dir", str(tmp_path), *QUICK]
    assert main([*base, "--method", "das", "--task", "mcqa"]) == 2
    assert "--variable" in capsys.readouterr().err
    assert main([*base, "--method", "das", "--task", "mcqa", "--variable", "answer_pointr"]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert main([*base, "--method", "dass", "--task", "mcqa", "--variable", "answer"]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert main([*base, "--method", "eap", "--task", "mcqa", "--variable", "answer"]) == 2
    assert "causal track needs a featurizer" in capsys.readouterr().err
    assert main([*base, "--method", "das", "--task", "induction", "--variable", "answer"]) == 2
    assert "no causal variables" in capsys.readouterr().err
    assert main([*base, "--method", "das", "--task", "mcqa", "--variable", "answer", "--positions", "ENDD"]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert main([*base, "--method", "das", "--task", "mcqa", "--variable", "answer", "--layers", "7"]) == 2
    assert "layers 0..2" in capsys.readouterr().err
    assert main(["evaluate", "--method", "das", "--task", "mcqa", "--model", MODEL]) == 2
    assert "--track causal" in capsys.readouterr().err
    assert not list(tmp_path.rglob("record.json"))
