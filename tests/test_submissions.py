"""Submission folders: the card, coverage, file formats and graph sizes, circuit size limits, unsafe files."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest
import torch
import yaml

from mibench.cli.submission import add_arguments as submission_arguments
from mibench.cli.submission import run as run_submission
from mibench.graph.graph import Graph
from mibench.graph.io import save_circuit
from mibench.graph.layout import GraphLayout
from mibench.submissions import (
    CIRCUIT_FRACTIONS,
    InvalidSubmissionError,
    Problem,
    check_submission,
    evaluate_submission,
    inspect_submission,
    resolve_model,
)
from mibench.submissions import models as submission_models
from mibench.submissions.example import write_random_submission

REPO = Path(__file__).resolve().parents[1]
#: Stand-ins for embedded zoo models, plugged in through the zoo hook (tiny graphs keep the files small).
TINY = {"tiny-a": GraphLayout(n_layers=2, n_heads=4, d_model=8), "tiny-b": GraphLayout(n_layers=1, n_heads=3, d_model=8)}


REAL_ZOO_LAYOUT = submission_models.zoo_layout


@pytest.fixture(autouse=True)
def tiny_zoo(monkeypatch):
    monkeypatch.setattr(submission_models, "zoo_layout", lambda name: TINY.get(name))
    monkeypatch.setattr(submission_models, "zoo_model_names", lambda: sorted(TINY))


def card_fields(**overrides):
    fields = {"method": "Test method", "authors": ["A. Person"], "paper": None, "license": "MIT",
              "contact": "a@example.org", "track": "circuit", "contains": "importances",
              "models": ["tiny-a", "tiny-b"], "tasks": ["ioi", "mcqa"]}
    fields.update(overrides)
    return {k: v for k, v in fields.items() if v is not ...}


def write_card(folder: Path, **overrides) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "submission.yaml"
    path.write_text(yaml.safe_dump(card_fields(**overrides), sort_keys=False))
    return path


def scored_graph(layout: GraphLayout, seed: int = 0) -> Graph:
    graph = Graph(layout)
    generator = torch.Generator().manual_seed(seed)
    graph.edge_scores = torch.where(graph.real_edge_mask, torch.randn(graph.edge_scores.shape, generator=generator),
                                    torch.zeros(()))
    return graph


def importances_submission(root: Path, name: str = "my-method", suffixes=(".json", ".pt", ".safetensors", ".json"),
                           **card) -> Path:
    folder = root / name
    write_card(folder, **card)
    cells = [(t, m) for m in ("tiny-a", "tiny-b") for t in ("ioi", "mcqa")]
    for i, ((task, model), suffix) in enumerate(zip(cells, suffixes)):
        (folder / f"{task}_{model}").mkdir()
        save_circuit(scored_graph(TINY[model], seed=i), folder / f"{task}_{model}" / f"importances{suffix}")
    return folder


def messages(problems: list[Problem]) -> list[str]:
    return [str(p) for p in problems]


# ------------------------------------------------------------------------------------------------- valid
def test_a_valid_importances_submission_passes_in_every_format(tmp_path):
    folder = importances_submission(tmp_path)
    report = inspect_submission(folder)
    assert report.problems == []
    assert sorted((c.task, c.model.name, c.files[0].name) for c in report.cells) == [
        ("ioi", "tiny-a", "importances.json"), ("ioi", "tiny-b", "importances.safetensors"),
        ("mcqa", "tiny-a", "importances.pt"), ("mcqa", "tiny-b", "importances.json")]
    assert check_submission(folder) == []


def test_mib_folder_spellings_and_reference_models_resolve(tmp_path):
    assert resolve_model("qwen2.5").source == "Qwen/Qwen2.5-0.5B"
    assert resolve_model("gemma2").layout.n_edges == 74_218
    assert resolve_model("meta-llama/Llama-3.1-8B").layout.n_edges == 1_592_881
    assert resolve_model("tiny-a").kind == "zoo"  # through the zoo hook
    with pytest.raises(KeyError, match="did you mean 'gpt2'"):
        resolve_model("gpt-2")
    folder = tmp_path / "hyphens"
    write_card(folder, tasks=["arithmetic_addition", "ioi"])
    for task_folder, task in (("arithmetic-addition", "arithmetic_addition"), ("ioi", "ioi")):
        for model in ("tiny-a", "tiny-b"):
            (folder / f"{task_folder}_{model}").mkdir()
            save_circuit(scored_graph(TINY[model]), folder / f"{task_folder}_{model}" / "importances.pt")
    report = inspect_submission(folder)
    assert report.problems == [] and {c.task for c in report.cells} == {"arithmetic_addition", "ioi"}


def test_the_zoo_hook_reads_the_model_folders_config(tmp_path, monkeypatch):
    import json

    from mibench.zoo import catalog

    folder = tmp_path / "some-zoo-model"
    folder.mkdir()
    config = {"model_type": "llama", "num_hidden_layers": 3, "num_attention_heads": 6, "num_key_value_heads": 2,
              "hidden_size": 192}
    (folder / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr(catalog, "is_zoo_model", lambda name: name == "some-zoo-model")
    monkeypatch.setattr(catalog, "model_path", lambda name: folder)
    assert REAL_ZOO_LAYOUT("some-zoo-model") == GraphLayout(n_layers=3, n_heads=6, d_model=192)
    assert REAL_ZOO_LAYOUT("gpt2") is None


# ----------------------------------------------------------------------------------------------- the card
def test_card_problems_name_the_file_and_the_field(tmp_path):
    folder = importances_submission(tmp_path)
    card = folder / "submission.yaml"
    write_card(folder, license=..., contains="everything", authors=[], colour="blue")
    found = {(p.file, p.field) for p in check_submission(folder)}
    assert found == {(str(card), "license"), (str(card), "contains"), (str(card), "authors"), (str(card), "colour")}
    problem = next(p for p in check_submission(folder) if p.field == "colour")
    assert str(problem).startswith(f"{card}: colour: unknown field (allowed: method, description")

    write_card(folder, track="causal")
    assert messages(check_submission(folder))[0] == (
        f"{card}: contains: a causal-track submission contains 'featurizers' or 'plugin', not 'importances'")
    card.write_text("method: [unclosed")
    assert messages(check_submission(folder))[0].startswith(f"{card}: not valid YAML")
    card.unlink()
    assert messages(check_submission(folder)) == [f"{card}: missing: every submission folder needs a submission.yaml"]


def test_unknown_tasks_and_models_are_reported_against_the_card(tmp_path):
    folder = importances_submission(tmp_path)
    write_card(folder, tasks=["ioi", "mcq"], models=["tiny-a", "tiny-c"])
    problems = {(p.field, p.message.split(";")[0]) for p in check_submission(folder)
                if p.file.endswith("submission.yaml")}
    assert ("tasks[1]", "unknown task 'mcq'") in problems
    assert ("models[1]", "unknown model 'tiny-c'") in problems
    assert any("did you mean 'tiny-b' or 'tiny-a'?" in p.message for p in check_submission(folder))


def test_coverage_needs_two_models_and_two_tasks_with_files(tmp_path):
    folder = importances_submission(tmp_path)
    write_card(folder, models=["tiny-a"], tasks=["ioi"])
    found = messages(check_submission(folder))
    card = folder / "submission.yaml"
    assert f"{card}: models: a submission must cover at least 2 models (it lists 1)" in found
    assert f"{card}: tasks: a submission must cover at least 2 tasks (it lists 1)" in found
    assert any(line.startswith(f"{folder / 'mcqa_tiny-a'}: does not name a covered cell") for line in found)

    write_card(folder, tasks=["ioi", "mcqa", "induction"])  # declared, but no files
    assert messages(check_submission(folder)) == [
        f"{card}: tasks[2]: no cell folder holds files for task 'induction' (expected e.g. induction_tiny-a/)"]


# ----------------------------------------------------------------------------------------------- the files
def test_a_file_for_another_graph_is_refused_with_the_field(tmp_path):
    folder = importances_submission(tmp_path)
    wrong = folder / "ioi_tiny-a" / "importances.json"
    save_circuit(scored_graph(TINY["tiny-b"]), wrong)
    (problem,) = check_submission(folder)
    assert (problem.file, problem.field) == (str(wrong), "cfg")
    assert "n_layers=1, n_heads=3" in problem.message and "n_layers=2, n_heads=4" in problem.message


def test_importances_must_hold_scores_at_the_declared_level(tmp_path):
    folder = importances_submission(tmp_path, level="edge")
    empty = folder / "ioi_tiny-a" / "importances.pt"
    (folder / "ioi_tiny-a" / "importances.json").unlink()
    save_circuit(Graph(TINY["tiny-a"]), empty)
    assert messages(check_submission(folder)) == [
        f"{empty}: edges_scores: every edge score is 0 or NaN: there is nothing to rank"]

    node_level = Graph(TINY["tiny-a"], node_scores=True)
    node_level.node_scores = torch.arange(node_level.n_forward, dtype=torch.float32)
    save_circuit(node_level, empty)
    assert messages(check_submission(folder)) == [
        f"{empty}: holds node-level scores, but the card says level: edge"]


def test_stray_and_duplicate_files_and_symlinks_are_refused(tmp_path):
    folder = importances_submission(tmp_path)
    save_circuit(scored_graph(TINY["tiny-a"]), folder / "ioi_tiny-a" / "importances.pt")  # a second importances file
    save_circuit(scored_graph(TINY["tiny-a"]), folder / "loose.json")
    (folder / "README.md").write_text("notes are fine")
    (folder / "mcqa_tiny-b" / "abs-true").mkdir()
    found = messages(check_submission(folder))
    assert f"{folder / 'ioi_tiny-a'}: more than one importances file (importances.json, importances.pt); keep one" \
        in found
    assert any(line.startswith(f"{folder / 'loose.json'}: unexpected file: circuit files belong in a "
                               "<task>_<model> folder")
               for line in found)
    assert f"{folder / 'mcqa_tiny-b' / 'abs-true'}: unexpected folder: a cell folder holds its files directly" in found
    assert len(found) == 3

    other = importances_submission(tmp_path, name="linked")
    target = other / "mcqa_tiny-b" / "importances.json"
    target.unlink()
    target.symlink_to(tmp_path / "my-method" / "mcqa_tiny-b" / "importances.json")
    assert messages(check_submission(other)) == [f"{target}: symbolic links are not accepted"]


class _CodeInAPickle:
    """Unpickling this runs ``open(marker, "w")``: a stand-in for any code a malicious file could run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def _malicious_pt(path: Path, marker: Path) -> None:
    graph = scored_graph(TINY["tiny-a"])
    payload = {"cfg": graph.cfg, "src_nodes": graph.forward_names, "dst_nodes": graph.backward_names,
               "edges_scores": graph.edge_scores, "edges_in_graph": graph.edges_in_graph,
               "nodes_in_graph": _CodeInAPickle(marker)}
    torch.save(payload, path)


