"""``mibench.evaluate`` / ``mibench.evaluate_causal``: the Python entry points give what the command line gives.

The oracle is the CLI itself: a run on a model object loaded in Python must publish the same files and
the same scores as ``mibench evaluate`` on that model's saved folder.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

import mibench
from mibench.cli import main
from mibench.errors import MibenchError
from mibench.results.causal_record import CausalRecord
from mibench.results.record import CircuitRecord, read_record

QUICK = {"limit": 16, "batch_size": 8, "bootstrap": 20, "progress": False}
QUICK_ARGS = ["--limit", "16", "--batch-size", "8", "--bootstrap", "20", "--quiet"]


def _files(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def test_import_mibench_stays_light():
    code = "import sys, mibench; mibench.evaluate; print('torch' in sys.modules)"
    light = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert light.stdout.strip() == "False"  # even the entry points import torch only when a run starts
    from mibench import api

    assert mibench.evaluate is api.evaluate and mibench.evaluate_causal is api.evaluate_causal


@pytest.fixture
def random_gpt2(random_task_model):
    """A random-weight GPT-2 built from a transformers config (no folder), with the test vocabulary's tokenizer."""
    import torch
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    tokenizer = AutoTokenizer.from_pretrained(random_task_model)
    torch.manual_seed(1)
    config = GPT2Config(vocab_size=len(tokenizer), n_layer=2, n_embd=32, n_head=4, n_positions=96,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.bos_token_id,
                        pad_token_id=tokenizer.pad_token_id, initializer_range=0.2)
    return GPT2LMHeadModel(config), tokenizer


def test_a_loaded_model_scores_as_its_saved_folder_does_from_the_cli(random_gpt2, tmp_path):
    model, tokenizer = random_gpt2
    result = mibench.evaluate("eap", "ioi", model, tokenizer, model_name="my-gpt2", output_dir=str(tmp_path / "api"),
                              attribution_examples=8, **QUICK)
    record = result.record
    assert isinstance(record, CircuitRecord) and record.model.id == "my-gpt2" and record.method.id == "eap"
    assert result.folder == tmp_path / "api" / "ioi" / "my-gpt2" / "eap_edge_patching_test_seed0"
    assert read_record(result.record_path) == record
    assert record.invocation[0].startswith("mibench.evaluate(method='eap', task='ioi', model='my-gpt2', ")

    folder = tmp_path / "my-gpt2"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert main(["evaluate", "--method", "eap", "--task", "ioi", "--model", str(folder), "--attribution-examples",
                 "8", "--output-dir", str(tmp_path / "cli"), *QUICK_ARGS]) == 0
    cli_folder = tmp_path / "cli" / "ioi" / "my-gpt2" / "eap_edge_patching_test_seed0"
    assert _files(cli_folder) == _files(result.folder) == ["examples.safetensors", "faithfulness.png", "record.json",
                                                         "scores.json"]
    cli = read_record(cli_folder / "record.json")
    assert cli.metrics.cpr == pytest.approx(record.metrics.cpr, rel=1e-5, abs=1e-6)
    assert cli.metrics.cmd == pytest.approx(record.metrics.cmd, rel=1e-5, abs=1e-6)
    assert cli.metrics.signed.faithfulness == pytest.approx(record.metrics.signed.faithfulness, rel=1e-5, abs=1e-6)
    assert cli.task.data_hash == record.task.data_hash and cli.model.n_edges == record.model.n_edges
    assert not model.training  # put in eval mode, as the loader does


def test_an_embedded_model_by_name_and_the_causal_track(tmp_path):
    circuit = mibench.evaluate("nap", "ioi", "gpt2-tasks", output_dir=str(tmp_path), attribution_examples=8,
                               level="neuron", **QUICK)
    assert circuit.record.model.id == "gpt2-tasks" and circuit.record.method.level == "neuron"
    assert (circuit.folder / "scores.json").is_file()
    causal = mibench.evaluate_causal("full-vector", "ioi", "output_token", output_dir=str(tmp_path), layers=[1],
                                     train_examples=16, **QUICK)
    assert isinstance(causal.record, CausalRecord) and causal.record.task.layers == [1]
    assert causal.folder.parent == circuit.folder.parent  # <output>/ioi/gpt2-tasks/ for both tracks
    assert (causal.folder / "record.json").is_file() and causal.record.model.id == "gpt2-tasks"


def test_a_loaded_model_on_the_causal_track(random_gpt2, tmp_path):
    model, tokenizer = random_gpt2
    try:
        result = mibench.evaluate_causal("full-vector", "ioi", "output_token", model, tokenizer,
                                         output_dir=str(tmp_path), layers=[0], train_examples=16, **QUICK)
    except MibenchError as exc:  # a random model answers (almost) nothing right: no pair survives the filter
        assert "survived the filter" in str(exc)
    else:
        assert result.record.model.family == "gpt2"


def test_mistakes_are_named(random_gpt2):
    model, tokenizer = random_gpt2
    with pytest.raises(MibenchError, match=r"unknown option 'batchsize'.*did you mean 'batch_size'"):
        mibench.evaluate("eap", "ioi", batchsize=4)
    with pytest.raises(MibenchError, match="needs its tokenizer"):
        mibench.evaluate("eap", "ioi", model)
    with pytest.raises(MibenchError, match="device: options for loading a model by name"):
        mibench.evaluate("eap", "ioi", model, tokenizer, device="cpu")
    with pytest.raises(MibenchError, match="tokenizer is passed only with a loaded model"):
        mibench.evaluate("eap", "ioi", "gpt2-tasks", tokenizer)
    with pytest.raises(MibenchError, match="not dict"):
        mibench.evaluate("eap", "ioi", {"not": "a model"}, tokenizer)
    with pytest.raises(AttributeError):
        mibench.no_such_function  # noqa: B018
