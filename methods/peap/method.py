"""PEAP: EAP per span for non-crossing edges, exact key/value patching for crossing edges."""

from mibench.circuits.method import AttributionContext, CircuitMethod
from mibench.circuits.peap import peap_attribution
from mibench.errors import MibenchError
from mibench.graph.positional import PositionalGraph
from mibench.method_registry import register_method


@register_method("peap")
class PositionAwareEAP(CircuitMethod):
    def score(self, context: AttributionContext) -> PositionalGraph:
        if context.span_schema is None or context.span_ids_of is None:
            raise MibenchError("peap needs the task's span schema (its card's span_schema)")
        reducer = str(self.arguments["reducer"])
        if reducer not in ("sum", "avg", "abs_sum", "max_abs"):
            raise MibenchError(f"peap: reducer must be sum, avg, abs_sum or max_abs, not {reducer!r}")
        return peap_attribution(context.engine, context.batches, context.span_schema, context.span_ids_of,
                                ablation=context.ablation, reference=context.reference_ablation, reducer=reducer,
                                crossing=bool(self.arguments["crossing"]), on_batch=context.on_batch)
