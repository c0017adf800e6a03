"""The benchmark scripts run end to end (on tiny shapes), so they cannot rot between measurements."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def _run(script: str, *args: str, tmp_path: Path) -> dict:
    out = tmp_path / "result.json"
    subprocess.run([sys.executable, str(BENCHMARKS / script), *args, "--json", str(out)], check=True,
                   capture_output=True, text=True, timeout=600)
    return json.loads(out.read_text())


@pytest.mark.slow
def test_engine_benchmark_reports_every_ratio(tmp_path):
    result = _run("engine_speed.py", "--layers", "2", "--heads", "2", "--width", "32", "--vocab", "64",
                  "--repeats", "1", "--min-seconds", "0", tmp_path=tmp_path)
    assert all(value > 0 for value in result["seconds"].values())
    assert any("random 5% circuit" in name for name in result["ratios"])
    assert any("one by one (MIB-style" in name for name in result["ratios"])


@pytest.mark.slow
def test_circuit_benchmark_on_an_embedded_model(tmp_path):
    result = _run("circuit_speed.py", "--model", "gpt2-tasks", "--repeats", "1", "--batch", "4", "--ugs-samples", "2",
                  tmp_path=tmp_path)
    assert set(result["seconds"]) >= {"hf_forward", "eap", "eap_ig_inputs_5", "ten_sizes", "ugs_3_steps",
                                      "edge_pruning_3_steps", "optimal_ablation_3_steps"}
    # per-step ratios are differences of two timings (noise could push one below 0 on a busy machine)
    per_step = [name for name in result["ratios"] if "one step" in name]
    assert len(per_step) == 3 and all(math.isfinite(result["ratios"][name]) for name in per_step)
    assert all(value > 0 for name, value in result["ratios"].items() if name not in per_step)


@pytest.mark.slow
def test_sweep_benchmark_makes_every_run_both_ways(tmp_path):
    pytest.importorskip("ray")
    result = _run("sweep_speed.py", "--tasks", "ioi", "mcqa", "--methods", "random", "--limit", "2",
                  tmp_path=tmp_path)
    assert result["matrix"]["runs"] == 2
    assert result["seconds"]["sequential"] > 0 and result["seconds"]["ray"] > 0
    assert result["ratio_sequential_over_ray"] > 0
