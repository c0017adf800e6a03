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
    python benchmarks/memory_plan.py --device cuda --rows mib   # MIB's four shapes in bfloat16 on a GPU

On a GPU (``--device cuda``) every row runs in this process and the measurement is
``torch.cuda.max_memory_allocated`` over the phase minus the memory allocated before it (the caching
allocator's reserve is not counted, as the planner adds it as headroom). ``--explain`` also lists the largest
tensors alive at each peak by the line of mibench that allocated them (GPU: the allocator's trace; CPU: a
second, traced run, see :class:`PeakTracer`): where an estimate is off, this says which term.

Peak RSS stays valid on a busy machine (only timings do not). Linux only (``/proc``).
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import json
import os
import subprocess
import sys
import traceback
from dataclasses import asdict, dataclass

def _rows(label: str, model: str, *runs: tuple[int, int, str]) -> list[tuple[str, str, int, int, str]]:
    """Rows ``(label, model, batch, seq, phase)``; a phase is a method id or "evaluation"."""
    return [(label, model, batch, seq, phase) for batch, seq, phase in runs]


#: Evaluation rows use batches at which the engine's ``max_delta_bytes`` bounds the stacked circuits (below
#: that, circuits pruned to nothing on these small graphs make the planner's count an upper bound).
CHEAP_ROWS = (_rows("gpt2-tasks", "gpt2-tasks", (32, 24, "eap"), (32, 24, "eap-ig-inputs"), (128, 24, "evaluation"),
                    (56, 24, "evaluation"))  # 21 circuits in chunks of 11 and 10
              + _rows("gpt2-medium-tasks", "gpt2-medium-tasks", (32, 24, "eap"), (32, 24, "eap-ig-inputs"),
                      (64, 24, "evaluation"))
              + _rows("llama-tasks (GQA)", "llama-tasks", (32, 24, "eap"), (32, 24, "eap-ig-inputs"),
                      (128, 24, "evaluation")))
LARGE_ROWS = (_rows("GPT-2-small shape", "gpt2", (8, 16, "eap"), (8, 16, "eap-ig-inputs"), (4, 16, "evaluation"))
              + _rows("Qwen2.5-0.5B shape", "Qwen/Qwen2.5-0.5B", (2, 16, "eap"), (2, 16, "eap-ig-inputs"),
                      (1, 16, "evaluation")))
#: MIB's four models at the leaderboard's batch size (20) and IOI's length, for a GPU (bfloat16).
MIB_ROWS = (_rows("GPT-2-small shape", "gpt2", (20, 25, "eap"), (20, 25, "eap-ig-inputs"), (20, 25, "evaluation"))
            + _rows("Qwen2.5-0.5B shape", "Qwen/Qwen2.5-0.5B", (20, 25, "eap"), (20, 25, "eap-ig-inputs"),
                    (20, 25, "evaluation"))
            + _rows("Gemma-2-2B shape", "google/gemma-2-2b", (20, 25, "eap"), (20, 25, "eap-ig-inputs"),
                    (20, 25, "evaluation"))
            + _rows("Llama-3.1-8B shape", "meta-llama/Llama-3.1-8B", (8, 25, "eap"), (8, 25, "eap-ig-inputs"),
                    (8, 25, "evaluation")))
#: glibc's malloc otherwise raises its mmap threshold after the first large free and then keeps freed
#: tensors of up to 32 MB in its heap, so RSS would measure the allocator's retention on top of the live
#: tensors the planner counts; a fixed threshold hands every freed tensor back to the kernel.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": "65536"}
ROWS = {"cheap": CHEAP_ROWS, "large": LARGE_ROWS, "all": CHEAP_ROWS + LARGE_ROWS, "mib": MIB_ROWS}


@dataclass
class Row:
    label: str
    model: str
    batch: int
    seq: int
    phase: str
    estimate_mb: float
    measured_mb: float
    device: str = "cpu"
    dtype: str = "float32"

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


def load_engine(model: str, device: str = "cpu", dtype: str = "float32"):
    """An engine on ``model``: an embedded/local model's own weights, else random weights of its shape."""
    import torch

    from mibench.engine.engine import PatchingEngine
    from mibench.models.adapter import adapter_for
    from mibench.planning.configs import random_model, resolve_config
    from mibench.zoo.catalog import is_zoo_model

    if is_zoo_model(model):
        from mibench.models.loading import load_model

        adapter = load_model(model, dtype=getattr(torch, dtype), device=device, load_tokenizer=False).adapter
    else:
        adapter = adapter_for(random_model(resolve_config(model), dtype=getattr(torch, dtype), device=device))
    return PatchingEngine(adapter)


def random_batch(vocab: int, batch: int, seq: int, seed: int = 0, device: str = "cpu"):
    import torch

    from mibench.circuits.batches import CircuitBatch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (2, batch, seq), generator=g).to(device)
    answers = torch.randint(0, vocab, (2, batch), generator=g).to(device)
    return CircuitBatch(ids[0], ids[1], torch.ones(batch, seq, dtype=torch.long, device=device), answers[0], answers[1],
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


def warmed_up_batch(engine, phase: str, batch_size: int, seq: int):
    """The measured batch, on the engine's device, after one run of the phase at batch 1 (so lazily created
    kernels, buffers and cuBLAS workspaces are not counted)."""
    vocab = engine.adapter.model.config.vocab_size
    device = str(engine.adapter.device)
    run_phase(engine, phase, random_batch(vocab, 1, seq, seed=1, device=device))
    batch = random_batch(vocab, batch_size, seq, device=device)
    gc.collect()
    return batch


def measure(model: str, batch_size: int, seq: int, phase: str, explain: bool = False) -> tuple[float, list]:
    """Peak RSS increase (MB) of one phase on one batch, in this process (see the module docstring); with
    ``explain``, a second, traced run lists what was alive at its peak (:class:`PeakTracer`)."""
    import torch

    torch.set_num_threads(1)
    engine = load_engine(model)
    batch = warmed_up_batch(engine, phase, batch_size, seq)
    before = _rss_kb("VmRSS")
    _reset_peak()
    run_phase(engine, phase, batch)
    peak = (_rss_kb("VmHWM") - before) / 1024
    breakdown = []
    if explain:
        from mibench.engine.deltas import BufferDeltaStore

        BufferDeltaStore._cache.clear()  # so the traced run allocates its delta buffer as the measured one did
        gc.collect()
        with PeakTracer() as tracer:
            run_phase(engine, phase, batch)
        breakdown = tracer.breakdown()
    return peak, breakdown


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                      "fsmblks", "uordblks", "fordblks", "keepcost")]


