"""A data-driven span-schema suggester: which token roles matter, measured by per-position attribution.

For a new task the question "which spans should a position-aware circuit distinguish?" is answered from the
model's own computation, not guessed. Per example and token position ``t``, the saliency is

    s(t) = sum over source nodes u of | (a~_u[t] - a_u[t]) . dL/da_u[t] |        (L = -logit difference)

the first-order effect of mean-ablating every node's output at that position (node-level EAP with mean
ablation, kept per position; absolute per node so that opposite effects at one position do not cancel). It is normalised by the
example's largest value, so every example weighs the same.

Positions are then read through the task's roles: a role's saliency is the mean (over examples) of its
tokens' largest normalised saliency. The suggested schema keeps the roles above ``threshold`` as anchors in
prompt order, with the answer position (the card's last anchor, or ``END``) last; roles that overlap or
whose order changes between examples are left out, so the suggestion always fits the data
(:func:`mibench.data.span_schema.check_schema` runs on it). Salient tokens that no role covers are listed
too: they are where a new role (a span in the task's generator) would be worth adding.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from mibench.circuits.attribution import ablation_for_batch, pair_with_ablation
from mibench.circuits.batches import CircuitBatch, build_batches
from mibench.circuits.metrics import logit_difference
from mibench.data.card import SpanSchema
from mibench.data.example import Example
from mibench.data.span_schema import SchemaReport, check_schema
from mibench.data.tokenization import TokenizationError, encode, role_positions
from mibench.engine.ablation import Ablation, mean_ablation
from mibench.engine.engine import PatchingEngine, SourceGroup


def position_saliency(engine: PatchingEngine, batch: CircuitBatch, ablation: str = "mean",
                      reference: Ablation | None = None) -> Tensor:
    """``[B, T]``: ``sum_u |Delta_u[t] . dL/da_u[t]|`` per example and position (0 at padding).

    Mean ablation (the default; ``reference`` holds the means) gives every position a non-zero ``Delta``;
    counterfactual patching would leave every position before the first token that differs at exactly zero
    (causal attention), whatever its role."""
    return position_node_attribution(engine, batch, ablation, reference).abs().sum(1)


def position_node_attribution(engine: PatchingEngine, batch: CircuitBatch, ablation: str = "mean",
                              reference: Ablation | None = None) -> Tensor:
    """``[B, n_forward, T]``: ``Delta_u[t] . dL/da_u[t]`` per example, source node and position -- node-level
    attribution before it is summed over positions and examples (0 at padding). Mean ablation without a
    ``reference`` uses the batch's own means."""
    if ablation == "mean" and reference is None:
        reference = mean_ablation(engine, [(batch.clean_ids, batch.attention_mask)])
    batch_ablation = ablation_for_batch(engine, batch, ablation, reference)
    outputs: dict[int, Tensor] = {}

    def keep(group: SourceGroup, output: Tensor) -> Tensor:
        if group.kind == "input":  # gradients flow from the input; model parameters are frozen
            output = output.detach().requires_grad_(True)
        outputs[engine.groups.index(group)] = output
        if output.requires_grad:
            output.retain_grad()
        return output

    with engine.frozen_parameters():
        out = engine.forward(batch.clean_ids, batch.attention_mask, logit_positions=batch.last_positions,
                             edit_sources=keep, record=True)
        acts = pair_with_ablation(engine, out.sources.groups, batch_ablation)
        loss = -logit_difference(out.logits, batch.answers, batch.cf_answers).sum()
        loss.backward()
    parts = []
    for index, delta in enumerate(acts.deltas()):
        grad = outputs[index].grad
        per_unit = (delta.double() * grad.double()).sum(-1) if grad is not None else torch.zeros(delta.shape[:3],
                                                                                                 dtype=torch.float64)
        parts.append(per_unit.cpu())  # [B, U_g, T]
    return torch.cat(parts, 1) * batch.attention_mask.cpu()[:, None, :]


@dataclass
class RoleSaliency:
    role: str
    saliency: float  # mean over examples of the role's largest normalised position saliency
    mean_position: float  # mean token index (for ordering)
    examples: int


@dataclass
class SchemaSuggestion:
    schema: SpanSchema
    roles: list[RoleSaliency]
    uncovered: list[tuple[str, float, int]]  # (token text, mean normalised saliency, occurrences)
    report: SchemaReport
    left_out: dict[str, str] = field(default_factory=dict)  # role -> why it is not an anchor
    examples: int = 0

    def card_yaml(self) -> str:
        import yaml

        body = {"anchors": list(self.schema.anchors)}
        if self.schema.gap_names:
            body["gap_names"] = dict(self.schema.gap_names)
        return yaml.safe_dump({"span_schema": body}, sort_keys=False, default_flow_style=None)


