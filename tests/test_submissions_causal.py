"""Causal-track submissions: saved featurizers per (task, model, variable), checked and scored like built-ins."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from mibench.causal.featurizer import FixedFeatures, IdentityFeaturizer, Interchange, SubspaceFeaturizer
from mibench.causal.storage import save_interchange
from mibench.cli import main
from mibench.submissions import evaluate_submission, inspect_submission

MODELS = ("gpt2-tasks", "llama-tasks")  # both d_model 192, 3 layers
CELLS = {"mcqa": "answer_pointer", "ioi": "output_token"}


def _card(folder: Path, **overrides) -> Path:
    fields = {"method": "Half the neurons", "authors": ["A. Person"], "paper": None, "license": "MIT",
              "contact": "a@example.org", "track": "causal", "contains": "featurizers", "models": list(MODELS),
              "tasks": list(CELLS), "variables": {task: [variable] for task, variable in CELLS.items()}}
    fields.update(overrides)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "submission.yaml"
    path.write_text(yaml.safe_dump({k: v for k, v in fields.items() if v is not ...}, sort_keys=False))
    return path


def _featurizers(folder: Path, task: str, variable: str, *, layers=(0, 1, 2), role: str = "END") -> None:
    for layer in layers:
        interchange = Interchange(IdentityFeaturizer(192), FixedFeatures(192, list(range(0, 192, 2))))
        save_interchange(interchange, folder, layer=layer, role=role, task=task, variable=variable,
                         method="half-neurons")


def submission(root: Path, name: str = "half-neurons") -> Path:
    path = root / name
    _card(path)
    for task, variable in CELLS.items():
        for model in MODELS:
            _featurizers(path / f"{task}_{model}" / variable, task, variable)
    return path


def problems_of(path: Path) -> list[str]:
    return [str(p) for p in inspect_submission(path).problems]


def test_a_featurizer_submission_passes(tmp_path):
    path = submission(tmp_path)
    report = inspect_submission(path)
    assert report.ok, report.problems
    assert len(report.cells) == 4 and all(list(c.variables) == [CELLS[c.task]] for c in report.cells)


def test_variables_default_to_every_variable_of_the_task(tmp_path):
    path = submission(tmp_path)
    _card(path, variables=...)
    found = problems_of(path)
    assert any("no folder for covered variable 'answer'" in p for p in found)
    assert any("no folder for covered variable 'output_position'" in p for p in found)


def test_card_problems_for_the_causal_track(tmp_path):
    path = submission(tmp_path)
    _card(path, variables={"mcqa": ["answer_pointr"], "arithmetic_addition": ["ones_carry"]})
    found = problems_of(path)
    assert any("variables.mcqa: task 'mcqa' has no causal variable 'answer_pointr'" in p for p in found)
    assert any("variables.arithmetic_addition: task 'arithmetic_addition' is not listed in 'tasks'" in p
               for p in found)
    _card(path, contains="importances", variables=...)
    assert any("contains: a causal-track submission contains 'featurizers' or 'plugin'" in p
               for p in problems_of(path))
    _card(path, track="circuit")
    assert any("contains: featurizers are causal-track files" in p for p in problems_of(path))
    _card(path, tasks=["mcqa", "induction"], variables=...)
    assert any("tasks[1]: task 'induction' has no causal variables" in p for p in problems_of(path))


def test_bad_featurizer_files_name_the_file_and_the_field(tmp_path):
    path = submission(tmp_path)
    cell = path / "mcqa_gpt2-tasks" / "answer_pointer"
    save_interchange(Interchange(IdentityFeaturizer(64)), cell, layer=1, role="END")  # wrong width
    save_interchange(Interchange(IdentityFeaturizer(192)), cell, layer=5, role="END")  # no such layer
    save_interchange(Interchange(IdentityFeaturizer(192)), cell, layer=0, role="nowhere")  # no such role
    save_interchange(Interchange(IdentityFeaturizer(192)), cell, layer=2, role="END", variable="answer")
    (cell / "featurizer.py").write_text("import os\n")  # code is never accepted
    other = path / "ioi_llama-tasks" / "output_token"
    (other / "L0_END.safetensors").write_bytes(b"\x80\x04garbage")
    subspace = Interchange(SubspaceFeaturizer(192, 4))
    save_interchange(subspace, path / "ioi_gpt2-tasks" / "output_token", layer=0, role="END")
    card = path / "ioi_gpt2-tasks" / "output_token" / "L0_END.json"
    card.write_text(card.read_text().replace('"subspace"', '"example:not-installed"'))
    found = problems_of(path)
    assert f"{cell / 'L1_END.json'}: featurizer.config.d_model: 64, but the model's hidden size is 192" in found
    assert f"{cell / 'L5_END.json'}: layer: 5 is outside the model's layers 0..2" in found
    assert any(p.startswith(f"{cell / 'L0_nowhere.json'}: role: task 'mcqa' has no token role 'nowhere'")
               for p in found)
    assert f"{cell / 'L2_END.json'}: variable: 'answer', but the file sits in the folder for variable " \
           "'answer_pointer'" in found
    assert any(p.startswith(f"{cell / 'featurizer.py'}: unexpected file") for p in found)
    assert any(p.startswith(str(other / "L0_END.safetensors")) and "not a safetensors file" in p for p in found)
    assert any(p.startswith(str(card)) and "example:not-installed" in p for p in found)


def test_coverage_rules_hold_for_the_causal_track(tmp_path):
    path = submission(tmp_path)
    shutil.rmtree(path / "ioi_gpt2-tasks")
    shutil.rmtree(path / "ioi_llama-tasks")
    assert any("tasks[1]: no cell folder holds files for task 'ioi'" in p for p in problems_of(path))
    _card(path, models=["gpt2-tasks"], tasks=["mcqa"], variables=...)
    found = problems_of(path)
    assert any("must cover at least 2 models" in p for p in found)
    assert any("must cover at least 2 tasks" in p for p in found)


@pytest.mark.slow
def test_a_featurizer_submission_is_scored_and_ranked(tmp_path, capsys):
    from mibench.results.examples import record_examples

    path = submission(tmp_path / "submissions")
    for suffix in (".json", ".safetensors"):  # one site left out
        (path / "mcqa_llama-tasks" / "answer_pointer" / f"L2_END{suffix}").unlink()
    assert main(["submission", "check", str(path)]) == 0
    assert "ok (featurizers for 4 cell(s)" in capsys.readouterr().out
    records = tmp_path / "records"
    results = evaluate_submission(path, records, limit=24, bootstrap=20, batch_size=16, progress=False)
    assert len(results) == 4
    for result in results:
        record = result.record
        assert record.method.id == "submission:half-neurons" and record.method.source == "featurizers"
        assert record.method.folder == f"half-neurons/{record.task.id}_{record.model.id}/{record.task.variable}"
        assert {s.role for s in record.sites} == {"END"}
        expected_missing = {f"L{layer}/{role}" for layer in (0, 1, 2) for role in record.task.positions
                            if role != "END"}
        if (record.task.id, record.model.id) == ("mcqa", "llama-tasks"):
            expected_missing.add("L2/END")
            assert record.metrics.average is None  # layer 2 was never scored: no average
        assert set(record.metrics.missing_sites) == expected_missing
        _, examples = record_examples(record, result.folder)
        assert examples["correct"].shape == (len(record.sites), sum(record.task.test_pairs.values()))
    assert main(["leaderboard", "build", "--records", str(records), "--out", str(tmp_path / "site")]) == 0
    markdown = (tmp_path / "site" / "leaderboard.md").read_text()
    listed = [line for line in markdown.splitlines() if "| submission:half-neurons |" in line]
    assert len(listed) == 4 and all("--limit" in line for line in listed)  # --limit runs are listed, not ranked
