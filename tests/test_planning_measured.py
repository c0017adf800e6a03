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
    """EAP and EAP-IG-inputs on three embedded shapes (MHA GPT-2s and a grouped-query Llama) within +-25 %, and
    the scorer's evaluation (where the engine's ``max_delta_bytes`` bounds the stacked circuits) as an upper
    bound."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import memory_plan
    finally:
        sys.path.remove(str(BENCHMARKS))
    rows = memory_plan.compare(memory_plan.CHEAP_ROWS)
    attribution = [row for row in rows if row.phase != "evaluation"]
    assert {row.model for row in attribution} >= {"gpt2-tasks", "gpt2-medium-tasks", "llama-tasks"}
    assert {row.phase for row in attribution} == {"eap", "eap-ig-inputs"}
    off = [(row.label, row.phase, round(row.ratio, 2)) for row in attribution if not 0.75 <= row.ratio <= 1.25]
    assert not off, f"measured / estimated attribution peak outside [0.75, 1.25]: {off}"
    # evaluation: an upper bound (the engine skips heads that small circuits do not use), and not a loose one
    off = [(row.label, round(row.ratio, 2)) for row in rows if row.phase == "evaluation" and not 0.6 <= row.ratio <= 1.25]
    assert not off, f"measured / estimated evaluation peak outside [0.6, 1.25]: {off}"


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
