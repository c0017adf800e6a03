"""Models loaded with an accelerate ``device_map`` run through the engine (:mod:`mibench.engine.placement`).

On a CPU-only machine: ``device_map="auto"`` and a manual per-module map (both land on the CPU) load and
give the plain HF logits through the engine. The placement wrapper, forced onto a one-device model,
changes no result of a forward, a patched forward or an attribution. Weights offloaded to ``meta`` are
refused. The tests that split a model over devices need CUDA and are skipped here: the CPU and one GPU,
or two GPUs.
"""

from __future__ import annotations

import pytest
import torch

from mibench.circuits.attribution import attribute
from mibench.circuits.batches import CircuitBatch
from mibench.engine import CircuitMask, PatchingEngine
from mibench.engine.ablation import Ablation
from mibench.engine.placement import PlacedAdapter, placed_adapter
from mibench.engine.residual import ResidualRunner
from mibench.errors import MibenchError
from mibench.models.adapter import adapter_for
from mibench.models.tiny import tiny_model

pytest.importorskip("accelerate")

FAMILIES = ["gpt2", "llama"]
two_gpus = pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
one_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def _saved(family: str, folder) -> str:
    tiny_model(family, n_layers=2).save_pretrained(folder)
    return str(folder)


def _batch(seed: int = 0, batch: int = 3, seq: int = 6) -> CircuitBatch:
    gen = torch.Generator().manual_seed(seed)
    clean = torch.randint(3, 101, (batch, seq), generator=gen)
    cf = clean.clone()
    cf[:, 1:3] = torch.randint(3, 101, (batch, 2), generator=gen)
    answers, cf_answers = torch.randint(3, 101, (2, batch), generator=gen)
    return CircuitBatch(clean, cf, torch.ones(batch, seq, dtype=torch.long), answers, cf_answers,
                        [f"ex{i}" for i in range(batch)])


def _layer_map(family: str, devices: list[str]) -> dict[str, str]:
    """A manual device map: the embeddings on the first device, layer i on ``devices[i]``, the rest on the last."""
    if family == "gpt2":
        first = {"transformer.wte": devices[0], "transformer.wpe": devices[0], "transformer.drop": devices[0]}
        layers = {f"transformer.h.{i}": d for i, d in enumerate(devices)}
        last = {"transformer.ln_f": devices[-1], "lm_head": devices[-1]}
    else:
        first = {"model.embed_tokens": devices[0], "model.rotary_emb": devices[0]}
        layers = {f"model.layers.{i}": d for i, d in enumerate(devices)}
        last = {"model.norm": devices[-1], "lm_head": devices[-1]}
    return {**first, **layers, **last}


def _load(folder: str, device_map):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, device_map=device_map, dtype=torch.float32,
                                                 attn_implementation="eager")
    return model.eval()


def _engine_logits(model, data: CircuitBatch) -> torch.Tensor:
    with torch.no_grad():
        return PatchingEngine(adapter_for(model)).forward(data.clean_ids, data.attention_mask,
                                                          logit_positions="all").logits


def _hf_logits(model, data: CircuitBatch) -> torch.Tensor:
    with torch.no_grad():
        return model(data.clean_ids.to(model.device), attention_mask=data.attention_mask.to(model.device)).logits


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("device_map", ["auto", "layers"])
def test_device_map_loaded_model_runs_exactly(family, device_map, tmp_path):
    folder = _saved(family, tmp_path / "model")
    model = _load(folder, _layer_map(family, ["cpu", "cpu"]) if device_map == "layers" else "auto")
    assert {p.device.type for p in model.parameters()} == {"cpu"}
    data = _batch()
    torch.testing.assert_close(_engine_logits(model, data).cpu(), _hf_logits(model, data).cpu(),
                               rtol=1e-5, atol=1e-5)


def _placement_results(adapter, data: CircuitBatch) -> list[torch.Tensor]:
    """A plain forward, a patched forward with a random partial circuit, EAP scores and a residual run."""
    engine = PatchingEngine(adapter)
    keep = (torch.rand(engine.layout.n_forward, engine.layout.n_backward,
                       generator=torch.Generator().manual_seed(1)) > 0.5).double()
    with torch.no_grad():
        plain = engine.forward(data.clean_ids, data.attention_mask, logit_positions="all").logits
        ablation = Ablation.patching(engine, data.cf_ids, data.attention_mask)
        patched = engine.forward(data.clean_ids, data.attention_mask, mask=CircuitMask(keep), ablation=ablation,
                                 logit_positions=data.last_positions).logits
        residual = ResidualRunner(adapter).forward(data.clean_ids, data.attention_mask)
    scores = attribute(engine, [data]).edge_scores
    return [x.detach().cpu() for x in (plain, patched, scores, residual)]


@pytest.mark.parametrize("family", [*FAMILIES, "gemma2"])
def test_placement_wrapper_changes_no_result(family):
    model = tiny_model(family, n_layers=2, dtype=torch.float64)
    data = _batch(seed=2)
    plain = adapter_for(model)
    assert placed_adapter(plain) is plain  # one device: nothing is wrapped
    placed = placed_adapter(adapter_for(model), force=True)
    assert isinstance(placed, PlacedAdapter) and placed.device == torch.device("cpu")
    for ours, reference in zip(_placement_results(placed, data), _placement_results(plain, data), strict=True):
        torch.testing.assert_close(ours, reference, rtol=0, atol=0)


def test_offloaded_weights_are_refused():
    model = tiny_model("gpt2", n_layers=2)
    model.lm_head.weight = torch.nn.Parameter(torch.empty_like(model.lm_head.weight, device="meta"))
    with pytest.raises(MibenchError, match="meta"):
        PatchingEngine(adapter_for(model))


def _check_split(family: str, devices: list[str], tmp_path) -> None:
    """The model split over ``devices`` gives the one-device model's logits, patched logits and scores."""
    folder = _saved(family, tmp_path / "model")
    spread = _load(folder, _layer_map(family, devices))
    single = _load(folder, {"": devices[0]})
    placed = PatchingEngine(adapter_for(spread)).adapter
    assert isinstance(placed, PlacedAdapter) and placed.device == torch.device(devices[0])
    data = _batch(seed=4)
    torch.testing.assert_close(_engine_logits(spread, data).cpu(), _hf_logits(single, data).cpu(),
                               rtol=1e-4, atol=1e-4)
    for ours, reference in zip(_placement_results(adapter_for(spread), data),
                               _placement_results(adapter_for(single), data), strict=True):
        torch.testing.assert_close(ours, reference, rtol=1e-4, atol=1e-4)


@one_gpu
@pytest.mark.parametrize("family", FAMILIES)
def test_model_split_over_cpu_and_gpu_runs(family, tmp_path):
    _check_split(family, ["cuda:0", "cpu"], tmp_path)


@two_gpus
@pytest.mark.parametrize("family", FAMILIES)
def test_model_split_over_two_gpus_runs(family, tmp_path):
    _check_split(family, ["cuda:0", "cuda:1"], tmp_path)
