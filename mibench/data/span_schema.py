"""Position-aware schemas: one list of named token spans that segments every prompt of a task.

Position-aware circuits (Haklay et al., 2025) give each node one copy per *span* of the prompt instead of one
per token, so examples of different lengths share one abstract graph. A task declares its schema in its
card (``span_schema``, :class:`~mibench.data.card.SpanSchema`) as *anchors*, roles of the card in prompt
order; the spans are then, in order::

    prefix            every token before the first anchor (BOS included; may be empty)
    A1                the tokens of the first anchor's role
    A1+ (or a name)   the tokens between A1 and A2 (may be empty; a schema can also say that A2 follows A1
                      immediately, and then there is no gap span)
    ...
    A_last            the prompt's final token: the answer position, always a span of its own

If the last anchor's role covers more than the final token (MCQA's ``"Answer:"``), its other tokens join the
gap before it. :func:`token_spans` maps one prompt to concrete ``[start, end)`` token ranges;
:func:`check_schema` tells, for every example, whether the schema applies (anchors present, in order, not
overlapping, the last at the final token), so a schema is validated against data, not assumed.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from mibench.data.card import SpanSchema
from mibench.data.example import Example, Span
from mibench.data.tokenization import TokenizationError, encode, role_positions
from mibench.errors import MibenchError

PREFIX = "prefix"


class SchemaError(MibenchError, ValueError):
    """A prompt the schema does not fit; the message names the example and the anchor."""


def span_names(schema: SpanSchema) -> list[str]:
    """The spans in prompt order: prefix, then each anchor followed by its gap (none after the last)."""
    names = [PREFIX]
    for anchor in schema.anchors[:-1]:
        names.append(anchor)
        gap = _gap_name(schema, anchor)
        if gap is not None:
            names.append(gap)
    return names + [schema.anchors[-1]]


def _gap_name(schema: SpanSchema, anchor: str) -> str | None:
    return schema.gap_names.get(anchor, f"{anchor}+")


def token_spans(tokenizer: Any, prompt: str, spans: dict[str, Span], schema: SpanSchema, *,
                where: str = "prompt") -> list[tuple[int, int]]:
    """``[start, end)`` token positions (BOS at 0) of every span of :func:`span_names`, covering the whole
    prompt in order; raises :class:`SchemaError` naming ``where`` when the schema does not fit it."""
    missing = [a for a in schema.anchors if a not in spans]
    if missing:
        raise SchemaError(f"{where}: has no {missing[0]!r} span (the schema's anchors are {schema.anchors})")
    n_tokens = len(encode(tokenizer, prompt))
    try:
        positions = role_positions(tokenizer, prompt, {a: spans[a] for a in schema.anchors})
    except TokenizationError as exc:
        raise SchemaError(f"{where}: {exc}") from None
    last = schema.anchors[-1]
    if positions[last][-1] != n_tokens - 1:
        raise SchemaError(f"{where}: the last anchor {last!r} ends at token {positions[last][-1]}, not at the final "
                          f"token {n_tokens - 1} (the answer position must be the last span)")
    ranges = [(positions[a][0], positions[a][-1] + 1) for a in schema.anchors[:-1]] + [(n_tokens - 1, n_tokens)]
    out: list[tuple[int, int]] = []
    cursor = 0
    for i, (anchor, (start, end)) in enumerate(zip(schema.anchors, ranges, strict=True)):
        before = schema.anchors[i - 1] if i else None
        if start < cursor:
            raise SchemaError(f"{where}: anchor {anchor!r} (tokens {start}-{end - 1}) does not come after "
                              f"{before!r} (which ends at token {cursor - 1})")
        if before is not None and _gap_name(schema, before) is None:
            if start != cursor:
                raise SchemaError(f"{where}: anchor {anchor!r} should follow {before!r} immediately, but tokens "
                                  f"{cursor}-{start - 1} lie between them")
        else:
            out.append((cursor, start))  # the prefix, or the gap after the previous anchor
        out.append((start, end))
        cursor = end
    return out


@dataclass
class SchemaReport:
    """How a schema fits a set of examples (clean and counterfactual prompts)."""

    names: list[str]
    prompts: int = 0
    failures: list[str] = field(default_factory=list)  # one message per prompt the schema does not fit
    empty: Counter = field(default_factory=Counter)  # span -> prompts in which it holds no token
    lengths: dict[str, list[int]] = field(default_factory=dict)  # span -> its token count in every fitting prompt

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> list[dict[str, Any]]:
        """One row per span: how often it is empty, and its token count range."""
        rows = []
        for name in self.names:
            counts = self.lengths.get(name, [])
            rows.append({"span": name, "empty in": f"{self.empty[name]}/{len(counts)}",
                         "tokens": f"{min(counts)}-{max(counts)}" if counts else "-"})
        return rows


def check_schema(schema: SpanSchema, examples: list[Example], tokenizer: Any, *,
                 counterfactuals: list[str] | None = None) -> SchemaReport:
    """Apply the schema to every clean prompt (and the listed counterfactual kinds) and report the fit."""
    names = span_names(schema)
    report = SchemaReport(names=names, lengths={name: [] for name in names})
    for example in examples:
        prompts = [(f"example {example.id}", example.prompt, example.spans)]
        for kind in counterfactuals or []:
            cf = example.counterfactual(kind)
            prompts.append((f"example {example.id} ({kind})", cf.prompt, cf.spans))
        for where, prompt, spans in prompts:
            report.prompts += 1
            try:
                ranges = token_spans(tokenizer, prompt, spans, schema, where=where)
            except SchemaError as exc:
                report.failures.append(str(exc))
                continue
            for name, (start, end) in zip(names, ranges, strict=True):
                report.lengths[name].append(end - start)
                if end == start:
                    report.empty[name] += 1
    return report
