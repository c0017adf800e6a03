"""Weight provenance: every record names its weights by content, and different weights never share a column."""

from __future__ import annotations

import shutil

import pytest
import torch

from mibench.models.loading import load_model
from mibench.models.weights_identity import files_sha256, state_dict_sha256, weight_files, weights_sha256
from mibench.results.record import ModelInfo, TaskInfo, ScorerInfo, comparability_key
from mibench.results.causal_record import CausalScorerInfo, CausalTaskInfo, causal_comparability_key


@pytest.fixture()
def retrained_copy(random_task_model, tmp_path):
    """The random task model's folder copied, with one weight changed by one float32 ulp: a 'retrained' model
    that has the same id, config and tokenizer, and no revision to tell it apart."""
    from safetensors.torch import load_file, save_file

    copy = tmp_path / "random_task_model"
    shutil.copytree(random_task_model, copy)
    (path,) = weight_files(copy)
    tensors = load_file(path)
    name = sorted(tensors)[0]
    tensors[name] = tensors[name].clone()
    flat = tensors[name].view(-1)
    flat[0] = torch.nextafter(flat[0], torch.tensor(float("inf")))
    save_file(tensors, path, metadata={"format": "pt"})
    return copy


def test_the_hash_is_of_the_file_content_not_of_the_load_dtype(random_task_model):
    fp32 = load_model(str(random_task_model), dtype="float32")
    bf16 = load_model(str(random_task_model), dtype="bfloat16")
    expected = files_sha256(weight_files(random_task_model))
    assert fp32.weights_sha256 == bf16.weights_sha256 == expected
    assert expected.startswith("sha256:") and len(expected) == len("sha256:") + 16


def test_a_one_ulp_change_changes_the_hash_and_the_key(random_task_model, retrained_copy):
    original = load_model(str(random_task_model), dtype="float32")
    retrained = load_model(str(retrained_copy), dtype="float32")
    assert original.weights_sha256 != retrained.weights_sha256

    def info(loaded):  # the same id (the zoo name), as a retrained zoo model would have
        return ModelInfo(id="gpt2-tasks", dtype="float32", family="gpt2", n_layers=2, n_heads=4, d_model=32,
                         n_edges=100, weights_sha256=loaded.weights_sha256)

    task = TaskInfo(id="ioi", version="2.0", split="test", counterfactual="abc", n_examples=5, data_hash="sha256:0")
    scorer = ScorerInfo(version="1.0", fractions=[1.0], bootstrap_replicates=10)
    keys = {comparability_key(task, info(m), scorer, "edge", position_aware=False, n_items=100)
            for m in (original, retrained)}
    assert len(keys) == 2
    causal_task = CausalTaskInfo(id="ioi", version="2.0", split="test", variable="output_token", counterfactuals=[],
                                 positions=[], layers=[], test_pairs={}, train_pairs=0, train_split="train",
                                 data_hash="sha256:0")
    causal_scorer = CausalScorerInfo(version="1.0", bootstrap_replicates=10, checker="x")
    assert len({causal_comparability_key(causal_task, info(m), causal_scorer) for m in (original, retrained)}) == 2


def test_an_already_loaded_model_is_hashed_by_its_state_dict(random_task_model):
    loaded = load_model(str(random_task_model), dtype="float32")
    model = loaded.model
    assert weights_sha256(model, None) == state_dict_sha256(model)
    before = state_dict_sha256(model)
    with torch.no_grad():
        next(model.parameters()).view(-1)[0] += 1.0
    assert state_dict_sha256(model) != before


def test_the_graph_is_part_of_the_circuit_key():
    model = ModelInfo(id="m", dtype="float32", family="gpt2", n_layers=2, n_heads=4, d_model=32, n_edges=100,
                      weights_sha256="sha256:0123456789abcdef")
    task = TaskInfo(id="ioi", version="2.0", split="test", counterfactual="abc", n_examples=5, data_hash="sha256:0")
    scorer = ScorerInfo(version="1.0", fractions=[1.0], bootstrap_replicates=10)
    mib = comparability_key(task, model, scorer, "edge", position_aware=False, n_items=496)
    positional = comparability_key(task, model, scorer, "edge", position_aware=True, n_items=4822)
    assert mib.endswith("|edge|graph@mib:496") and positional.endswith("|edge|graph@positional:4822")
    assert "m@local#sha256:0123456789abcdef" in mib


def test_zoo_records_carry_the_shipped_weights_hash():
    from mibench.zoo.catalog import model_path

    loaded = load_model("gpt2-tasks", load_tokenizer=False)
    assert loaded.weights_sha256 == files_sha256(weight_files(model_path("gpt2-tasks")))
