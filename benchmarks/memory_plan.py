"""The memory planner's estimates against measured peaks, one fresh process per measurement.

Each row runs one phase (attribution with a method, or the scorer's evaluation of the ten circuit sizes)
on one batch of ``B`` random prompts of ``T`` tokens, in a child process, on CPU, where every torch
allocation is resident memory. The child loads the model, runs the phase once at batch 1 (so lazily
initialised kernels and buffers are not counted), resets the kernel's peak-RSS counter
(``/proc/self/clear_refs``), runs the phase at batch ``B`` and reports ``VmHWM`` minus the RSS before it:
the phase's working memory, which the planner's estimate (without the weights) is compared to. The child
runs with a fixed glibc mmap threshold (see ``MALLOC_ENV``), so its RSS follows the live tensors.

    python benchmarks/memory_plan.py                      # the default rows (a few minutes)
    python benchmarks/memory_plan.py --rows cheap         # embedded models only (what the slow test runs)
    python benchmarks/memory_plan.py --json out.json

Peak RSS stays valid on a busy machine (only timings do not). Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
from dataclasses import asdict, dataclass

def _rows(label: str, model: str, *runs: tuple[int, int, str]) -> list[tuple[str, str, int, int, str]]:
    """Rows ``(label, model, batch, seq, phase)``; a phase is a method id or "evaluation"."""
    return [(label, model, batch, seq, phase) for batch, seq, phase in runs]


#: Evaluation rows use batches at which the engine's ``max_delta_bytes`` bounds the stacked circuits (below
#: that, circuits pruned to nothing on these small graphs make the planner's count an upper bound).
CHEAP_ROWS = (_rows("gpt2-tasks", "gpt2-tasks", (32, 24, "eap"), (32, 24, "eap-ig-inputs"), (128, 24, "evaluation"))
              + _rows("gpt2-medium-tasks", "gpt2-medium-tasks", (32, 24, "eap"), (32, 24, "eap-ig-inputs"),
                      (64, 24, "evaluation"))
              + _rows("llama-tasks (GQA)", "llama-tasks", (32, 24, "eap"), (32, 24, "eap-ig-inputs"),
                      (128, 24, "evaluation")))
LARGE_ROWS = (_rows("GPT-2-small shape", "gpt2", (8, 16, "eap"), (8, 16, "eap-ig-inputs"), (4, 16, "evaluation"))
              + _rows("Qwen2.5-0.5B shape", "Qwen/Qwen2.5-0.5B", (2, 16, "eap"), (2, 16, "eap-ig-inputs"),
                      (1, 16, "evaluation")))
#: glibc's malloc otherwise raises its mmap threshold after the first large free and then keeps freed
#: tensors of up to 32 MB in its heap, so RSS would measure the allocator's retention on top of the live
#: tensors the planner counts; a fixed threshold hands every freed tensor back to the kernel.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
ROWS = {"cheap": CHEAP_ROWS, "large": LARGE_ROWS, "all": CHEAP_ROWS + LARGE_ROWS}


@dataclass
class Row:
    label: str
    model: str
    batch: int
    seq: int
    phase: str
    estimate_mb: float
    measured_mb: float

    @property
    def ratio(self) -> float:
        return self.measured_mb / self.estimate_mb


# ---------------------------------------------------------------------------------------------- child
def _rss_kb(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def _reset_peak() -> None:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def load_engine(model: str):
    """An engine on ``model``: an embedded/local model's own weights, else random weights of its shape."""
    import torch

    from mibench.engine.engine import PatchingEngine
    from mibench.models.adapter import adapter_for
    from mibench.planning.configs import random_model, resolve_config
    from mibench.zoo.catalog import is_zoo_model

    if is_zoo_model(model):
        from mibench.models.loading import load_model

        adapter = load_model(model, dtype=torch.float32, load_tokenizer=False).adapter
    else:
        adapter = adapter_for(random_model(resolve_config(model), dtype=torch.float32))
    return PatchingEngine(adapter)


def random_batch(vocab: int, batch: int, seq: int, seed: int = 0):
    import torch

    from mibench.circuits.batches import CircuitBatch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2, batch, seq), generator=g)
    answers = torch.randint(0, vocab, (2, batch), generator=g)
    return CircuitBatch(ids[0], ids[1], torch.ones(batch, seq, dtype=torch.long), answers[0], answers[1],
                        [str(i) for i in range(batch)])


def run_phase(engine, phase: str, batch) -> None:
    """One batch of one phase, through the same functions the pipeline calls."""
    import torch

    from mibench.circuits.attribution import attribute
    from mibench.circuits.scorer import score_attribution
    from mibench.graph.graph import Graph
    from mibench.planning.memory import INTERPOLATION

    if phase == "evaluation":
        g = torch.Generator().manual_seed(1)
        graph, baseline = Graph(engine.layout), Graph(engine.layout)
        graph.edge_scores = torch.randn(graph.edge_scores.shape, generator=g) * graph.real_edge_mask
        baseline.edge_scores = torch.randn(graph.edge_scores.shape, generator=g) * graph.real_edge_mask
        score_attribution(engine, [batch], graph, baseline=baseline, bootstrap=0)
        return
    attribute(engine, [batch], level="edge", interpolation=INTERPOLATION[phase], steps=5)


def measure(model: str, batch_size: int, seq: int, phase: str) -> float:
    """Peak RSS increase (MB) of one phase on one batch, in this process (see the module docstring)."""
    import torch

    torch.set_num_threads(1)
    engine = load_engine(model)
    vocab = engine.adapter.model.config.vocab_size
    run_phase(engine, phase, random_batch(vocab, 1, seq, seed=1))  # warm-up: kernels, lazy buffers
    batch = random_batch(vocab, batch_size, seq)
    gc.collect()
    before = _rss_kb("VmRSS")
    _reset_peak()
    run_phase(engine, phase, batch)
    return (_rss_kb("VmHWM") - before) / 1024


# --------------------------------------------------------------------------------------------- parent
def estimate_mb(model: str, batch: int, seq: int, phase: str) -> float:
    from mibench.planning.configs import resolve_config, shape_of
    from mibench.planning.memory import PlanSettings, plan

    shape = shape_of(resolve_config(model))
    settings = PlanSettings(batch_size=batch, seq_len=seq, method="eap" if phase == "evaluation" else phase)
    phases = {p.phase: p for p in plan(shape, settings)}
    return phases["evaluation" if phase == "evaluation" else "attribution"].working / 2**20


def measure_in_child(model: str, batch: int, seq: int, phase: str) -> float:
    env = {**os.environ, **MALLOC_ENV, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps([model, batch, seq, phase])],
                         check=True, capture_output=True, text=True, env=env)
    return float(out.stdout.strip().splitlines()[-1])


def compare(rows) -> list[Row]:
    results = []
    for label, model, batch, seq, phase in rows:
        row = Row(label, model, batch, seq, phase, estimate_mb(model, batch, seq, phase),
                  measure_in_child(model, batch, seq, phase))
        print(f"{label:22s} {phase:14s} B={batch:<3d} T={seq:<3d} estimate {row.estimate_mb:9.1f} MB  "
              f"measured {row.measured_mb:9.1f} MB  ratio {row.ratio:5.2f}", flush=True)
        results.append(row)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", choices=sorted(ROWS), default="all")
    parser.add_argument("--json", help="also write the rows (estimate, measured, ratio) to this file")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        model, batch, seq, phase = json.loads(args.child)
        print(measure(model, batch, seq, phase))
        return 0
    results = compare(ROWS[args.rows])
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{**asdict(r), "ratio": r.ratio} for r in results], f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
