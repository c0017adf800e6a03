"""``--device auto`` and the default dtype per device; the GPU checks run only where CUDA is present."""

from __future__ import annotations

import pytest
import torch

import mibench
from mibench.cli import main
from mibench.models.loading import default_dtype, load_model, resolve_device
from mibench.results.record import read_record

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
QUICK = ["--limit", "16", "--batch-size", "8", "--bootstrap", "20", "--attribution-examples", "8", "--quiet"]
#: How far CPR/CMD may move between float32 on the CPU and the CUDA default dtype (benchmarks/precision.py
#: measured at most 0.024 for bfloat16 on the embedded models; a GPU adds only summation-order noise).
HALF_PRECISION_BOUND = 0.05


def test_auto_is_cuda_when_present_else_mps_else_cpu(monkeypatch):
    assert resolve_device("cuda:1") == "cuda:1" and resolve_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert resolve_device("auto") == "cpu"
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("auto") == "mps"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == "cuda"


def test_default_dtype_per_device(monkeypatch):
    assert default_dtype("cpu") == torch.float32 and default_dtype("mps") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert default_dtype("cuda") == torch.bfloat16 and default_dtype("cuda:1") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert default_dtype("cuda") == torch.float16


def test_a_half_precision_folder_loads_in_float32_on_cpu(random_task_model, tmp_path):
    half = load_model(random_task_model, dtype="bfloat16")
    assert half.adapter.dtype == torch.bfloat16
    half.model.save_pretrained(tmp_path)
    half.tokenizer.save_pretrained(tmp_path)
    assert load_model(tmp_path).adapter.dtype == torch.float32  # the CPU default, not the saved bfloat16
    assert load_model(tmp_path, dtype="bf16").adapter.dtype == torch.bfloat16  # asked for: as asked


def test_device_auto_runs_and_records_the_device_used(random_task_model, tmp_path):
    status = main(["evaluate", "--method", "eap", "--task", "ioi", "--model", str(random_task_model), "--device",
                   "auto", "--output-dir", str(tmp_path), *QUICK])
    assert status == 0
    record = read_record(next(tmp_path.rglob("record.json")))
    expected = resolve_device("auto")
    assert record.environment.hardware["device"] == expected
    assert record.model.dtype == str(default_dtype(expected)).replace("torch.", "")


@requires_cuda
def test_cuda_auto_uses_the_gpu_default_dtype_and_stays_within_the_bound(tmp_path):
    options = {"limit": 64, "bootstrap": 0, "attribution_examples": 32, "progress": False}
    cpu = mibench.evaluate("eap-ig-inputs", "ioi", "gpt2-tasks", device="cpu", dtype="float32",
                           output_dir=str(tmp_path / "cpu"), **options).record
    gpu = mibench.evaluate("eap-ig-inputs", "ioi", "gpt2-tasks", device="auto", output_dir=str(tmp_path / "gpu"),
                           **options).record
    assert gpu.environment.hardware["device"] == "cuda" and "gpu" in gpu.environment.hardware
    assert gpu.model.dtype == str(default_dtype("cuda")).replace("torch.", "")
    assert gpu.metrics.cpr == pytest.approx(cpu.metrics.cpr, abs=HALF_PRECISION_BOUND)
    assert gpu.metrics.cmd == pytest.approx(cpu.metrics.cmd, abs=HALF_PRECISION_BOUND)


@requires_cuda
def test_a_model_loaded_on_the_gpu_runs_through_the_python_api(tmp_path):
    loaded = load_model("gpt2-tasks", device="cuda", dtype="float32")
    result = mibench.evaluate("eap", "mcqa", loaded.model, loaded.tokenizer, model_name="gpt2-tasks",
                              output_dir=str(tmp_path), limit=32, bootstrap=0, attribution_examples=16,
                              progress=False)
    cpu = mibench.evaluate("eap", "mcqa", "gpt2-tasks", output_dir=str(tmp_path / "cpu"), limit=32, bootstrap=0,
                           attribution_examples=16, progress=False)
    assert result.record.environment.hardware["device"].startswith("cuda")
    assert result.record.metrics.cpr == pytest.approx(cpu.record.metrics.cpr, abs=1e-3)
