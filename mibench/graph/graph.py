"""The computation-graph container: MIB's nodes, edges, masks and scores as dense torch tensors.

A ``Graph`` is plain state plus name lookups. All index arithmetic comes from ``GraphLayout`` so the
engine, the scorer and the file formats agree by construction. State lives in tensors (not in per-edge
Python objects, as in the reference code) so that whole-graph operations -- pruning, counting, top-k --
are a handful of vectorised ops even for Llama-3.1-8B's 1.6 million edges.

Tensor attributes (all on CPU, owned by the graph, mutated in place by the scorer / methods):

============================  ==========================  ==========================================
attribute                     dtype / shape               meaning
============================  ==========================  ==========================================
``edge_scores``               float32 [F, B]              score of edge (source f, destination slot b);
                                                          NaN = unscored. Entries off ``real_edge_mask``
                                                          carry no meaning (files store them as 0).
``edges_in_graph``            bool [F, B]                 edge membership (only real edges may be True)
``nodes_in_graph``            bool [F]                    source-node membership
``node_scores``               float32 [F] or None         node-level scores (None unless node level)
``neurons_in_graph``          bool [F, d_model] or None   kept output dimensions per source node
``neuron_scores``             float32 [F, d_model] / None neuron-level scores (None unless neuron level)
``real_edge_mask``            bool [F, B]                 True exactly for the edges of the graph
``backward_owner``            int64 [B]                   forward index owning each destination slot
                                                          (``n_forward`` for the logits slot)
============================  ==========================  ==========================================

F = ``n_forward`` (input, heads, MLPs), B = ``n_backward`` (q/k/v slot per head, MLP input, logits).

``file_score_scale`` (float, default 1) is the factor the file writers apply to every score so that files hold
MIB's magnitudes. Gradient attribution keeps per-example means in memory (so EAP equals the derivative of
exact patching) and sets it to ``1 / batch size``: MIB's EAP-IG differentiates a batch-*mean* loss and then
divides by the number of examples (see ``docs/file-formats.md``). A graph read from a file has scale 1.

Files are read and written by :mod:`mibench.graph.io` (``load_circuit`` / ``save_circuit``), which builds on
this module; the container itself knows nothing of file formats.
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, Literal

import torch

from mibench.errors import UnknownNameError, close_matches
from mibench.graph.layout import GraphLayout

Level = Literal["edge", "node", "neuron"]
LOGITS = "logits"


def real_edge_mask(layout: GraphLayout) -> torch.Tensor:
    """Bool ``[n_forward, n_backward]``: True exactly where MIB's graph has an edge.

    A source feeds a destination iff its forward index is below the destination's ``prev_index``.
    """
    prev = torch.tensor(layout.prev_index, dtype=torch.long)
    return torch.arange(layout.n_forward).unsqueeze(1) < prev.unsqueeze(0)


class Graph:
    """MIB's computation graph for one model, with circuit membership and scores.

    Build it from a layout (``Graph(layout)``) or straight from a Hugging Face config
    (``Graph.from_hf_config(config)``). ``node_scores=True`` / ``neuron_level=True`` allocate the optional
    node- and neuron-level tensors, filled with NaN ("unscored", which MIB treats as always kept).
    """

    def __init__(self, layout: GraphLayout, *, node_scores: bool = False, neuron_level: bool = False) -> None:
        self.layout = layout
        n_forward, n_backward, d_model = layout.n_forward, layout.n_backward, layout.d_model
        self.real_edge_mask: torch.Tensor = real_edge_mask(layout)
        self.backward_owner: torch.Tensor = torch.tensor(layout.backward_owner, dtype=torch.long)

        self.edge_scores: torch.Tensor = torch.zeros(n_forward, n_backward, dtype=torch.float32)
        self.edges_in_graph: torch.Tensor = torch.zeros(n_forward, n_backward, dtype=torch.bool)
        self.nodes_in_graph: torch.Tensor = torch.zeros(n_forward, dtype=torch.bool)
        self.node_scores: torch.Tensor | None = (
            torch.full((n_forward,), float("nan"), dtype=torch.float32) if node_scores else None
        )
        self.neurons_in_graph: torch.Tensor | None = (
            torch.zeros(n_forward, d_model, dtype=torch.bool) if neuron_level else None
        )
        self.neuron_scores: torch.Tensor | None = (
            torch.full((n_forward, d_model), float("nan"), dtype=torch.float32) if neuron_level else None
        )
        self.file_score_scale: float = 1.0

    @classmethod
    def from_hf_config(cls, config: Any, **kwargs: bool) -> Graph:
        """The graph of a Hugging Face model, from its config object alone (no weights needed)."""
        from mibench.models.families import layout_from_config

        return cls(layout_from_config(config), **kwargs)

    # ------------------------------------------------------------------ sizes
    @property
    def n_forward(self) -> int:
        return self.layout.n_forward

    @property
    def n_backward(self) -> int:
        return self.layout.n_backward

    @property
    def n_edges(self) -> int:
        """Number of real edges (MIB: 32,491 for GPT-2 small)."""
        return self.layout.n_edges

    @property
    def d_model(self) -> int:
        return self.layout.d_model

    @property
    def cfg(self) -> dict[str, Any]:
        """The ``cfg`` block of MIB's file formats."""
        return {
            "n_layers": self.layout.n_layers,
            "n_heads": self.layout.n_heads,
            "parallel_attn_mlp": self.layout.parallel_attn_mlp,
            "d_model": self.layout.d_model,
        }

    @property
    def level(self) -> Level:
        """Granularity of the scores, inferred as MIB does: neuron scores, else node scores, else edges."""
        if self.neuron_scores is not None:
            return "neuron"
        if self.node_scores is not None:
            return "node"
        return "edge"

    # ------------------------------------------------------------------ names
    @property
    def forward_names(self) -> list[str]:
        """Source-node names in forward-index order (do not mutate; shared with the layout)."""
        return self.layout.forward_names

    @property
    def backward_names(self) -> list[str]:
        """Destination-slot names in backward-index order (do not mutate; shared with the layout)."""
        return self.layout.backward_names

    def node_names(self) -> list[str]:
        """All node names as MIB lists them in JSON files: the source nodes, then ``logits``."""
        return [*self.forward_names, LOGITS]

    @cached_property
    def _forward_lookup(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.forward_names)}

    @cached_property
    def _backward_lookup(self) -> dict[str, int]:
        return {name: i for i, name in enumerate(self.backward_names)}

    def forward_index(self, name: str) -> int:
        """Forward (row) index of a source node: ``input``, ``a3.h5``, ``m7``."""
        index = self._forward_lookup.get(name)
        if index is None:
            hint = " (logits is a destination, not a source)" if name == LOGITS else ""
            raise UnknownNameError(
                "node", name, f"unknown source node {name!r}{hint}", close_matches(name, self.forward_names)
            )
        return index

    def backward_index(self, name: str) -> int:
        """Backward (column) index of a destination slot: ``a3.h5<q>``, ``m7``, ``logits``."""
        index = self._backward_lookup.get(name)
        if index is None:
            raise UnknownNameError(
                "destination",
                name,
                f"unknown destination {name!r} (attention inputs are named like 'a0.h0<q>')",
                close_matches(name, self.backward_names),
            )
        return index

    def edge_index(self, name: str) -> tuple[int, int]:
        """``(forward, backward)`` matrix index of an edge named ``parent->child`` (e.g. ``a3.h5->m7``)."""
        parent, arrow, child = name.partition("->")
        if not arrow:
            raise UnknownNameError("edge", name, f"edge name {name!r} is not of the form 'parent->child'")
        try:
            source = self.forward_index(parent)
        except UnknownNameError as err:
            suggestions = [f"{s}->{child}" for s in err.suggestions]
            raise UnknownNameError("edge", name, f"{err.message} in edge {name!r}", suggestions) from None
        try:
            slot = self.backward_index(child)
        except UnknownNameError as err:
            suggestions = [f"{parent}->{s}" for s in err.suggestions]
            raise UnknownNameError("edge", name, f"{err.message} in edge {name!r}", suggestions) from None
        if source >= self.layout.prev_index[slot]:  # plain-list test: this runs once per edge in JSON loads
            raise UnknownNameError(
                "edge",
                name,
                f"{name!r} is not an edge of this graph: {parent} is not upstream of {child} "
                "in the residual stream",
            )
        return source, slot

    def edge_name(self, forward: int, backward: int) -> str:
        """Name of the edge at matrix index ``(forward, backward)``; it must be a real edge."""
        if not (0 <= forward < self.n_forward and 0 <= backward < self.n_backward):
            raise IndexError(f"({forward}, {backward}) is outside the {self.n_forward}x{self.n_backward} matrix")
        if not self.real_edge_mask[forward, backward]:
            raise ValueError(f"({forward}, {backward}) = {self._pair_name(forward, backward)} is not a real edge")
        return self._pair_name(forward, backward)

    def _pair_name(self, forward: int, backward: int) -> str:
        return f"{self.forward_names[forward]}->{self.backward_names[backward]}"

    @cached_property
    def edge_indices(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(forward, backward)`` int64 index tensors [n_edges] of every real edge, in ``edge_names`` order.

        The order is MIB's edge-creation order (``GraphLayout.edge_blocks``), so ``edge_scores[fw, bw]``
        lines up with the ``"edges"`` object of MIB's JSON files.
        """
        forward_parts, backward_parts = [], []
        for n_sources, slots in self.layout.edge_blocks():
            forward_parts.append(torch.arange(n_sources).repeat_interleave(len(slots)))
            backward_parts.append(torch.tensor(slots, dtype=torch.long).repeat(n_sources))
        return torch.cat(forward_parts), torch.cat(backward_parts)

    def edge_names(self) -> list[str]:
        """Names of all real edges in a fixed order (MIB's), e.g. ``input->a0.h0<q>`` first."""
        forward, backward = self.edge_indices
        fnames, bnames = self.forward_names, self.backward_names
        return [f"{fnames[f]}->{bnames[b]}" for f, b in zip(forward.tolist(), backward.tolist())]

    # ---------------------------------------------------------------- counts
    def count_included_edges(self) -> int:
        """Number of (real) edges in the circuit."""
        return int((self.edges_in_graph & self.real_edge_mask).sum())

    def count_included_nodes(self) -> int:
        return int(self.nodes_in_graph.sum())

    def weighted_edge_count(self) -> float:
        """MIB's circuit size: each in-graph edge counts the fraction of its source's neurons kept.

        Without neuron masks every edge counts 1, so this equals ``count_included_edges()``.
        """
        edges = self.edges_in_graph & self.real_edge_mask
        if self.neurons_in_graph is None:
            return float(edges.sum())
        kept_fraction = self.neurons_in_graph.sum(dim=1, dtype=torch.float64) / self.d_model
        return float((edges.sum(dim=1, dtype=torch.float64) * kept_fraction).sum())

    # --------------------------------------------------------------- pruning
    def _nodes_with_in_edges(self, edges: torch.Tensor) -> torch.Tensor:
        """bool [F]: source nodes with an in-graph edge into any of their input slots; ``input`` always."""
        slot_has_in = edges.any(dim=0).to(torch.int32)
        per_node = torch.zeros(self.n_forward + 1, dtype=torch.int32)  # extra row absorbs the logits slot
        per_node.index_add_(0, self.backward_owner, slot_has_in)
        has_in = per_node[: self.n_forward] > 0
        has_in[0] = True  # the input node has no in-edges but is where everything starts
        return has_in

    def connected_nodes(self) -> torch.Tensor:
        """bool [F]: nodes with both an in-edge (input counts as having one) and an out-edge in the circuit.

        Nodes whose neurons are all masked out are excluded: they cannot pass anything on.
        """
        edges = self.edges_in_graph
        nodes = edges.any(dim=1) & self._nodes_with_in_edges(edges)
        if self.neurons_in_graph is not None:
            nodes &= self.neurons_in_graph.any(dim=1)
        return nodes

    def _prune_step(self) -> tuple[bool, bool]:
        """One round of pruning; returns ``(nodes_changed, edges_changed)``."""
        nodes = self.connected_nodes()
        nodes_changed = not torch.equal(nodes, self.nodes_in_graph)
        self.nodes_in_graph.copy_(nodes)
        # A destination slot is present iff its owning node is; the logits slot always is.
        slot_present = torch.cat([nodes, nodes.new_ones(1)])[self.backward_owner]
        edges = self.edges_in_graph & nodes.unsqueeze(1) & slot_present.unsqueeze(0)
        edges_changed = not torch.equal(edges, self.edges_in_graph)
        self.edges_in_graph.copy_(edges)
        return nodes_changed, edges_changed

    def prune(self) -> None:
        """Reduce the circuit to its connected part, in place.

        Repeats until a fixpoint: keep exactly the nodes that have an in-edge (``input`` counts as having
        one) and an out-edge; drop every edge whose source or destination node was dropped (the logits node
        is always present). As in MIB, node membership is *derived from the edges* at each round, and nodes
        whose neurons are all masked out are dropped; their neuron masks are cleared at the end.

        Unlike the EAP-IG code MIB pinned (which stopped as soon as the node set stopped changing, so that
        removing edges in the last round could leave a node without out-edges and its in-edges dangling --
        EAP-IG issue #16), we stop only when neither the nodes NOR the edges change. Since edges only ever
        get removed and nodes are a function of the edges, this terminates after at most ~2 rounds per layer.
        """
        self.edges_in_graph &= self.real_edge_mask
        while any(self._prune_step()):
            pass
        if self.neurons_in_graph is not None:
            self.neurons_in_graph &= self.nodes_in_graph.unsqueeze(1)

    # ----------------------------------------------------------------- misc
    def reset(self, empty: bool = True) -> None:
        """Empty the circuit (``empty=True``) or fill it with every node, real edge and neuron."""
        self.edges_in_graph.copy_(self.real_edge_mask if not empty else torch.zeros_like(self.real_edge_mask))
        self.nodes_in_graph.fill_(not empty)
        if self.neurons_in_graph is not None:
            self.neurons_in_graph.fill_(not empty)

    def clone(self) -> Graph:
        """A deep copy (tensors are copied; the layout, being immutable, is shared)."""
        other = Graph.__new__(Graph)
        other.layout = self.layout
        for attr in _TENSOR_ATTRS:
            value = getattr(self, attr)
            setattr(other, attr, None if value is None else value.clone())
        other.file_score_scale = self.file_score_scale
        return other

    def __repr__(self) -> str:
        lay = self.layout
        return (
            f"Graph(n_layers={lay.n_layers}, n_heads={lay.n_heads}, d_model={lay.d_model}, level={self.level!r}, "
            f"edges_in_graph={self.count_included_edges()}/{self.n_edges}, "
            f"nodes_in_graph={self.count_included_nodes()}/{self.n_forward})"
        )


_TENSOR_ATTRS: tuple[str, ...] = (
    "real_edge_mask",
    "backward_owner",
    "edge_scores",
    "edges_in_graph",
    "nodes_in_graph",
    "node_scores",
    "neurons_in_graph",
    "neuron_scores",
)
