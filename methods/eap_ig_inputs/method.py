"""EAP-IG-inputs: integrated gradients along the token-embedding path."""

from mibench.circuits.method import AttributionContext, CircuitMethod, gradient_attribution
from mibench.graph.graph import Graph
from mibench.method_registry import register_method


@register_method("eap-ig-inputs")
class EAPIGInputs(CircuitMethod):
    def score(self, context: AttributionContext) -> Graph:
        return gradient_attribution(context, interpolation="inputs", steps=int(self.arguments["ig_steps"]),
                                    rule=self.arguments["rule"])
