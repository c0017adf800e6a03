"""IFR: proximity-based attribution from a single clean forward."""

from mibench.circuits.flow_routes import information_flow_routes
from mibench.circuits.method import AttributionContext, CircuitMethod
from mibench.graph.graph import Graph
from mibench.method_registry import register_method


@register_method("ifr")
class InformationFlowRoutes(CircuitMethod):
    def score(self, context: AttributionContext) -> Graph:
        return information_flow_routes(context.engine, context.batches, on_batch=context.on_batch)
