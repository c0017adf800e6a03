"""``mibench evaluate`` / ``mibench score`` end to end on a random-weight model folder."""

from __future__ import annotations

import json

import pytest

from mibench.cli import main
from mibench.results.record import read_record

QUICK = ["--limit", "24", "--batch-size", "8", "--bootstrap", "50", "--quiet"]


def _run_folder(output_dir):
    records = list(output_dir.rglob("record.json"))
    assert len(records) == 1
    return records[0].parent


def test_evaluate_writes_record_scores_and_plot_and_score_reproduces_it(random_task_model, tmp_path, capsys):
    out = tmp_path / "results"
    status = main(["evaluate", "--method", "eap", "--task", "ioi", "--model", str(random_task_model),
                   "--attribution-examples", "16", "--output-dir", str(out), *QUICK])
    assert status == 0
    printed = capsys.readouterr().out
    assert "CPR" in printed and "CMD" in printed and "f random" in printed
    folder = _run_folder(out)
    record = read_record(folder / "record.json")
    assert record.method.id == "eap" and record.task.n_examples == 24 and record.task.attribution_examples == 16
    assert record.metrics.absolute.faithfulness[-1] == pytest.approx(1.0, abs=1e-5)
    assert record.metrics.cpr_stderr is not None and record.metrics.baseline is not None
    assert record.metrics.effect_stderr is not None and record.metrics.effect_stderr > 0
    assert not record.leaderboard_eligible and any("--limit" in n for n in record.eligibility_notes)
    assert set(record.timings) >= {"load_model", "attribution", "evaluation"}
    assert (folder / "faithfulness.png").stat().st_size > 1000
    scores = json.loads((folder / "scores.json").read_text())
    assert set(scores) == {"cfg", "nodes", "edges"}

    rescored = tmp_path / "rescored"
    status = main(["score", str(folder / "scores.json"), "--task", "ioi", "--model", str(random_task_model),
                   "--output-dir", str(rescored), *QUICK])
    assert status == 0
    again = read_record(_run_folder(rescored) / "record.json")
    assert again.method.source == "file"
    assert again.metrics.cpr == pytest.approx(record.metrics.cpr, rel=1e-5, abs=1e-6)
    assert again.metrics.cmd == pytest.approx(record.metrics.cmd, rel=1e-5, abs=1e-6)


@pytest.mark.parametrize("method,level", [("nap", "neuron"), ("ifr", "edge"), ("eap-ig-activations", "edge")])
def test_evaluate_other_levels_and_methods(random_task_model, tmp_path, method, level):
    status = main(["evaluate", "--method", method, "--level", level, "--task", "mcqa", "--model",
                   str(random_task_model), "--attribution-examples", "8", "--output-dir", str(tmp_path),
                   "--no-baseline", *QUICK])
    assert status == 0
    record = read_record(_run_folder(tmp_path) / "record.json")
    assert record.method.level == level and record.metrics.baseline is None


def test_user_errors_are_one_line_with_suggestions(random_task_model, tmp_path, capsys):
    args = ["--task", "ioi", "--model", str(random_task_model), "--output-dir", str(tmp_path), *QUICK]
    assert main(["evaluate", "--method", "eap-ig", *args]) == 2
    assert "did you mean" in capsys.readouterr().err
    assert main(["evaluate", "--method", "eap", "--level", "neuron", *args]) == 2
    assert "edge level" in capsys.readouterr().err
    assert main(["evaluate", "--method", "eap", "--counterfactual", "abc", *args]) == 2
    assert "no single correct answer" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"cfg": {}, "nodes": {}}')
    assert main(["score", str(bad), *args]) == 2
    assert "bad.json" in capsys.readouterr().err
    assert not list(tmp_path.rglob("record.json"))


def test_score_refuses_a_file_without_scores(random_task_model, tmp_path, capsys):
    from mibench.graph.graph import Graph
    from mibench.graph.io import save_circuit
    from mibench.models.loading import load_model

    graph = Graph(load_model(random_task_model).adapter.layout)
    graph.reset(empty=False)  # a binary circuit: membership only, all scores zero
    path = tmp_path / "binary.json"
    save_circuit(graph, path)
    assert main(["score", str(path), "--task", "ioi", "--model", str(random_task_model),
                 "--output-dir", str(tmp_path), *QUICK]) == 2
    assert "every score is zero" in capsys.readouterr().err
