"""The planner against measured memory (slow: each measurement is a fresh process on CPU, where every torch
allocation is resident memory)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


@pytest.mark.slow
def test_estimates_are_within_a_quarter_of_measured_peaks_on_the_embedded_models():
    """EAP, EAP-IG-inputs and the scorer's evaluation (where the engine's ``max_delta_bytes`` bounds the stacked
    circuits) on three embedded shapes (MHA GPT-2s and a grouped-query Llama) within +-25 %."""
    memory_plan = _benchmark("memory_plan")
    rows = memory_plan.compare(memory_plan.CHEAP_ROWS)
    assert {row.model for row in rows} >= {"gpt2-tasks", "gpt2-medium-tasks", "llama-tasks"}
    assert {row.phase for row in rows} == {"eap", "eap-ig-inputs", "evaluation"}
    off = [(row.label, row.phase, round(row.ratio, 2)) for row in rows if not 0.75 <= row.ratio <= 1.25]
    assert not off, f"measured / estimated peak outside [0.75, 1.25]: {off}"


def _benchmark(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="glibc's mallinfo2 on Linux")
def test_the_peak_tracer_names_the_line_that_allocated_the_largest_live_tensor():
    """``memory_plan.py --explain`` on CPU: what the tracer reports at its peak is what was alive there."""
    import torch

    from mibench.engine.deltas import BufferDeltaStore

    tracer_cls = _benchmark("memory_plan").PeakTracer
    with tracer_cls() as tracer:
        store = BufferDeltaStore(4, 2, 8, 4096, torch.float32, torch.device("cpu"), reuse=False)  # 1 MiB
        kept = store.buffer.add(1)  # noqa: F841  (alive at the peak)
        freed = torch.ones(512, 1024)  # 2 MiB, freed before the peak below
        del freed
        bigger = torch.zeros(4, 2, 8, 4096) + 2  # the peak: buffer, kept, bigger
    rows = dict(tracer.breakdown())
    assert [mb for line, mb in rows.items() if line.startswith("engine/deltas.py:")] == [pytest.approx(1.0)]
    assert rows["(in use at the traced peak, all allocations)"] >= 3.0
    assert bigger.shape == kept.shape


CHILD = """
import gc, json, sys
from mibench.models.loading import load_model
load_model("gpt2-tasks")  # imports and one load: the baseline a run's own load and work come on top of
gc.collect()

def kb(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

before = kb("VmRSS")
open("/proc/self/clear_refs", "w").write("5")
from mibench.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, "increase": (kb("VmHWM") - before) * 1024}))
"""


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="peak RSS needs Linux's /proc")
def test_auto_batch_size_keeps_a_run_within_max_memory(tmp_path):
    """``--batch-size auto --max-memory X``: the run's peak RSS increase (its own model load, data and work,
    over a process that has imported everything and loaded a model once) stays under X, with the default
    allocator."""
    budget = 250 * 10**6
    args = ["evaluate", "--method", "eap-ig-inputs", "--task", "ioi", "--limit", "64", "--attribution-examples", "64",
            "--batch-size", "auto", "--max-memory", "250MB", "--bootstrap", "0", "--output-dir", str(tmp_path)]
    proc = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    chosen = re.search(r"--batch-size auto: (\d+)", proc.stderr)
    assert result["code"] == 0 and chosen and int(chosen.group(1)) > 1
    assert 0 < result["increase"] <= budget


@pytest.mark.slow
def test_real_scale_benchmark_reports_every_phase_against_the_hf_passes(tmp_path):
    out = tmp_path / "real_scale.json"
    subprocess.run([sys.executable, str(BENCHMARKS / "real_scale.py"), "--models", "gpt2-tasks", "--batch", "2",
                    "--seq", "8", "--repeats", "1", "--json", str(out)], check=True, capture_output=True, text=True,
                   timeout=600)
    (result,) = json.loads(out.read_text())
    assert set(result["phases"]) == {"eap", "eap-ig-inputs", "evaluation"}
    for row in result["phases"].values():
        assert row["seconds"] > 0 and row["time_vs_forward"] > 0 and row["planned_mb"] > 0
