"""Speed of the causal track's interchange training and evaluation, as ratios to plain Hugging Face passes
and to pyvene doing the same intervention.

One DAS training step (interchange at one layer and position, cross-entropy of the label, backward into
the rotation only, AdamW step) on a batch of (base, source) pairs, timed three ways:

* mibench: base residuals and source vectors cached once per site, only the blocks after the layer run,
  and with the edit at the last token only the last position's queries/MLPs are computed (suffix mode);
* pyvene 0.1.8: ``IntervenableModel`` with ``LowRankRotatedSpaceIntervention``, which re-runs the source
  and the whole base model every step;
* the floor: one plain HF forward+backward of the base batch with frozen weights.

Evaluation (one hard interchange forward over the batch) is compared the same way against one HF forward.

    python benchmarks/causal_speed.py                       # GPT-2-small shape, random weights
    python benchmarks/causal_speed.py --model gpt2-tasks    # an embedded model

Run nothing else on the machine meanwhile (2 cores: a second torch job distorts every number).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from engine_speed import build_model, timed  # noqa: E402

from mibench.causal.featurizer import Interchange, SubspaceFeaturizer  # noqa: E402
from mibench.causal.interventions import LayerCache, intervened_logits, label_loss  # noqa: E402
from mibench.causal.pairs import PairSet, Sequences  # noqa: E402
from mibench.engine.residual import ResidualRunner  # noqa: E402
from mibench.models.adapter import adapter_for  # noqa: E402


def random_pairs(vocab: int, batch: int, seq: int, position: int) -> PairSet:
    gen = torch.Generator().manual_seed(0)
    base, source = torch.randint(0, vocab, (2, batch, seq), generator=gen)
    mask = torch.ones(batch, seq, dtype=torch.long)
    read = torch.full((batch, 1), seq - 1)
    answers = torch.randint(0, vocab, (batch, 1), generator=gen)
    real = torch.ones(batch, 1, dtype=torch.bool)
    at = {"site": torch.full((batch,), position)}
    return PairSet("random", Sequences(base, mask, read, answers, real), Sequences(source, mask, read, answers, real),
                   at, dict(at), [str(i) for i in range(batch)], ["?"] * batch, Counter())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="embedded model name or folder (default: random GPT-2-small shape)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=24, help="tokens per prompt")
    parser.add_argument("--k", type=int, default=16, help="DAS subspace dimension")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    if args.model:
        from mibench.models.loading import load_model

        model = load_model(args.model).model
        description = args.model
    else:
        model = build_model("gpt2", 12, 12, 768, 50257, torch.float32)
        description = "random GPT-2-small shape"
    for p in model.parameters():
        p.requires_grad_(False)
    runner = ResidualRunner(adapter_for(model))
    vocab = model.config.vocab_size
    layer = runner.n_layers // 2
    description += f" ({runner.n_layers} layers, d_model {runner.d_model}), batch {args.batch} x {args.seq} tokens, " \
                   f"DAS k={args.k} at layer {layer}"

    seconds: dict[str, float] = {}
    probe = random_pairs(vocab, args.batch, args.seq, args.seq - 1)
    ids, mask = probe.base.ids, probe.base.mask
    rows = torch.arange(args.batch)
    with torch.no_grad():
        seconds["hf_forward"] = timed(lambda: model(ids, attention_mask=mask), args.repeats)
    embeds = model.get_input_embeddings()(ids).detach()

    def hf_forward_backward():
        logits = model(inputs_embeds=embeds.clone().requires_grad_(), attention_mask=mask).logits
        logits[rows, -1, probe.base.answer_ids[:, 0]].sum().backward()

    seconds["hf_forward_backward_frozen"] = timed(hf_forward_backward, args.repeats)

    for name, position in (("last token", args.seq - 1), ("middle token", args.seq // 2)):
        pairs = random_pairs(vocab, args.batch, args.seq, position)
        torch.manual_seed(0)
        interchange = Interchange(SubspaceFeaturizer(runner.d_model, args.k))
        optimizer = torch.optim.AdamW(interchange.parameters(), lr=1e-2, weight_decay=0.0)
        site = LayerCache(runner, pairs, layer, batch_size=args.batch).site("site")
        seconds[f"site cache ({name})"] = timed(
            lambda: LayerCache(runner, pairs, layer, batch_size=args.batch).site("site"), args.repeats)

        def ours_step():
            logits = intervened_logits(runner, interchange, site, rows, training=True)
            loss = label_loss(logits, pairs.base.answer_ids, pairs.base.answer_mask)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()

        def ours_eval():
            with torch.no_grad():
                intervened_logits(runner, interchange, site, rows, training=False)

        seconds[f"mibench DAS step ({name})"] = timed(ours_step, args.repeats)
        seconds[f"mibench interchange eval ({name})"] = timed(ours_eval, args.repeats)
        try:
            seconds.update(_pyvene(model, pairs, layer, args.k, name, args.repeats))
        except ImportError:
            print("pyvene is not installed: its timings are skipped")

    fwd, fwd_bwd = seconds["hf_forward"], seconds["hf_forward_backward_frozen"]
    ratios = {}
    for name in ("last token", "middle token"):
        ratios[f"mibench DAS step / HF fwd+bwd ({name})"] = seconds[f"mibench DAS step ({name})"] / fwd_bwd
        ratios[f"mibench interchange eval / HF fwd ({name})"] = seconds[f"mibench interchange eval ({name})"] / fwd
        if f"pyvene DAS step ({name})" in seconds:
            ratios[f"pyvene DAS step / HF fwd+bwd ({name})"] = seconds[f"pyvene DAS step ({name})"] / fwd_bwd
            ratios[f"pyvene DAS step / mibench DAS step ({name})"] = (seconds[f"pyvene DAS step ({name})"]
                                                                       / seconds[f"mibench DAS step ({name})"])
            ratios[f"pyvene eval / mibench eval ({name})"] = (seconds[f"pyvene interchange eval ({name})"]
                                                              / seconds[f"mibench interchange eval ({name})"])
    print(f"model: {description}; {args.threads} threads; torch {torch.__version__}")
    print(f"\n{'timing (best of >= ' + str(args.repeats) + ' runs)':<60}{'seconds':>10}")
    for name, value in seconds.items():
        print(f"  {name:<58}{value:>10.4f}")
    print(f"\n{'ratio':<70}{'value':>8}")
    for name, value in ratios.items():
        print(f"  {name:<68}{value:>8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "seconds": seconds, "ratios": ratios}, indent=2))
    return 0


def _pyvene(model, pairs: PairSet, layer: int, k: int, name: str, repeats: int) -> dict[str, float]:
    """The same DAS step and evaluation through pyvene (the reference implementation MIB builds on)."""
    import pyvene as pv

    config = pv.IntervenableConfig([{"layer": layer, "component": "block_output", "unit": "pos",
                                     "intervention_type": pv.LowRankRotatedSpaceIntervention,
                                     "low_rank_dimension": k}])
    intervenable = pv.IntervenableModel(config, model)
    intervenable.disable_model_gradients()
    parameters = [p for p in intervenable.interventions.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(parameters, lr=1e-2, weight_decay=0.0)
    base, source = pairs.base, pairs.source
    locations = {"sources->base": ([[[int(p)] for p in pairs.source_positions["site"]]],
                                   [[[int(p)] for p in pairs.base_positions["site"]]])}
    rows = torch.arange(len(pairs))

    def run():
        _, out = intervenable({"input_ids": base.ids, "attention_mask": base.mask},
                              [{"input_ids": source.ids, "attention_mask": source.mask}], unit_locations=locations)
        return out.logits[rows, base.read_positions[:, 0]]

    def step():
        loss = torch.nn.functional.cross_entropy(run(), base.answer_ids[:, 0])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def evaluate():
        with torch.no_grad():
            run()

    return {f"pyvene DAS step ({name})": timed(step, repeats), f"pyvene interchange eval ({name})": timed(evaluate, repeats)}


if __name__ == "__main__":
    sys.exit(main())
