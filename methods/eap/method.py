"""EAP: the gradient at the clean input (no interpolation)."""

from mibench.circuits.method import AttributionContext, CircuitMethod, gradient_attribution
from mibench.graph.graph import Graph
from mibench.method_registry import register_method


@register_method("eap")
class EdgeAttributionPatching(CircuitMethod):
    def score(self, context: AttributionContext) -> Graph:
        return gradient_attribution(context, interpolation="none")
