"""PEAP (position-aware edge attribution patching, Haklay et al. 2025): scores for the position-aware graph.

Non-crossing edges get EAP kept per span (:func:`mibench.circuits.attribution.attribute_by_span`, with one of
PEAP's reducers over each span's positions); crossing edges get the exact key/value patching estimate of
:mod:`mibench.circuits.crossing` (summed over the positions of the query span). Both are averaged over the
attribution examples, so the scores of one position-aware graph are on one scale and can be ranked together.

Spans come from the task's span schema (:mod:`mibench.data.span_schema`), applied to each example's clean
prompt (its counterfactual has the same length and roles).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from mibench.circuits.attribution import SpanReducer, attribute_by_span
from mibench.circuits.batches import CircuitBatch
from mibench.circuits.crossing import crossing_attribution, mean_key_values
from mibench.data.card import SpanSchema
from mibench.data.example import Example
from mibench.data.span_schema import SchemaError, span_names, token_spans
from mibench.engine.residual import ResidualRunner
from mibench.errors import MibenchError
from mibench.graph.positional import PositionalGraph


def span_ids_for(examples: Sequence[Example], tokenizer: Any, schema: SpanSchema) -> Callable[[CircuitBatch], Tensor]:
    """A function giving a batch's ``[B, T]`` span indices (-1 at padding) from its examples' clean prompts."""
    ranges: dict[str, list[tuple[int, int]]] = {}
    for example in examples:
        try:
            ranges[example.id] = token_spans(tokenizer, example.prompt, example.spans, schema,
                                             where=f"example {example.id}")
        except SchemaError as exc:
            raise MibenchError(f"the task's span schema does not fit: {exc} (see 'mibench schema check')") from None

    def span_ids_of(batch: CircuitBatch) -> Tensor:
        ids = torch.full(batch.clean_ids.shape, -1, dtype=torch.long)
        for row, example_id in enumerate(batch.example_ids):
            for span, (start, end) in enumerate(ranges[example_id]):
                ids[row, start:end] = span
        return ids

    return span_ids_of


def peap_attribution(engine, batches: list[CircuitBatch], schema: SpanSchema,
                     span_ids_of: Callable[[CircuitBatch], Tensor], *, ablation: str = "patching", reference=None,
                     reducer: SpanReducer = "sum", crossing: bool = True,
                     on_batch: Callable[[int], None] | None = None) -> PositionalGraph:
    """PEAP scores of every non-crossing and (unless ``crossing=False``) crossing edge."""
    spans = span_names(schema)
    graph = attribute_by_span(engine, batches, spans, span_ids_of, reducer=reducer, ablation=ablation,
                              reference=reference, on_batch=on_batch)
    if crossing:
        runner = ResidualRunner(engine.adapter)
        kv_reference = (mean_key_values(runner, [(b.clean_ids, b.attention_mask) for b in batches])
                        if ablation == "mean" else None)
        total = torch.zeros_like(graph.crossing_scores, dtype=torch.float64)
        for batch in batches:
            total += crossing_attribution(runner, batch, span_ids_of(batch), len(spans), ablation=ablation,
                                          reference=kv_reference)
        n = max(1, sum(b.size for b in batches))
        graph.crossing_scores = (total / n).float() * graph.real_crossing_mask
    return graph