def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path):
    # Control: the payload is live -- an unrestricted unpickler does run it.
    control, control_marker = tmp_path / "control.pt", tmp_path / "control-ran"
    _malicious_pt(control, control_marker)
    torch.load(control, weights_only=False)["nodes_in_graph"].close()
    assert control_marker.exists()

    folder = importances_submission(tmp_path)
    marker = tmp_path / "payload-ran"
    (folder / "ioi_tiny-a" / "importances.json").unlink()
    evil = folder / "ioi_tiny-a" / "importances.pt"
    _malicious_pt(evil, marker)
    (problem,) = check_submission(folder)
    assert problem.file == str(evil) and problem.field is None
    assert "refused" in problem.message and "never executes code" in problem.message
    assert not marker.exists()  # its code never ran
    with pytest.raises(InvalidSubmissionError):
        evaluate_submission(folder, tmp_path / "results")
    assert not marker.exists()


# --------------------------------------------------------------------------------------- multiple circuits
def circuit(layout: GraphLayout, n_edges: int) -> Graph:
    graph = Graph(layout)
    forward, backward = graph.edge_indices
    graph.edges_in_graph[forward[:n_edges], backward[:n_edges]] = True
    return graph


def circuits_submission(root: Path, sizes=None) -> Path:
    folder = root / "nine-circuits"
    write_card(folder, contains="circuits")
    for task in ("ioi", "mcqa"):
        for model, layout in TINY.items():
            cell = folder / f"{task}_{model}"
            cell.mkdir()
            counts = sizes or [int(f * layout.n_edges) for f in CIRCUIT_FRACTIONS]
            for i, count in enumerate(counts):
                save_circuit(circuit(layout, count), cell / f"circuit_{i}.pt")
    return folder


