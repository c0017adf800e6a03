"""Position-aware (PEAP) against position-invariant (EAP) circuits on one task and model.

Prints, from one attribution on train examples and one evaluation on the test split:

1. CPR and CMD of each, each on its own graph (the leaderboard's numbers: sizes are fractions of that graph's
   edge count, 496 vs several thousand on the embedded models);
2. faithfulness at *matched edge budgets*: PEAP circuits with exactly as many (position-aware) edges as
   EAP's circuits at its ten sizes, absolute ranking;
3. the two position-summing effects of Haklay et al. (2025) on the top 1%, 5% and 10% of position-invariant edges,
   measured over the spans: *cancellation* (edges that are large at some span but whose span scores cancel
   when summed: in the top set by sum of |span score| but not by |sum|) and *over-estimation* (edges that
   are small at every span but add up: in the top set by |sum| but not by max |span score|).

With ``--json FILE`` it also writes these numbers as a comparison file (format ``mibench-peap-vs-eap/1``);
``mibench leaderboard build`` renders each file in ``leaderboard/comparisons/`` as a section of the leaderboard:

    python benchmarks/peap_vs_eap.py --model gpt2-tasks --task ioi
    python benchmarks/peap_vs_eap.py --model gpt2-tasks --task ioi \
        --json leaderboard/comparisons/peap_vs_eap__ioi__gpt2-tasks.json
"""

from __future__ import annotations

import argparse
import sys

import torch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="gpt2-tasks")
    parser.add_argument("--task", default="ioi")
    parser.add_argument("--attribution-examples", type=int, default=100)
    parser.add_argument("--test-examples", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", metavar="FILE", help="also write the numbers as a leaderboard comparison file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from mibench.circuits.attribution import attribute
    from mibench.circuits.batches import build_batches
    from mibench.circuits.faithfulness import evaluate_circuits
    from mibench.circuits.peap import peap_attribution, span_ids_for
    from mibench.circuits.positional_scorer import evaluate_positional, score_positional, select_positional
    from mibench.circuits.scorer import score_attribution
    from mibench.circuits.selection import FRACTIONS, circuits_at_sizes
    from mibench.circuits.areas import faithfulness
    from mibench.data.registry import load_task
    from mibench.engine import PatchingEngine
    from mibench.leaderboard.comparisons import MatchedBudget, PeapVsEap, PositionSumming, Scores, write_comparison
    from mibench.models.loading import load_model
    from mibench.pipeline.header import data_hash
    from mibench.results.environment import git_commit

    loaded = load_model(args.model)
    engine = PatchingEngine(loaded.adapter)
    task = load_task(args.task)
    card = task.card
    train = task.examples("train", args.attribution_examples)
    test = task.examples("test", args.test_examples)
    cf = card.default_counterfactual
    train_batches = build_batches(train, loaded.tokenizer, cf, args.batch_size).batches
    test_batches = build_batches(test, loaded.tokenizer, cf, args.batch_size).batches
    span_ids_of = span_ids_for([*train, *test], loaded.tokenizer, card.span_schema)

    eap = attribute(engine, train_batches)
    peap = peap_attribution(engine, train_batches, card.span_schema, span_ids_of)
    eap_score = score_attribution(engine, test_batches, eap, bootstrap=200)
    peap_score = score_positional(engine, test_batches, peap, span_ids_of, bootstrap=200)
    print(f"{args.task} on {args.model}: {len(peap.spans)} spans {peap.spans}")
    print(f"  graph sizes: position-invariant {eap.n_edges} edges; position-aware {peap.n_edges} "
          f"({peap.n_noncrossing} non-crossing + {peap.n_crossing} crossing)")
    print(f"  EAP  CPR {eap_score.cpr:.3f} ± {eap_score.cpr_stderr:.3f}   CMD {eap_score.cmd:.3f} ± {eap_score.cmd_stderr:.3f}")
    print(f"  PEAP CPR {peap_score.cpr:.3f} ± {peap_score.cpr_stderr:.3f}   CMD {peap_score.cmd:.3f} ± "
          f"{peap_score.cmd_stderr:.3f}")

    invariant = circuits_at_sizes(eap, absolute=True)
    budgets = [int(c.weighted_edge_count()) for c in invariant]
    matched = [select_positional(peap, n, absolute=True) for n in budgets]
    eap_eval = evaluate_circuits(engine, test_batches, invariant)
    peap_eval = evaluate_positional(engine, test_batches, matched, span_ids_of)
    f_eap = faithfulness(eap_eval.circuits.mean(1), eap_eval.full.mean(), eap_eval.empty.mean())
    f_peap = faithfulness(peap_eval.circuits.mean(1), peap_eval.full.mean(), peap_eval.empty.mean())
    print("\n  matched edge budgets (absolute ranking): edges -> faithfulness EAP / PEAP")
    for fraction, n, a, b in zip(FRACTIONS, budgets, f_eap, f_peap):
        print(f"    {100 * fraction:5g}% of EAP's graph: {n:4d} edges   {a:6.3f} / {b:6.3f}")

    spans = peap.edge_scores.double()  # [S, F, B]
    real = eap.real_edge_mask
    summed, magnitude, peak = spans.sum(0).abs()[real], spans.abs().sum(0)[real], spans.abs().amax(0)[real]
    print("\n  position summing on the top position-invariant edges: cancellation (top by sum |span score| not in\n"
          "  top by |sum|) and over-estimation (top by |sum| not in top by max |span score|)")
    summing = []
    for fraction in (0.01, 0.05, 0.10):
        k = max(1, int(fraction * eap.n_edges))

        def top(values: torch.Tensor, k: int = k) -> set[int]:
            return set(torch.argsort(-values, stable=True)[:k].tolist())

        cancellation = len(top(magnitude) - top(summed)) / k
        overestimation = len(top(summed) - top(peak)) / k
        print(f"    top {100 * fraction:3g}% (k = {k:3d}): cancellation {100 * cancellation:5.1f}%   "
              f"over-estimation {100 * overestimation:5.1f}%")
        summing.append(PositionSumming(fraction=fraction, k=k, cancellation=cancellation,
                                       overestimation=overestimation))
    if args.json:
        comparison = PeapVsEap(
            task=args.task, model=args.model, counterfactual=cf, attribution_examples=len(train),
            test_examples=len(test), spans=list(peap.spans), invariant_edges=int(eap.n_edges),
            positional_edges=int(peap.n_edges),
            eap=Scores(cpr=eap_score.cpr, cpr_stderr=eap_score.cpr_stderr, cmd=eap_score.cmd,
                       cmd_stderr=eap_score.cmd_stderr),
            peap=Scores(cpr=peap_score.cpr, cpr_stderr=peap_score.cpr_stderr, cmd=peap_score.cmd,
                        cmd_stderr=peap_score.cmd_stderr),
            matched=[MatchedBudget(fraction=fraction, edges=n, eap=float(a), peap=float(b))
                     for fraction, n, a, b in zip(FRACTIONS, budgets, f_eap, f_peap)],
            position_summing=summing, task_version=str(card.version), data_hash=data_hash(test),
            weights_sha256=loaded.weights_sha256, git_commit=git_commit())
        print(f"\n  wrote {write_comparison(comparison, args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
