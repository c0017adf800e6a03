"""Speed of the circuit track's methods and scorer, as ratios to the plain Hugging Face passes.

* Attribution (EAP, EAP-IG-inputs with 5 steps) per batch, including its counterfactual and clean
  recording runs, against one plain forward+backward of the same model and batch with frozen weights
  (the floor for any gradient method). Targets: EAP <= 2.5x, EAP-IG-inputs <= 7x.
* The learned baselines per optimisation step, against the same forward+backward: a UGS step (``--ugs-samples``
  mask samples of the whole batch, stacked), an Edge Pruning step (one mask, the whole batch), and one step of
  the optimal-ablation fit (every node's copy of the batch). Each is the difference of a 3-step and a 1-step
  run over two, so the one-off recording runs cancel; a full run multiplies it by its step count.
* Evaluation of the ten circuit sizes (one ranking; and the full scorer with both rankings, as
  ``mibench evaluate`` runs it), including the counterfactual and clean runs, against one plain forward
  (target <= 4x).

    python benchmarks/circuit_speed.py                       # GPT-2-small shape, random weights
    python benchmarks/circuit_speed.py --model gpt2-tasks    # an embedded model on its own IOI data

Run nothing else on the machine meanwhile (2 cores: a second torch job distorts every number).

Times are the best of ``--repeats`` interleaved rounds (see ``engine_speed.best_times``).

On a CPU the ten-size ratio has a floor above 4 at GPT-2-small scale: from the 5 % circuit upwards every
MLP and nearly every head keeps an incoming and an outgoing edge, so each of the 5/10/20/50 % circuits
costs a forward's layer arithmetic (about 0.7 of an HF forward, which also unembeds every position) plus
its per-destination input sums, and the counterfactual and clean runs (one stacked forward) add about one
more. The complete and empty circuits are free (they are the clean and counterfactual runs). README.md
lists the measured values.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_speed import best_times, build_model  # noqa: E402

from mibench.circuits.attribution import attribute  # noqa: E402
from mibench.circuits.batches import CircuitBatch, build_batches  # noqa: E402
from mibench.circuits.faithfulness import evaluate_circuits  # noqa: E402
from mibench.circuits.method import AttributionContext, load_method  # noqa: E402
from mibench.circuits.scorer import score_attribution  # noqa: E402
from mibench.circuits.selection import circuits_at_sizes  # noqa: E402
from mibench.engine import PatchingEngine  # noqa: E402
from mibench.engine.optimal_ablation import OptimalAblationSettings, fit_optimal_ablation  # noqa: E402
from mibench.models.adapter import adapter_for  # noqa: E402


def random_batch(vocab: int, batch: int, seq: int) -> CircuitBatch:
    gen = torch.Generator().manual_seed(0)
    clean = torch.randint(0, vocab, (batch, seq), generator=gen)
    cf = clean.clone()
    cf[:, seq // 3 : seq // 3 + 2] = torch.randint(0, vocab, (batch, 2), generator=gen)
    answers, cf_answers = torch.randint(0, vocab, (2, batch), generator=gen)
    return CircuitBatch(clean, cf, torch.ones_like(clean), answers, cf_answers, [str(i) for i in range(batch)])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model id / folder / embedded name (default: random GPT-2-small shape)")
    parser.add_argument("--task", default="ioi", help="task whose data feeds --model (default: ioi)")
    parser.add_argument("--batch", type=int, default=20)
    parser.add_argument("--seq", type=int, default=20, help="tokens per prompt for the random model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds (default: 3)")
    parser.add_argument("--ugs-samples", type=int, default=12, help="UGS mask samples per step (default: MIB's 12)")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.model:
        from mibench.data.registry import get_card, load_task
        from mibench.models.loading import load_model

        loaded = load_model(args.model)
        model = loaded.model
        examples = load_task(args.task).examples("test", args.batch)
        batch = build_batches(examples, loaded.tokenizer, get_card(args.task).default_counterfactual,
                              args.batch).batches[0]
        description = f"{args.model} on {args.task} (batch {batch.size} x {batch.clean_ids.shape[1]} tokens)"
    else:
        model = build_model("gpt2", 12, 12, 768, 50257, torch.float32)
        batch = random_batch(50257, args.batch, args.seq)
        description = f"random GPT-2-small shape (batch {args.batch} x {args.seq} tokens)"
    engine = PatchingEngine(adapter_for(model))
    layout = engine.layout
    rows = torch.arange(batch.size)
    last = batch.last_positions

    for p in model.parameters():
        p.requires_grad_(False)
    embeds = model.get_input_embeddings()(batch.clean_ids).detach()

    def hf_forward():
        with torch.no_grad():
            model(batch.clean_ids, attention_mask=batch.attention_mask)

    def hf_forward_backward():
        logits = model(inputs_embeds=embeds.clone().requires_grad_(), attention_mask=batch.attention_mask).logits
        (logits[rows, last, batch.answers] - logits[rows, last, batch.cf_answers]).sum().backward()

    graph = attribute(engine, [batch])
    ten = circuits_at_sizes(graph, absolute=True)
    context = AttributionContext(engine, [batch])

    def learned(name: str, steps: int, **arguments):
        method = load_method(name, {"steps": steps, "prompts_per_step": batch.size, **arguments})
        return lambda: method.score(context)

    def optimal_fit(steps: int):
        settings = OptimalAblationSettings(max_steps=steps, prompts_per_step=batch.size)
        return lambda: fit_optimal_ablation(engine, [(batch.clean_ids, batch.attention_mask)], settings)

    seconds = best_times({
        "hf_forward": hf_forward,
        "hf_forward_backward_frozen": hf_forward_backward,
        "eap": lambda: attribute(engine, [batch]),
        "eap_ig_inputs_5": lambda: attribute(engine, [batch], interpolation="inputs", steps=5),
        "ten_sizes": lambda: evaluate_circuits(engine, [batch], ten),
        "scorer_both_rankings": lambda: score_attribution(engine, [batch], graph, bootstrap=0),
        "ugs_1_step": learned("ugs", 1, samples=args.ugs_samples),
        "ugs_3_steps": learned("ugs", 3, samples=args.ugs_samples),
        "edge_pruning_1_step": learned("edge-pruning", 1),
        "edge_pruning_3_steps": learned("edge-pruning", 3),
        "optimal_ablation_1_step": optimal_fit(1),
        "optimal_ablation_3_steps": optimal_fit(3),
    }, args.repeats)

    def per_step(name: str) -> float:
        return (seconds[f"{name}_3_steps"] - seconds[f"{name}_1_step"]) / 2

    fwd, fwd_bwd = seconds["hf_forward"], seconds["hf_forward_backward_frozen"]
    ratios = {
        "EAP attribution / HF fwd+bwd (target <= 2.5)": seconds["eap"] / fwd_bwd,
        "EAP-IG-inputs, 5 steps / HF fwd+bwd (target <= 7)": seconds["eap_ig_inputs_5"] / fwd_bwd,
        "10 sizes (one ranking, incl. cf + clean runs) / HF fwd (target <= 4)": seconds["ten_sizes"] / fwd,
        "scorer, both rankings (<= 20 circuits) / HF fwd": seconds["scorer_both_rankings"] / fwd,
        f"UGS, one step ({args.ugs_samples} mask samples x batch) / HF fwd+bwd": per_step("ugs") / fwd_bwd,
        "Edge Pruning, one step (one mask x batch) / HF fwd+bwd": per_step("edge_pruning") / fwd_bwd,
        f"optimal-ablation fit, one step ({layout.n_forward} nodes x batch) / HF fwd+bwd":
            per_step("optimal_ablation") / fwd_bwd,
    }
    print(f"model: {description}; {layout.n_layers} layers x {layout.n_heads} heads, d_model {layout.d_model}, "
          f"{layout.n_edges} edges; {args.threads} threads; torch {torch.__version__}")
    print(f"\n{'timing (best of ' + str(args.repeats) + ' interleaved rounds)':<60}{'seconds':>10}")
    for name, value in seconds.items():
        print(f"  {name:<58}{value:>10.3f}")
    print(f"\n{'ratio':<76}{'value':>8}")
    for name, value in ratios.items():
        print(f"  {name:<74}{value:>8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "seconds": seconds, "ratios": ratios}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
