"""The random baseline: seeded standard-normal scores at any level."""

import torch

from mibench.circuits.method import AttributionContext, CircuitMethod
from mibench.graph.graph import Graph
from mibench.method_registry import register_method


def random_scores(layout, level: str, seed: int) -> Graph:
    graph = Graph(layout, node_scores=level == "node", neuron_level=level == "neuron")
    generator = torch.Generator().manual_seed(seed)
    if level == "edge":
        graph.edge_scores = torch.randn(graph.edge_scores.shape, generator=generator) * graph.real_edge_mask
    elif level == "node":
        graph.node_scores = torch.randn(graph.n_forward, generator=generator)
    else:
        graph.neuron_scores = torch.randn(graph.n_forward, graph.d_model, generator=generator)
    return graph


@register_method("random")
class RandomScores(CircuitMethod):
    def score(self, context: AttributionContext) -> Graph:
        if context.on_batch is not None:
            context.on_batch(context.n_examples)
        return random_scores(context.engine.layout, context.level, context.seed)
