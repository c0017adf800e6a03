from mibench.circuits.method import AttributionContext, CircuitMethod, gradient_attribution
from mibench.graph.graph import Graph
from mibench.method_registry import register_method


@register_method("example:eap-cf-gradient")
class EAPCounterfactualGradient(CircuitMethod):
    def score(self, context: AttributionContext) -> Graph:
        # one interpolation point with the left Riemann rule: alpha = 0, the counterfactual embedding
        return gradient_attribution(context, interpolation="inputs", steps=1, rule="left")