def test_nine_circuits_within_their_size_limits_pass(tmp_path):
    report = inspect_submission(circuits_submission(tmp_path))
    assert report.problems == []
    assert all(len(cell.files) == 9 for cell in report.cells)


def test_circuit_size_limits_and_count_are_enforced(tmp_path):
    folder = circuits_submission(tmp_path)
    cell = folder / "ioi_tiny-a"  # 110 edges: the limits are 0, 0, 0, 1, 2, 5, 11, 22, 55 edges
    save_circuit(circuit(TINY["tiny-a"], 3), cell / "circuit_4.pt")  # the 5th smallest may hold 2% = 2 edges
    found = messages(check_submission(folder))
    expected = (f"{cell / 'circuit_4.pt'}: edges_in_graph: circuit 5 of 9 by size holds 3 edges (2.73% of 110); "
                "circuit 5 may hold at most 2% (2 edges)")
    assert found == [expected]
    (cell / "circuit_4.pt").unlink()
    found = messages(check_submission(folder))
    assert found[0].startswith(f"{cell}: holds 8 circuit file(s); the multiple-circuit mode needs exactly 9")


# --------------------------------------------------------------------------------------------------- plugin
def test_plugin_submissions_name_a_namespaced_method_and_ship_no_files(tmp_path):
    folder = tmp_path / "acme"
    write_card(folder, contains="plugin", plugin={"distribution": "acme-mib", "method": "acme:fast-eap"})
    card = folder / "submission.yaml"
    assert messages(check_submission(folder)) == [  # the plugin must be installed to be checked (and scored)
        f"{card}: plugin.distribution: 'acme-mib' is not installed; install it (pip install <its source>) before "
        "checking or evaluating the submission"]
    write_card(folder, contains="plugin", plugin={"distribution": "acme mib", "method": "fast-eap"})
    fields = {p.field for p in check_submission(folder)}
    assert fields == {"plugin.distribution", "plugin.method"}
    write_card(folder, contains="plugin")
    assert messages(check_submission(folder)) == [
        f"{card}: plugin: required when contains is 'plugin' (distribution and method)"]
    write_card(folder, contains="plugin", plugin={"distribution": "acme-mib", "method": "acme:fast-eap"})
    (folder / "ioi_tiny-a").mkdir()
    assert messages(check_submission(folder))[0].startswith(f"{folder / 'ioi_tiny-a'}: unexpected folder")


