"""User mistakes end in one clean ``mibench ...: error: ...`` line and a non-zero status, never a traceback.

Every invocation runs in-process through :func:`mibench.cli.main`; the cases fail before (or right after)
a model is loaded, so the table runs in seconds. Ctrl-C is simulated mid-run and must leave no files.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from mibench.cli import EXIT_INTERRUPTED, EXIT_USER_ERROR, main

USAGE = EXIT_USER_ERROR  # argparse mistakes and MibenchErrors share exit status 2
EVAL = ["evaluate", "--method", "eap", "--task", "ioi", "--limit", "4"]
CAUSAL = ["evaluate", "--track", "causal", "--method", "das", "--task", "mcqa", "--limit", "4"]


def _bad_json(tmp: Path) -> str:
    path = tmp / "bad.json"
    path.write_text("{not json")
    return str(path)


def _not_a_model(tmp: Path) -> str:
    (tmp / "empty-model").mkdir()
    return str(tmp / "empty-model")


#: (id, argv (tmp_path -> argv), exit status, text the one error line must contain)
CASES: list[tuple[str, Callable[[Path], list[str]], int, str]] = [
    ("unknown command", lambda t: ["evalute"], USAGE, "invalid choice: 'evalute'"),
    ("missing --task", lambda t: ["evaluate", "--method", "eap"], USAGE, "--task"),
    ("dtype float8", lambda t: [*EVAL, "--dtype", "float8"], USAGE, "unknown dtype 'float8'"),
    ("batch size 0", lambda t: [*EVAL, "--batch-size", "0"], USAGE, "must be at least 1"),
    ("negative limit", lambda t: [*EVAL, "--limit", "-3"], USAGE, "must be at least 1"),
    ("limit not a number", lambda t: [*EVAL, "--limit", "ten"], USAGE, "expected a whole number"),
    ("negative bootstrap", lambda t: [*EVAL, "--bootstrap", "-1"], USAGE, "must be 0 or more"),
    ("unknown ablation", lambda t: [*EVAL, "--ablation", "resample"], USAGE, "invalid choice: 'resample'"),
    ("unknown split", lambda t: [*EVAL, "--split", "dev"], USAGE, "invalid choice: 'dev'"),
    ("bad --layers", lambda t: [*CAUSAL, "--variable", "answer_pointer", "--layers", "1,x"], USAGE,
     "comma-separated integers"),
    ("unknown table format", lambda t: [*EVAL, "--format", "jsn"], USAGE, "did you mean 'json'"),
    ("mistyped method", lambda t: ["evaluate", "--method", "eap-ig-input", "--task", "ioi"], USAGE,
     "did you mean 'eap-ig-inputs'"),
    ("mistyped task", lambda t: ["evaluate", "--method", "eap", "--task", "ioj"], USAGE, "did you mean 'ioi'"),
    ("unsupported level", lambda t: [*EVAL, "--level", "neuron"], USAGE, "not 'neuron'"),
    ("method-arg without =", lambda t: [*EVAL, "--method-arg", "ig_steps"], USAGE, "NAME=VALUE"),
    ("unknown method argument", lambda t: [*EVAL, "--method-arg", "nosuch=1"], USAGE, "has no argument 'nosuch'"),
    ("unknown counterfactual", lambda t: [*EVAL, "--counterfactual", "nope"], USAGE, "no counterfactual 'nope'"),
    ("causal method on the circuit track", lambda t: ["evaluate", "--method", "das", "--task", "mcqa"], USAGE,
     "--track causal"),
    ("causal track without --variable", lambda t: CAUSAL, USAGE, "needs --variable"),
    ("mistyped causal variable", lambda t: [*CAUSAL, "--variable", "answer_pointr"], USAGE,
     "did you mean 'answer_pointer'"),
    ("local model path that does not exist", lambda t: [*EVAL, "--model", str(t / "no" / "such-model")], USAGE,
     "does not exist"),
    ("relative model path that does not exist", lambda t: [*EVAL, "--model", "./no-such-model"], USAGE,
     "model folder './no-such-model' does not exist"),
    ("folder that is not a model", lambda t: [*EVAL, "--model", _not_a_model(t)], USAGE, "no config.json"),
    ("mistyped embedded model", lambda t: [*EVAL, "--model", "gpt2-task"], USAGE, "did you mean 'gpt2-tasks'"),
    ("device that does not exist", lambda t: [*EVAL, "--device", "gpu"], USAGE, "is not a torch device"),
    ("score a missing file", lambda t: ["score", str(t / "missing.json"), "--task", "ioi"], USAGE, "no such file"),
    ("score a folder as a file", lambda t: ["score", str(t), "--task", "ioi"], USAGE, "it is a folder"),
    ("score a missing featurizer folder", lambda t: ["score", "--track", "causal", str(t / "nope"), "--task", "mcqa",
                                                    "--variable", "answer_pointer"], USAGE, "no such folder"),
    ("score a file that is not JSON", lambda t: ["score", _bad_json(t), "--task", "ioi", "--limit", "4"], USAGE,
     "bad.json"),
    ("unknown ls kind", lambda t: ["ls", "datasets"], USAGE, "invalid choice: 'datasets'"),
    ("leaderboard from a missing folder", lambda t: ["leaderboard", "build", "--records", str(t / "none"),
                                                     "--out", str(t / "site")], USAGE, "does not exist"),
    ("submission evaluate of a missing folder", lambda t: ["submission", "evaluate", str(t / "none")], 1,
     "nothing was scored"),
    ("schema with an unknown split", lambda t: ["schema", "check", "--task", "ioi", "--split", "dev"], USAGE,
     "invalid choice: 'dev'"),
]


def _error_lines(err: str) -> list[str]:
    return [line for line in err.splitlines() if line.strip()]


@pytest.mark.parametrize("argv, status, expected", [pytest.param(a, s, e, id=i) for i, a, s, e in CASES])
def test_bad_invocation_gives_one_clean_error(tmp_path, capsys, argv, status, expected):
    out_dir = tmp_path / "results"
    words = argv(tmp_path)
    if words and words[0] in ("evaluate", "score"):
        words = [*words, "--output-dir", str(out_dir)]
    assert main(words) == status
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = _error_lines(err)
    assert lines and lines[-1].startswith("mibench") and "error: " in lines[-1], err
    assert len([line for line in lines if "error:" in line]) == 1, err
    assert expected in lines[-1], err
    assert not out_dir.exists(), "a failed run must not leave an output folder"


def test_table_is_large_enough():
    assert len(CASES) >= 20


def test_cuda_on_a_cpu_only_torch_is_refused(tmp_path, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main([*EVAL, "--device", "cuda", "--output-dir", str(tmp_path / "r")]) == USAGE
    lines = _error_lines(capsys.readouterr().err)
    assert len(lines) == 1 and "device 'cuda'" in lines[0] and "--device cpu" in lines[0]


def test_ctrl_c_prints_one_line_exits_130_and_writes_nothing(random_task_model, tmp_path, capsys, monkeypatch):
    """Interrupted after the method's scores were written (to the staging folder): nothing is published."""
    from mibench.pipeline.circuit import CircuitTrack

    staged = []

    def interrupted(self):
        staged.extend(p for p in Path(self.request.output_dir).rglob("*") if p.is_file())
        raise KeyboardInterrupt

    monkeypatch.setattr(CircuitTrack, "score", interrupted)
    out = tmp_path / "results"
    status = main(["evaluate", "--method", "eap", "--task", "ioi", "--model", str(random_task_model), "--limit", "8",
                   "--attribution-examples", "8", "--batch-size", "8", "--quiet", "--output-dir", str(out)])
    assert status == EXIT_INTERRUPTED
    lines = _error_lines(capsys.readouterr().err)
    assert lines == ["mibench: error: interrupted; no results were written"]
    assert [p.name for p in staged] == ["scores.json"]  # the run had got as far as writing its scores
    assert not out.exists()


def test_format_json_prints_only_the_summary(random_task_model, tmp_path, capsys):
    out = tmp_path / "results"
    status = main(["evaluate", "--method", "eap", "--task", "ioi", "--model", str(random_task_model), "--limit", "8",
                   "--attribution-examples", "8", "--batch-size", "8", "--bootstrap", "10", "--quiet",
                   "--output-dir", str(out), "--format", "json"])
    assert status == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)  # stdout is exactly one JSON document
    record = json.loads(Path(summary["record"]).read_text())
    assert summary["track"] == "circuit" and summary["method"] == "eap" and summary["task"] == "ioi"
    assert summary["metrics"]["cpr"] == record["metrics"]["cpr"]
    assert summary["leaderboard_eligible"] is False and summary["eligibility_notes"] == record["eligibility_notes"]
    assert Path(summary["artifacts"]["scores"]).is_file()
    assert captured.err == ""  # --quiet: nothing on stderr either