def suggest_schema(engine: PatchingEngine, tokenizer: Any, examples: list[Example], roles: list[str], *,
                   counterfactual: str, answer_role: str = "END", threshold: float = 0.2, batch_size: int = 16,
                   top_uncovered: int = 8) -> SchemaSuggestion:
    """Measure per-position saliency on ``examples`` and propose anchors among ``roles``."""
    data = build_batches(examples, tokenizer, counterfactual, batch_size)
    means = mean_ablation(engine, [(b.clean_ids, b.attention_mask) for b in data.batches])
    by_id = {e.id: e for e in examples}
    peak: dict[str, list[float]] = defaultdict(list)
    where: dict[str, list[float]] = defaultdict(list)
    order_seen: dict[tuple[str, str], set[str]] = defaultdict(set)  # (a, b), a < b -> {"before", ...}
    uncovered: dict[str, list[float]] = defaultdict(list)
    used = 0
    for batch in data.batches:
        saliency = position_saliency(engine, batch, "mean", means)
        for row, example_id in enumerate(batch.example_ids):
            example = by_id[example_id]
            length = int(batch.attention_mask[row].sum())
            values = saliency[row, :length]
            top = float(values.max())
            if top <= 0:
                continue
            values = values / top
            present = {r: example.spans[r] for r in roles if r in example.spans}
            try:
                positions = role_positions(tokenizer, example.prompt, present)
            except TokenizationError:
                continue
            used += 1
            covered: set[int] = set()
            for role, tokens in positions.items():
                peak[role].append(float(values[tokens].max()))
                where[role].append(sum(tokens) / len(tokens))
                covered.update(tokens)
            for a in positions:
                for b in positions:
                    if a < b:
                        order_seen[(a, b)].add(_relation(positions[a], positions[b]))
            ids = encode(tokenizer, example.prompt)
            for t in range(length):
                if t not in covered and t != 0:
                    uncovered[tokenizer.decode([ids[t]]).strip()].append(float(values[t]))
    ranked = sorted((RoleSaliency(r, sum(v) / len(v), sum(where[r]) / len(where[r]), len(v))
                     for r, v in peak.items()), key=lambda rs: -rs.saliency)
    left_out: dict[str, str] = {}
    anchors: list[RoleSaliency] = []
    for candidate in sorted((rs for rs in ranked if rs.role != answer_role), key=lambda rs: rs.mean_position):
        if candidate.saliency < threshold:
            left_out[candidate.role] = f"saliency {candidate.saliency:.2f} < {threshold}"
            continue
        if _relation_set(order_seen, candidate.role, answer_role) != {"before"}:
            left_out[candidate.role] = f"does not always end before the answer position ({answer_role!r})"
            continue
        clash = next((a.role for a in anchors
                      if _relation_set(order_seen, a.role, candidate.role) not in ({"before"}, {"after"})), None)
        if clash is not None:
            left_out[candidate.role] = f"overlaps {clash!r} or changes order with it between examples"
            continue
        anchors.append(candidate)
    names = [a.role for a in anchors] + [answer_role]
    schema = SpanSchema(anchors=names)
    kept = [e for e in examples if e.id in {i for b in data.batches for i in b.example_ids}]
    report = check_schema(schema, kept, tokenizer)
    salient = sorted(((tok, sum(v) / len(v), len(v)) for tok, v in uncovered.items() if len(v) >= max(2, used // 10)),
                     key=lambda item: -item[1])
    return SchemaSuggestion(schema=schema, roles=ranked, uncovered=salient[:top_uncovered], report=report,
                            left_out=left_out, examples=used)


def _relation_set(seen: dict[tuple[str, str], set[str]], a: str, b: str) -> set[str]:
    """How role ``a`` lay relative to role ``b`` across the examples ({"before"}: always before)."""
    if a < b:
        return seen[(a, b)]
    flip = {"before": "after", "after": "before", "overlap": "overlap"}
    return {flip[r] for r in seen[(b, a)]}


def _relation(a: list[int], b: list[int]) -> str:
    """Whether token range ``a`` lies before, after, or overlapping range ``b``."""
    if a[-1] < b[0]:
        return "before"
    if b[-1] < a[0]:
        return "after"
    return "overlap"