# ------------------------------------------------------------------------------------------ command line
def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    submission_arguments(parser)
    return run_submission(parser.parse_args(list(argv)))


def test_check_command_prints_one_line_per_problem(tmp_path, capsys):
    good = importances_submission(tmp_path)
    bad = importances_submission(tmp_path, name="bad", models=["tiny-a"])
    assert _cli("check", str(good)) == 0
    assert capsys.readouterr().out == f"{good}: ok (importances for 4 cell(s); 2 models, 2 tasks)\n"
    assert _cli("check", str(good), str(bad)) == 1
    lines = capsys.readouterr().out.splitlines()
    assert f"{bad / 'submission.yaml'}: models: a submission must cover at least 2 models (it lists 1)" in lines
    assert _cli("check", str(tmp_path / "absent")) == 1
    assert capsys.readouterr().out.startswith(f"{tmp_path / 'absent'}: not a folder")


# ------------------------------------------------------------------------------------------------ evaluate
def test_evaluate_scores_each_cell_and_names_the_method_after_the_submission(tmp_path, monkeypatch):
    from mibench import pipeline as run
    from mibench.results.record import read_record
    from tests.test_leaderboard import make_record

    calls = []

    def fake_run_evaluation(request):
        calls.append(request)
        folder = Path(request.output_dir) / request.task / request.model / "file_run"
        folder.mkdir(parents=True)
        record = make_record(f"file:{Path(request.circuit_file).name}", request.task, request.model,
                             eligible=request.limit is None)
        from mibench.results.record import write_record

        return run.EvaluationResult(record, folder, write_record(record, folder / "record.json"))

    monkeypatch.setattr(run, "run_evaluation", fake_run_evaluation)
    folder = importances_submission(tmp_path)
    results = evaluate_submission(folder, tmp_path / "results", limit=5)
    assert len(results) == len(calls) == 4 and all(r.limit == 5 for r in calls)
    assert {(r.task, r.model) for r in calls} == {(t, m) for t in ("ioi", "mcqa") for m in ("tiny-a", "tiny-b")}
    for result in results:
        record = read_record(result.record_path)
        assert result.record_path.is_relative_to(tmp_path / "results" / "my-method")
        assert record.method.id == "submission:my-method"
        assert record.method.file == f"my-method/{record.task.id}_{record.model.id}/" + Path(record.method.file).name


