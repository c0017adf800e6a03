"""NAP and NAP-IG: attribution at node or neuron level (one class, two cards)."""

from mibench.circuits.method import AttributionContext, CircuitMethod, gradient_attribution
from mibench.graph.graph import Graph
from mibench.method_registry import register_method


@register_method("nap", "nap-ig")
class NodeAttributionPatching(CircuitMethod):
    def score(self, context: AttributionContext) -> Graph:
        steps = int(self.arguments["ig_steps"])
        if steps > 0:
            return gradient_attribution(context, interpolation="inputs", steps=steps, rule=self.arguments["rule"])
        return gradient_attribution(context, interpolation="none")