@functools.cache
def _mallinfo2():
    """glibc's ``mallinfo2``, loaded once (the tracer calls it after every operation)."""
    function = ctypes.CDLL("libc.so.6").mallinfo2
    function.restype = _MallInfo2
    return function


def _malloc_in_use() -> int:
    """Bytes glibc has handed out and not had back (heap and mmapped chunks)."""
    info = _mallinfo2()()
    return info.hblkhd + info.uordblks


OUTSIDE = "(outside mibench)"


def _mibench_line(filename: str, line: int) -> str | None:
    """``engine/deltas.py:39`` for a frame in the mibench package (not in this benchmark), else None."""
    if "/mibench/" not in filename or "benchmarks" in filename:
        return None
    return f"{filename.rsplit('mibench/', 1)[-1]}:{line}"


def _allocating_line() -> str:
    """The innermost line of mibench on the Python stack (``extract_stack`` lists the innermost last)."""
    lines = [_mibench_line(f.filename, f.lineno) for f in traceback.extract_stack()]
    return next((line for line in reversed(lines) if line), OUTSIDE)


def _largest_by_line(sizes: list[tuple[int, str]], top: int) -> list[tuple[str, float]]:
    """``(bytes, line)`` pairs summed per line, largest first, in MB."""
    by_line: dict[str, int] = {}
    for size, line in sizes:
        by_line[line] = by_line.get(line, 0) + size
    return sorted(((line, size / 2**20) for line, size in by_line.items()), key=lambda x: -x[1])[:top]