@pytest.fixture
def random_model_cells(monkeypatch, random_task_model) -> GraphLayout:
    """Both stand-in models ("tiny-a", "tiny-b") resolve to the random task model; returns its layout."""
    from transformers import AutoConfig

    from mibench.submissions import check as check_module
    from mibench.submissions.models import ModelTarget

    layout = Graph.from_hf_config(AutoConfig.from_pretrained(random_task_model)).layout
    monkeypatch.setitem(TINY, "tiny-a", layout)
    monkeypatch.setitem(TINY, "tiny-b", layout)
    monkeypatch.setattr(check_module, "resolve_model",
                        lambda name: ModelTarget(name, str(random_task_model), layout, "zoo"))
    return layout


@pytest.mark.slow
def test_evaluate_end_to_end_on_a_random_model(tmp_path, random_model_cells):
    from mibench.circuits.areas import circuit_metrics_from_examples
    from mibench.results.examples import record_examples
    from mibench.results.record import read_record

    folder = importances_submission(tmp_path, suffixes=(".json", ".pt", ".json", ".safetensors"))
    results = evaluate_submission(folder, tmp_path / "results", limit=8, bootstrap=10, batch_size=8, progress=False)
    assert len(results) == 4
    for result in results:
        record = read_record(result.record_path)
        assert record.method.id == "submission:my-method" and record.method.source == "file"
        assert not record.leaderboard_eligible  # --limit
        assert (result.folder / "faithfulness.png").is_file()
        _, examples = record_examples(record, result.folder)  # the relabelled record keeps its sidecar
        assert float(circuit_metrics_from_examples(examples).cpr) == pytest.approx(record.metrics.cpr, abs=1e-6)


@pytest.mark.slow
def test_nine_circuit_submission_is_scored_end_to_end(tmp_path, random_model_cells):
    from mibench.circuits.areas import circuit_metrics_from_examples
    from mibench.results.examples import record_examples
    from mibench.results.record import read_record

    layout = random_model_cells
    folder = circuits_submission(tmp_path)
    results = evaluate_submission(folder, tmp_path / "results", limit=8, bootstrap=10, batch_size=8, progress=False)
    assert len(results) == 4
    for result in results:
        record = read_record(result.record_path)
        assert record.method.id == "submission:nine-circuits" and record.method.source == "circuits"
        assert re.fullmatch(r"nine-circuits/(ioi|mcqa)_tiny-[ab]", record.method.file)
        curve = record.metrics.absolute
        assert curve.ranking == "submitted" and curve.faithfulness[-1] == 1.0
        assert curve.edge_counts[:-1] == [float(int(f * layout.n_edges)) for f in CIRCUIT_FRACTIONS]
        assert record.metrics.signed == curve
        _, examples = record_examples(record, result.folder)  # one submitted curve: both rankings' rows are it
        assert (examples["signed"] == examples["absolute"]).all()
        assert float(circuit_metrics_from_examples(examples).cmd) == pytest.approx(record.metrics.cmd, abs=1e-6)


# ---------------------------------------------------------------------------------------- shipped example
def test_the_example_generator_is_deterministic_and_its_output_passes(tmp_path):
    first = write_random_submission(tmp_path / "a" / "example-random", ["tiny-a", "tiny-b"], ["ioi", "mcqa"])
    second = write_random_submission(tmp_path / "b" / "example-random", ["tiny-a", "tiny-b"], ["ioi", "mcqa"])
    assert [p.read_bytes() for p in first[1:]] == [p.read_bytes() for p in second[1:]]
    assert check_submission(tmp_path / "a" / "example-random") == []


EXAMPLE = REPO / "submissions" / "example-random"
EXAMPLE_MODELS, EXAMPLE_TASKS = ["gpt2-tasks", "llama-tasks"], ["ioi", "mcqa"]


def test_the_shipped_example_passes_and_is_what_the_generator_writes(tmp_path, monkeypatch):
    from mibench.zoo.catalog import model_names

    if not set(EXAMPLE_MODELS) <= set(model_names()):
        pytest.skip("the embedded zoo models the example is made for are not in this checkout")
    monkeypatch.undo()  # the real zoo, not the tiny stand-ins
    assert check_submission(EXAMPLE) == []
    fresh = write_random_submission(tmp_path / "example-random", EXAMPLE_MODELS, EXAMPLE_TASKS)
    for path in fresh:
        assert path.read_bytes() == (EXAMPLE / path.relative_to(tmp_path / "example-random")).read_bytes(), path
