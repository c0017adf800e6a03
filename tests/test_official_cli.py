"""``--data official``: MIB's datasets through the command line and the pipeline, offline from a local copy.

The local copy is ``tests/fixtures/official`` (MIB's row layout; see its README). The end-to-end run uses a
random-weight GPT-2-architecture folder with GPT-2's real BPE tokenizer, so the official prompts tokenize
exactly as they would for ``--model gpt2``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mibench.cli import main
from mibench.data.official import FORMATS, CF_SUFFIX, load_official
from mibench.pipeline.header import data_hash
from mibench.results.record import read_record

FIXTURES = Path(__file__).parent / "fixtures" / "official"
QUICK = ["--batch-size", "4", "--bootstrap", "10", "--quiet"]


@pytest.fixture(scope="module")
def tiny_gpt2_folder(gpt2_bpe, tmp_path_factory):
    """A random 2-layer GPT-2 with GPT-2's vocabulary and tokenizer, saved like a hub model."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(gpt2_bpe), n_layer=2, n_embd=16, n_head=2, n_positions=64)
    folder = tmp_path_factory.mktemp("tiny-gpt2")
    GPT2LMHeadModel(config).save_pretrained(folder)
    gpt2_bpe.save_pretrained(folder)
    return folder


def _record(root: Path):
    records = list(root.rglob("record.json"))
    assert len(records) == 1, records
    return read_record(records[0]), records[0].parent


@pytest.mark.slow
def test_the_documented_official_run_works_offline_on_a_local_copy(tiny_gpt2_folder, tmp_path):
    # the documented command is `mibench evaluate --method eap-ig-inputs --task ioi --data official --model gpt2`
    status = main(["evaluate", "--method", "eap-ig-inputs", "--task", "ioi", "--data", "official", "--data-dir",
                   str(FIXTURES), "--model", str(tiny_gpt2_folder), "--method-arg", "ig_steps=2",
                   "--attribution-examples", "4", "--output-dir", str(tmp_path), *QUICK])
    assert status == 0
    record, folder = _record(tmp_path)
    official_test = load_official("ioi", "test", data_dir=FIXTURES)
    official_train = load_official("ioi", "train", data_dir=FIXTURES)
    assert record.task.data_hash == data_hash(official_test)  # scored on exactly the official rows
    assert record.task.n_examples == len(official_test) == 4  # GPT-2 BPE: every row tokenizes to equal lengths
    assert record.task.attribution_examples <= len(official_train) == 4
    assert record.task.counterfactual == "s2_io_flip" and record.method.id == "eap-ig-inputs"
    assert record.task.data_revision is None  # a local copy of an unpinned card: no revision to claim
    assert (folder / "scores.json").is_file()


def test_every_counterfactual_column_becomes_a_kind():
    """Oracle: the raw rows' ``<kind>_counterfactual`` columns (nested records), for every official task."""
    for task in FORMATS:
        for path in sorted((FIXTURES / task).rglob("*.jsonl")):
            rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
            config = path.parent.name if path.parent.name != task else None
            examples = load_official(task, path.stem, data_dir=FIXTURES, config=config)
            kept = {int(e.id.rsplit("/", 1)[1]) for e in examples}
            assert kept, path
            for index in kept:
                columns = {c[: -len(CF_SUFFIX)] for c in rows[index] if c.endswith(CF_SUFFIX)}
                example = next(e for e in examples if int(e.id.rsplit("/", 1)[1]) == index)
                assert set(example.counterfactuals) == columns, (path, index)


def test_mcqa_answer_count_configs_read_their_own_rows():
    from mibench.data.registry import get_card
    from mibench.pipeline import EvaluationRequest
    from mibench.pipeline.data import load_run_task

    request = EvaluationRequest(task="mcqa", model="gpt2-tasks", data="official", data_dir=str(FIXTURES),
                                data_config="2_answer_choices")
    two = load_run_task(request, get_card("mcqa")).examples("test")
    assert [e.variables["symbols"] for e in two] == [["A", "B"], ["A", "B"]]
    assert [e.answer for e in two] == [" A", " B"]
    request.data_config = None  # the card's config: 4 answer choices, DIR/mcqa/test.jsonl
    four = load_run_task(request, get_card("mcqa")).examples("test")
    assert all(len(e.variables["symbols"]) == 4 for e in four)
    assert load_run_task(request, get_card("mcqa")).causal_model() is not None  # the task's own causal model


def test_data_mistakes_are_one_line(random_task_model, tmp_path, capsys):
    base = ["evaluate", "--method", "eap", "--task", "ioi", "--model", str(random_task_model), "--output-dir",
            str(tmp_path), "--limit", "4", *QUICK]
    assert main([*base, "--data-dir", str(FIXTURES)]) == 2
    assert "--data-dir: options of the official data; add --data official" in capsys.readouterr().err
    assert main([*base, "--data", "official", "--data-dir", str(tmp_path / "empty")]) == 2
    assert "no local copy of task 'ioi', split 'test'" in capsys.readouterr().err
    assert main([*base, "--data", "official", "--data-dir", str(FIXTURES), "--counterfactual", "nope"]) == 2
    err = capsys.readouterr().err
    assert "has no 'nope' counterfactual" in err and "random_names_s1_ioi_flip" in err
    assert main(["evaluate", "--method", "eap", "--task", "induction", "--data", "official", "--quiet"]) == 2
    assert "has no official MIB dataset" in capsys.readouterr().err
    assert not list(tmp_path.rglob("record.json"))


@pytest.mark.slow
def test_the_causal_track_runs_on_official_rows(tmp_path):
    import shutil

    from mibench.results.causal_record import read_causal_record

    copy = tmp_path / "official"
    shutil.copytree(FIXTURES, copy)
    shutil.copy(copy / "mcqa" / "test.jsonl", copy / "mcqa" / "train.jsonl")  # a train split to fit on
    status = main(["evaluate", "--track", "causal", "--method", "full-vector", "--task", "mcqa", "--variable",
                   "answer_pointer", "--data", "official", "--data-dir", str(copy), "--layers", "1", "--output-dir",
                   str(tmp_path / "out"), *QUICK])
    assert status == 0
    record = read_causal_record(next((tmp_path / "out").rglob("record.json")))
    assert record.task.data_hash == data_hash(load_official("mcqa", "test", data_dir=copy))
    assert record.task.counterfactuals == ["answerPosition", "randomLetter", "answerPosition_randomLetter"]
    assert all(n >= 1 for n in record.task.test_pairs.values())  # the embedded model answers some rows right
