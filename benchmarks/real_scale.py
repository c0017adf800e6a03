"""mibench at the real MIB model shapes: time and peak memory per phase, against the plain HF passes.

Builds random-weight models from the shipped published configs (``mibench/planning/mib_configs``; the
weights do not change the cost), and for each reports, on one batch of ``--batch`` random prompts of
``--seq`` tokens:

* time per phase (EAP, EAP-IG-inputs with 5 steps, the scorer's ten circuit sizes) as a ratio to the plain
  Hugging Face forward (the floor for evaluation) and to forward+backward (the floor for attribution:
  gradients with respect to the input embeddings, weights frozen, as attribution runs);
* peak memory per phase (RSS increase over the loaded model) as a ratio to the same two plain passes, and
  the planner's estimate of it.

    python benchmarks/real_scale.py                              # GPT-2-small and Qwen2.5-0.5B shapes
    python benchmarks/real_scale.py --models gpt2 --batch 2 --seq 12 --repeats 1   # smoke run
    python benchmarks/real_scale.py --device cuda --models gpt2,google/gemma-2-2b --batch 20 --seq 25

On a GPU the models are built there in bfloat16 (``--dtype``), timings synchronise the device, and peak
memory is ``torch.cuda.max_memory_allocated`` over the phase minus what was allocated before it.

Timings are the best of ``--repeats`` runs after one warm-up; take them on an otherwise idle machine
(peak memory stays valid on a busy one). Linux only (peak RSS from ``/proc``); it re-runs itself with a
fixed glibc mmap threshold so that RSS follows live tensors (see ``memory_plan.MALLOC_ENV``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sys
import time
from collections.abc import Callable

from memory_plan import MALLOC_ENV, _reset_peak, _rss_kb, estimate_mb, load_engine, random_batch, run_phase

DEFAULT_MODELS = ("gpt2", "Qwen/Qwen2.5-0.5B")
PHASES = ("eap", "eap-ig-inputs", "evaluation")


def timed_peak(fn: Callable[[], object], repeats: int, device: str = "cpu") -> tuple[float, float]:
    """(best seconds of ``repeats`` runs after a warm-up, peak memory increase in MB of one run)."""
    import torch

    cuda = device != "cpu"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    fn()
    gc.collect()
    sync()
    if cuda:
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        before = _rss_kb("VmRSS")
        _reset_peak()
    fn()
    sync()
    peak = ((torch.cuda.max_memory_allocated() - before) / 2**20) if cuda else (_rss_kb("VmHWM") - before) / 1024
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best, peak


def hf_passes(engine, batch) -> dict[str, Callable[[], object]]:
    """The plain HF forward, and forward+backward with respect to the input embeddings (weights frozen)."""
    import torch

    model = engine.adapter.model
    embed = model.get_input_embeddings()

    def forward():
        with torch.no_grad():
            return model(input_ids=batch.clean_ids, attention_mask=batch.attention_mask).logits

    def forward_backward():
        with engine.frozen_parameters():
            inputs = embed(batch.clean_ids).detach().requires_grad_(True)
            logits = model(inputs_embeds=inputs, attention_mask=batch.attention_mask).logits
            rows = torch.arange(batch.size)
            logits[rows, batch.last_positions, batch.answers].sum().backward()

    return {"hf forward": forward, "hf forward+backward": forward_backward}


def measure_model(model: str, batch_size: int, seq: int, repeats: int, device: str = "cpu",
                  dtype: str = "float32") -> dict:
    engine = load_engine(model, device, dtype)
    batch = random_batch(engine.adapter.model.config.vocab_size, batch_size, seq, device=device)
    results = {name: timed_peak(fn, repeats, device) for name, fn in hf_passes(engine, batch).items()}
    for phase in PHASES:
        results[phase] = timed_peak(lambda phase=phase: run_phase(engine, phase, batch), repeats, device)
    estimates = {phase: estimate_mb(model, batch_size, seq, phase, device, dtype) for phase in PHASES}
    fwd_s, fwd_mb = results["hf forward"]
    fb_s, fb_mb = results["hf forward+backward"]
    rows = {}
    for phase in PHASES:
        seconds, mb = results[phase]
        rows[phase] = {"seconds": seconds, "peak_mb": mb, "planned_mb": estimates[phase],
                       "time_vs_forward": seconds / fwd_s, "time_vs_forward_backward": seconds / fb_s,
                       "memory_vs_forward": mb / max(fwd_mb, 1e-9), "memory_vs_forward_backward": mb / max(fb_mb, 1e-9)}
    return {"model": model, "device": device, "dtype": dtype, "batch": batch_size, "seq": seq, "hf": {"forward": [fwd_s, fwd_mb],
                                                                    "forward_backward": [fb_s, fb_mb]},
            "phases": rows}


def main(argv: list[str] | None = None) -> int:
    if any(os.environ.get(k) != v for k, v in MALLOC_ENV.items()):
        os.execve(sys.executable, [sys.executable, *sys.argv], {**os.environ, **MALLOC_ENV})
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help="comma-separated MIB hub ids or model folders (default: %(default)s)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu or cuda[:N]")
    parser.add_argument("--dtype", default=None, help="float32 on CPU, bfloat16 on a GPU unless given")
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    out = []
    for model in [m for m in args.models.split(",") if m]:
        dtype = args.dtype or ("float32" if args.device == "cpu" else "bfloat16")
        result = measure_model(model, args.batch, args.seq, args.repeats, args.device, dtype)
        (fwd_s, fwd_mb), (fb_s, fb_mb) = result["hf"]["forward"], result["hf"]["forward_backward"]
        print(f"{model} ({args.device}, {dtype})  batch {args.batch} x {args.seq} tokens | HF forward {fwd_s:.3f} s, {fwd_mb:.0f} MB | "
              f"HF forward+backward {fb_s:.3f} s, {fb_mb:.0f} MB")
        for phase, row in result["phases"].items():
            print(f"  {phase:14s} {row['seconds']:8.3f} s = {row['time_vs_forward']:6.1f}x fwd, "
                  f"{row['time_vs_forward_backward']:5.1f}x fwd+bwd | peak {row['peak_mb']:8.1f} MB = "
                  f"{row['memory_vs_forward']:5.1f}x fwd, {row['memory_vs_forward_backward']:5.1f}x fwd+bwd "
                  f"(planned {row['planned_mb']:.0f} MB)", flush=True)
        out.append(result)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
