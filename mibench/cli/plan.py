"""``mibench plan``: will a run fit? Peak memory per phase, and the largest batch that fits a budget."""

from __future__ import annotations

import argparse

from mibench.cli.command import Command
from mibench.cli.options import LEVELS, dtype_name, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="embedded model, local model folder, or one of MIB's models by hub id "
                        "(gpt2, Qwen/Qwen2.5-0.5B, google/gemma-2-2b, meta-llama/Llama-3.1-8B); only its "
                        "configuration is read (default: the embedded GPT-2-architecture zoo model)")
    parser.add_argument("--task", required=True, help="task id (its prompts give the sequence length)")
    parser.add_argument("--method", required=True, help="circuit method or causal featurizer id")
    parser.add_argument("--level", choices=LEVELS, help="granularity (default: the method's first)")
    parser.add_argument("--method-arg", action="append", metavar="NAME=VALUE",
                        help="a method argument that changes memory, e.g. --method-arg ig_steps=10 (repeatable)")
    parser.add_argument("--batch-size", type=positive_int, default=32, metavar="N",
                        help="examples per forward to estimate (default: 32)")
    parser.add_argument("--seq-len", type=positive_int, metavar="T",
                        help="tokens per prompt (default: the task's longest prompt in the model's tokens, or "
                        "estimated from its words when the tokenizer is not available offline)")
    parser.add_argument("--dtype", type=dtype_name, metavar="DTYPE",
                        help="model dtype (default: bfloat16 on CUDA, else float32)")
    parser.add_argument("--device", default="cpu", help="device to plan for: cpu, cuda, cuda:N (default: cpu); "
                        "planning needs no such device, only --max-memory")
    parser.add_argument("--max-memory", metavar="SIZE", help="memory budget, e.g. 80GB, 40GiB (default: the "
                        "device's free memory, or 80%% of the available RAM on CPU)")
    parser.add_argument("--no-baseline", action="store_true", help="plan without the random baseline's circuits")
    parser.add_argument("--attribution-examples", type=positive_int, default=100, metavar="N",
                        help="train-split examples the method attributes on (default: 100)")
    parser.add_argument("--train-examples", type=positive_int, default=400, metavar="N",
                        help="causal track: train examples per counterfactual kind (default: 400)")
    parser.add_argument("--format", default="simple", metavar="FORMAT",
                        help="a tabulate table format (simple, github, ...) or 'json'")


def budget_from(max_memory: str | None, device: str) -> int:
    """``--max-memory`` in bytes, or the device's default budget."""
    from mibench.planning.budget import default_budget, parse_size

    return parse_size(max_memory) if max_memory else default_budget(device)


def run(args: argparse.Namespace) -> int:
    import json

    from tabulate import tabulate

    from mibench.cli.options import JSON_FORMAT, default_model
    from mibench.method_registry import parse_method_args
    from mibench.planning.budget import format_size, headroom
    from mibench.planning.run import plan_run

    model = args.model or default_model()
    budget = budget_from(args.max_memory, args.device)
    result = plan_run(model, args.task, args.method, batch_size=args.batch_size, seq_len=args.seq_len,
                      dtype=args.dtype, device=args.device, level=args.level,
                      method_args=parse_method_args(args.method_arg), baseline=not args.no_baseline,
                      attribution_examples=args.attribution_examples, train_examples=args.train_examples,
                      budget=budget)
    s = result.settings
    if args.format == JSON_FORMAT:
        print(json.dumps({
            "model": model, "task": args.task, "method": s.method, "level": s.level, "dtype": result.dtype,
            "device": args.device, "batch_size": s.batch_size, "seq_len": s.seq_len,
            "seq_len_source": result.seq_len_source, "n_params": result.shape.n_params, "budget_bytes": budget,
            "fits": result.fits, "largest_batch": result.largest_batch,
            "phases": [{"phase": p.phase, "weights_bytes": p.weights, "working_bytes": p.working,
                        "peak_bytes": p.peak, "terms": p.terms} for p in result.phases],
        }, indent=2))
        return 0
    print(f"{model} ({result.shape.n_params:,} parameters, {result.dtype}) | task {args.task}, "
          f"{s.seq_len} tokens ({result.seq_len_source}) | {s.method} at {s.level} level, batch {s.batch_size}")
    rows = [[p.phase, format_size(p.weights), format_size(p.working), format_size(p.peak), p.largest_term]
            for p in result.phases]
    print(tabulate(rows, headers=["phase", "weights", "working memory", "peak", "largest term"],
                   tablefmt=args.format))
    factor = headroom(s.device_type)
    verdict = "fits" if result.fits else "does NOT fit"
    print(f"\nbatch {s.batch_size} {verdict} in {format_size(budget)} (weights + {factor}x working memory for "
          "the allocator's headroom)")
    if result.largest_batch:
        print(f"largest batch that fits: {result.largest_batch}  (mibench evaluate --batch-size auto picks it)")
    else:
        print("not even batch 1 fits: use a smaller dtype, a larger device, or fewer interpolation steps")
    return 0


COMMAND = Command(
    name="plan",
    help="will it fit? peak memory per phase of a run, and the largest batch that fits a budget",
    description="Estimates, without loading any weights, the peak memory of each phase of 'mibench evaluate': "
    "loading the weights, the method's attribution (or featurizer training on the causal track) and the "
    "scorer's evaluation of the ten circuit sizes, counted from the tensors the engine keeps (see "
    "docs/planning.md). Prints a table per phase and the largest batch that fits --max-memory.",
    examples=(
        ("mibench plan --task ioi --method eap-ig-inputs", "the embedded model on this machine's RAM"),
        ("mibench plan --model meta-llama/Llama-3.1-8B --task ioi --method eap-ig-inputs --device cuda "
         "--max-memory 80GB", "MIB's largest model on an 80 GB GPU"),
        ("mibench plan --model gpt2 --task ioi --method eap --batch-size 20 --format json", "JSON for scripts"),
        ("mibench plan --model Qwen/Qwen2.5-0.5B --task mcqa --method das --device cuda --max-memory 24GB",
         "causal track: DAS featurizer training"),
    ),
    add_arguments=add_arguments,
    run=run,
)
