"""EAP-IG-activations: integrated gradients along each source group's activation path."""

from mibench.circuits.method import AttributionContext, CircuitMethod, gradient_attribution
from mibench.graph.graph import Graph
from mibench.method_registry import register_method


@register_method("eap-ig-activations")
class EAPIGActivations(CircuitMethod):
    def score(self, context: AttributionContext) -> Graph:
        return gradient_attribution(context, interpolation="activations", steps=int(self.arguments["ig_steps"]),
                                    rule=self.arguments["rule"], pooled=bool(self.arguments["pooled"]))
