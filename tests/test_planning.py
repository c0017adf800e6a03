"""The memory planner: shipped MIB shapes, config resolution, and formulas checked against what the engine
really keeps (autograd's saved tensors, the engine's own chunking rules), plus ``mibench plan``."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

from mibench.cli import main
from mibench.planning.budget import BudgetError, parse_size
from mibench.planning.configs import MIB_MODELS, PlanningError, random_model, resolve_config, shape_of
from mibench.planning.memory import (
    CPU_MAX_DELTA_BYTES,
    PREFIX_CACHE_BYTES,
    PlanSettings,
    circuits_per_forward,
    fits,
    largest_batch,
    plan,
    points_per_pass,
    saved_per_token,
    stacked_circuits,
)

#: Published parameter counts and MIB's edge counts of its four models.
PUBLISHED = {
    "gpt2": (124_439_808, 32_491),
    "Qwen/Qwen2.5-0.5B": (494_032_768, 179_749),
    "google/gemma-2-2b": (2_614_341_888, 74_218),
    "meta-llama/Llama-3.1-8B": (8_030_261_248, 1_592_881),
}


@pytest.mark.parametrize("model", MIB_MODELS)
def test_shipped_configs_have_the_published_sizes(model):
    from mibench.graph.graph import Graph

    config = resolve_config(model)
    n_params, n_edges = PUBLISHED[model]
    assert shape_of(config).n_params == n_params
    assert Graph.from_hf_config(config).n_edges == n_edges


def test_config_resolution_reads_folders_and_zoo_models_and_refuses_unknown_hub_ids(tmp_path):
    zoo = resolve_config("gpt2-tasks")
    assert zoo.model_type == "gpt2"
    resolve_config("google/gemma-2-2b").save_pretrained(tmp_path)
    assert resolve_config(str(tmp_path)).model_type == "gemma2"
    with pytest.raises(PlanningError, match="not available offline"):
        resolve_config("someone/unknown-model")


def _tiny(model: str, dtype: torch.dtype):
    """A 2-layer random-weight model of the family (and grouping) of one of MIB's models."""
    config = resolve_config(model)
    if config.model_type == "gpt2":
        config.update({"n_layer": 2, "n_embd": 64, "n_head": 4})
    else:
        config.update({"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 96, "head_dim": 16,
                       "num_attention_heads": 4, "num_key_value_heads": 2 if config.model_type != "gpt2" else 4})
    config.vocab_size = 50
    return config, random_model(config, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("model", MIB_MODELS)
def test_saved_activations_equal_what_autograd_keeps(model, dtype):
    """The oracle: the bytes autograd actually saves in the engine's attribution pass (every saved tensor's
    storage, parameters excluded) equal ``saved_per_token`` up to per-row statistics."""
    from mibench.engine.engine import PatchingEngine
    from mibench.models.adapter import adapter_for

    config, hf_model = _tiny(model, dtype)
    engine = PatchingEngine(adapter_for(hf_model))
    rows, seq = 3, 7
    ids = torch.randint(0, config.vocab_size, (rows, seq))
    saved: dict[int, int] = {}

    def pack(tensor):
        saved[tensor.untyped_storage().data_ptr()] = tensor.untyped_storage().nbytes()
        return tensor

    def from_clean(group, output):
        return output.detach().requires_grad_(True) if group.kind == "input" else output

    with engine.frozen_parameters(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        engine.forward(ids, logit_positions=torch.full((rows,), seq - 1), edit_sources=from_clean,
                       on_receiver_grad=lambda *args: None)
    params = {p.untyped_storage().data_ptr() for p in hf_model.parameters()}
    measured = sum(n for ptr, n in saved.items() if ptr not in params)
    shape = shape_of(config)
    formula = shape.n_layers * rows * seq * saved_per_token(shape, dtype.itemsize, seq, per_head_copies=True)
    assert formula <= measured <= formula * 1.05


def test_chunking_rules_are_the_engines():
    from mibench.causal import interventions
    from mibench.circuits.attribution import _points_per_pass
    from mibench.circuits.batches import CircuitBatch
    from mibench.engine.engine import PatchingEngine
    from mibench.models.adapter import adapter_for

    config, hf_model = _tiny("gpt2", torch.float32)
    engine = PatchingEngine(adapter_for(hf_model), max_delta_bytes=CPU_MAX_DELTA_BYTES)
    assert PatchingEngine(adapter_for(hf_model)).max_delta_bytes == CPU_MAX_DELTA_BYTES
    assert interventions.PREFIX_CACHE_BYTES == PREFIX_CACHE_BYTES
    shape = shape_of(config)
    for batch, seq in [(1, 5), (64, 40), (4096, 64)]:
        ids = torch.zeros(batch, seq, dtype=torch.long)
        circuit_batch = CircuitBatch(ids, ids, torch.ones_like(ids), ids[:, 0], ids[:, 0], [""] * batch)
        settings = PlanSettings(batch_size=batch, seq_len=seq, ig_steps=5)
        assert points_per_pass(shape, settings) == _points_per_pass(engine, circuit_batch, 5)
        n = stacked_circuits(shape, settings)
        chunk = engine._circuits_per_forward(_StackedMask(n), (batch, seq))
        assert circuits_per_forward(shape, settings) == (chunk or n)


class _StackedMask:
    """What ``PatchingEngine._circuits_per_forward`` reads of a stacked mask."""

    def __init__(self, n: int) -> None:
        self.n_circuits = n


def test_largest_batch_is_the_boundary_of_what_fits():
    shape = shape_of(resolve_config("gpt2"))
    settings = PlanSettings(batch_size=1, seq_len=20, method="eap-ig-inputs")
    budget = parse_size("4GiB")
    best = largest_batch(shape, settings, budget)
    assert best > 1
    assert fits(plan(shape, replace(settings, batch_size=best)), budget, "cpu")
    assert not any(fits(plan(shape, replace(settings, batch_size=b)), budget, "cpu") for b in range(best + 1, 4097))
    assert largest_batch(shape, settings, parse_size("100MB")) == 0  # the weights alone are ~500 MB


def test_phase_peaks_grow_with_the_batch_and_ig_steps():
    shape = shape_of(resolve_config("Qwen/Qwen2.5-0.5B"))
    small = PlanSettings(batch_size=4, seq_len=20, method="eap-ig-inputs", device_type="cuda", dtype_bytes=2)
    peaks = [max(p.peak for p in plan(shape, replace(small, batch_size=b))) for b in (1, 4, 16, 64)]
    assert peaks == sorted(peaks) and peaks[0] < peaks[-1]
    eap = plan(shape, replace(small, method="eap"))[1]
    assert eap.phase == "attribution" and eap.peak < plan(shape, small)[1].peak


@pytest.mark.parametrize("text,expected", [("80GB", 80 * 10**9), ("40GiB", 40 * 2**30), ("1.5G", int(1.5 * 2**30)),
                                           ("512 MB", 512 * 10**6), ("1000", 1000)])
def test_sizes_parse(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["eighty", "80XB", "-1GB", "0"])
def test_bad_sizes_are_refused(text):
    with pytest.raises(BudgetError, match="--max-memory"):
        parse_size(text)


def test_plan_command_prints_every_phase_as_json(capsys):
    code = main(["plan", "--model", "meta-llama/Llama-3.1-8B", "--task", "ioi", "--method", "eap-ig-inputs",
                 "--device", "cuda", "--max-memory", "80GB", "--seq-len", "20", "--format", "json"])
    out = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [p["phase"] for p in out["phases"]] == ["load", "attribution", "evaluation"]
    assert out["phases"][0]["weights_bytes"] == 8_030_261_248 * 2
    assert 1 <= out["largest_batch"] < 64


def test_plan_command_table_and_user_errors(capsys):
    assert main(["plan", "--task", "ioi", "--method", "eap", "--max-memory", "1GB"]) == 0
    out = capsys.readouterr().out
    assert "attribution" in out and "evaluation" in out and "largest batch that fits" in out
    assert main(["plan", "--model", "nobody/model", "--task", "ioi", "--method", "eap", "--max-memory", "1GB"]) == 2
    assert main(["plan", "--task", "ioi", "--method", "eap", "--max-memory", "lots"]) == 2
    err = capsys.readouterr().err
    assert "not available offline" in err and "--max-memory" in err and "Traceback" not in err


def test_evaluate_batch_size_auto_refuses_what_cannot_fit(capsys):
    base = ["evaluate", "--method", "eap", "--task", "ioi", "--batch-size", "auto"]
    assert main([*base, "--max-memory", "1MB"]) == 2
    assert main([*base, "--track", "causal", "--variable", "io", "--max-memory", "1GB"]) == 2
    assert main(["evaluate", "--method", "eap", "--task", "ioi", "--batch-size", "many"]) == 2
    err = capsys.readouterr().err
    assert "not even one example fits" in err and "plans the circuit track" in err and "'many'" in err
    assert "Traceback" not in err


def test_causal_featurizers_plan_their_training():
    shape = shape_of(resolve_config("Qwen/Qwen2.5-0.5B"))
    das = plan(shape, PlanSettings(batch_size=32, seq_len=20, method="das", dtype_bytes=2, device_type="cuda"))
    assert [p.phase for p in das] == ["load", "featurizer training"]
    assert das[1].terms["rotation, its gradient and AdamW state"] == 16 * 896 * 896
    with pytest.raises(PlanningError, match="no memory model"):
        plan(shape, PlanSettings(batch_size=1, seq_len=5, method="edge-pruning"))