class PeakTracer:
    """CPU: samples glibc's bytes in use after every aten operation, and keeps the storages of at least
    1 MiB created meanwhile, with the mibench line that created them, as they were at the highest sample.
    A diagnostic (every op goes through Python); the measured peak comes from an untraced run."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        tracer = self

        class _Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                tracer._seen(out)
                return out

        self._mode = _Mode()
        self.live: dict[int, tuple[object, int, str]] = {}
        self.peak = 0
        self.at_peak: list[tuple[int, str]] = []

    def __enter__(self) -> "PeakTracer":
        self._base = _malloc_in_use()
        self._mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._mode.__exit__(*exc)

    def _seen(self, out) -> None:
        import torch
        from torch.multiprocessing.reductions import StorageWeakRef

        for tensor in out if isinstance(out, (tuple, list)) else (out,):
            if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().nbytes() >= 2**20:
                storage = tensor.untyped_storage()
                if storage._cdata not in self.live:
                    self.live[storage._cdata] = (StorageWeakRef(storage), storage.nbytes(), _allocating_line())
        self.live = {key: entry for key, entry in self.live.items() if not entry[0].expired()}
        in_use = _malloc_in_use() - self._base
        if in_use > self.peak:
            self.peak, self.at_peak = in_use, [(size, line) for _, size, line in self.live.values()]

    def breakdown(self, top: int = 12) -> list[tuple[str, float]]:
        return [("(in use at the traced peak, all allocations)", self.peak / 2**20),
                *_largest_by_line(self.at_peak, top)]


def measure_cuda(engine, batch_size: int, seq: int, phase: str, explain: bool = False) -> tuple[float, list]:
    """Peak allocated CUDA memory (MB) of one phase beyond what was allocated before it, in this process;
    with ``explain`` also the largest live tensors at that peak (see :func:`peak_breakdown`)."""
    import torch

    batch = warmed_up_batch(engine, phase, batch_size, seq)
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    if explain:
        torch.cuda.memory._record_memory_history(max_entries=500_000)
    run_phase(engine, phase, batch)
    torch.cuda.synchronize()
    peak = (torch.cuda.max_memory_allocated() - before) / 2**20
    breakdown = []
    if explain:
        breakdown = peak_breakdown(torch.cuda.memory._snapshot())
        torch.cuda.memory._record_memory_history(enabled=None)
    return peak, breakdown


def peak_breakdown(snapshot: dict, top: int = 12) -> list[tuple[str, float]]:
    """The tensors alive at the traced peak, summed by the innermost mibench line that allocated them (MB).

    Replays the allocator trace (allocations and completed frees) from the start of recording, so blocks
    allocated before it (the weights) are not counted."""
    live: dict[int, tuple[int, str]] = {}
    total = peak = 0
    at_peak: dict[int, tuple[int, str]] = {}
    for event in snapshot["device_traces"][0]:
        if event["action"] == "alloc":  # the allocator lists a block's frames innermost first
            lines = [_mibench_line(f["filename"], f["line"]) for f in event.get("frames", [])]
            live[event["addr"]] = (event["size"], next((line for line in lines if line), OUTSIDE))
            total += event["size"]
            if total > peak:
                peak, at_peak = total, dict(live)
        elif event["action"] == "free_completed" and event["addr"] in live:
            total -= live.pop(event["addr"])[0]
    return _largest_by_line(list(at_peak.values()), top)


# --------------------------------------------------------------------------------------------- parent
def estimate_mb(model: str, batch: int, seq: int, phase: str, device: str = "cpu", dtype: str = "float32") -> float:
    from mibench.planning.configs import resolve_config, shape_of
    from mibench.planning.memory import DTYPE_BYTES, PlanSettings, plan

    shape = shape_of(resolve_config(model))
    settings = PlanSettings(batch_size=batch, seq_len=seq, method="eap" if phase == "evaluation" else phase,
                            dtype_bytes=DTYPE_BYTES[dtype], device_type=device.split(":")[0])
    phases = {p.phase: p for p in plan(shape, settings)}
    return phases["evaluation" if phase == "evaluation" else "attribution"].working / 2**20


def measure_in_child(model: str, batch: int, seq: int, phase: str, explain: bool = False) -> tuple[float, list]:
    env = {**os.environ, **MALLOC_ENV, "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, __file__, "--child", json.dumps([model, batch, seq, phase, explain])],
                         check=True, capture_output=True, text=True, env=env)
    measured, breakdown = json.loads(out.stdout.strip().splitlines()[-1])
    return measured, [tuple(row) for row in breakdown]


def compare(rows, device: str = "cpu", dtype: str = "float32", explain: bool = False) -> list[Row]:
    """Each row's estimate against its measurement: in a fresh child process on CPU, in this process (one
    model load per model) on a GPU."""
    results = []
    engines: dict[str, object] = {}
    for label, model, batch, seq, phase in rows:
        breakdown = []
        if device == "cpu":
            measured, breakdown = measure_in_child(model, batch, seq, phase, explain)
        else:
            if model not in engines:
                engines.clear()
                gc.collect()
                engines[model] = load_engine(model, device, dtype)
            measured, breakdown = measure_cuda(engines[model], batch, seq, phase, explain)
        row = Row(label, model, batch, seq, phase, estimate_mb(model, batch, seq, phase, device, dtype), measured,
                  device, dtype)
        print(f"{label:22s} {phase:14s} B={batch:<3d} T={seq:<3d} estimate {row.estimate_mb:9.1f} MB  "
              f"measured {row.measured_mb:9.1f} MB  ratio {row.ratio:5.2f}", flush=True)
        for line, mb in breakdown:
            print(f"    {mb:9.1f} MB  {line}", flush=True)
        results.append(row)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", choices=sorted(ROWS), default="all")
    parser.add_argument("--json", help="also write the rows (estimate, measured, ratio) to this file")
    parser.add_argument("--device", default="cpu", help="cpu (peak RSS per child process) or cuda[:N]")
    parser.add_argument("--dtype", default=None, help="float32 on CPU, bfloat16 on a GPU unless given")
    parser.add_argument("--explain", action="store_true",
                        help="also list the largest tensors alive at each peak by the mibench line that made them")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        model, batch, seq, phase, explain = json.loads(args.child)
        print(json.dumps(measure(model, batch, seq, phase, explain)))
        return 0
    dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")
    if args.device == "cpu" and dtype != "float32":
        parser.error("on CPU the rows are measured in float32 (child processes); use --device cuda for other dtypes")
    results = compare(ROWS[args.rows], args.device, dtype, args.explain)
    if args.json:
        with open(args.json, "w") as f:
            json.dump([{**asdict(r), "ratio": r.ratio} for r in results], f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
