"""Exact activation patching, batched over edges with per-row masks."""

from mibench.circuits.exact import exact_patching
from mibench.circuits.method import AttributionContext, CircuitMethod
from mibench.graph.graph import Graph
from mibench.method_registry import register_method


@register_method("exact")
class ExactPatching(CircuitMethod):
    def score(self, context: AttributionContext) -> Graph:
        return exact_patching(context.engine, context.batches, level=context.level, ablation=context.ablation,
                              reference=context.reference_ablation,
                              items_per_forward=int(self.arguments["items_per_forward"]), on_batch=context.on_batch)
