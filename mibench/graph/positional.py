"""The position-aware computation graph: MIB's graph with one copy of every node per span of a schema.

Nodes are ``(component, span)``: ``a3.h5@S2`` is head 5 of layer 3 at the tokens of span ``S2`` (the spans of a
task's :class:`~mibench.data.card.SpanSchema`, in prompt order). Edges come in two kinds (Haklay et al., 2025):

* **non-crossing** ``u -> v@s``: source ``u``'s output at the tokens of span ``s`` into destination slot ``v``
  (a head's q/k/v input, an MLP input, the logits) at the same tokens. Every MIB edge has one copy per span,
  except edges into ``logits``, which exist only at the last span (the answer position).
* **crossing** ``a3.h5<k>:S1->S2``: head ``a3.h5``'s keys (or values) at span ``S1`` as read by its queries at a
  *later* span ``S2``. Attention within one span is not a separate edge: it is governed by the k/v inputs
  at that span.

State is dense tensors, like :class:`~mibench.graph.graph.Graph`::

    edge_scores / edges_in_graph           [S, F, B]      non-crossing edges per span (F sources, B slots)
    crossing_scores / crossings_in_graph   [L, H, 2, S, S] crossing edges (kv 0 = keys, 1 = values; [s_kv, s_q])
    nodes_in_graph                         [S, F]

``n_edges`` (non-crossing + crossing) is the N of a position-aware circuit's sizes, so its CPR/CMD sit in the
same table as position-invariant methods. Files are MIB's JSON layout extended with span labels (``cfg``
carries ``spans``; node and edge names carry ``@span``), or safetensors of the tensors with ``cfg`` in the
metadata; either is validated on reading, with errors that name the file and the field.
"""

from __future__ import annotations

import json
import os
import re
from functools import cached_property
from typing import Any

import torch

from mibench.errors import CircuitFileError, UnknownNameError, close_matches
from mibench.graph.graph import LOGITS, Graph, real_edge_mask
from mibench.graph.layout import GraphLayout
from mibench.io_utils import atomic_path

KV = ("k", "v")
FORMAT = "mibench-position-aware"


class PositionalGraph:
    """MIB's graph for one model, replicated over the spans of a schema, with crossing attention edges."""

    def __init__(self, layout: GraphLayout, spans: list[str]) -> None:
        if not spans or len(set(spans)) != len(spans):
            raise ValueError(f"a position-aware graph needs distinct span names, got {spans}")
        self.layout = layout
        self.spans = list(spans)
        n_spans, n_forward, n_backward = len(spans), layout.n_forward, layout.n_backward
        mask = real_edge_mask(layout).unsqueeze(0).repeat(n_spans, 1, 1)
        mask[:-1, :, layout.logits_backward_index] = False  # the logits read the answer position only
        self.real_edge_mask: torch.Tensor = mask
        later = torch.arange(n_spans).unsqueeze(1) < torch.arange(n_spans).unsqueeze(0)  # [s_kv, s_q]: s_kv < s_q
        self.real_crossing_mask: torch.Tensor = later.expand(layout.n_layers, layout.n_heads, 2, -1, -1).clone()
        self.edge_scores = torch.zeros(n_spans, n_forward, n_backward)
        self.edges_in_graph = torch.zeros(n_spans, n_forward, n_backward, dtype=torch.bool)
        self.crossing_scores = torch.zeros(layout.n_layers, layout.n_heads, 2, n_spans, n_spans)
        self.crossings_in_graph = torch.zeros_like(self.crossing_scores, dtype=torch.bool)
        self.nodes_in_graph = torch.zeros(n_spans, n_forward, dtype=torch.bool)

    @cached_property
    def _base(self) -> Graph:
        """The position-invariant graph, for MIB's node and edge names."""
        return Graph(self.layout)

    # ---------------------------------------------------------------- sizes
    @property
    def n_spans(self) -> int:
        return len(self.spans)

    @property
    def n_noncrossing(self) -> int:
        return int(self.real_edge_mask.sum())

    @property
    def n_crossing(self) -> int:
        return int(self.real_crossing_mask.sum())

    @property
    def n_edges(self) -> int:
        """All edges: the N of position-aware circuit sizes."""
        return self.n_noncrossing + self.n_crossing

    @property
    def n_nodes(self) -> int:
        """Source nodes per span plus the one logits node (at the answer position)."""
        return self.n_spans * self.layout.n_forward + 1

    def count_included_edges(self) -> int:
        return int((self.edges_in_graph & self.real_edge_mask).sum()
                   + (self.crossings_in_graph & self.real_crossing_mask).sum())

    def weighted_edge_count(self) -> float:
        """Edges in the circuit (the scorer's realised size; no neuron weighting at this level)."""
        return float(self.count_included_edges())

    def clone(self) -> PositionalGraph:
        other = PositionalGraph(self.layout, self.spans)
        for name in ("edge_scores", "edges_in_graph", "crossing_scores", "crossings_in_graph", "nodes_in_graph"):
            setattr(other, name, getattr(self, name).clone())
        return other

    def reset(self, empty: bool = True) -> None:
        """Nothing (or every real edge and crossing edge) in the circuit."""
        self.edges_in_graph = self.real_edge_mask.clone() if not empty else torch.zeros_like(self.real_edge_mask)
        self.crossings_in_graph = (self.real_crossing_mask.clone() if not empty
                                   else torch.zeros_like(self.real_crossing_mask))
        self.nodes_in_graph = torch.full_like(self.nodes_in_graph, not empty)

    def counts(self) -> dict[str, int]:
        return {"spans": self.n_spans, "nodes": self.n_nodes, "non_crossing_edges": self.n_noncrossing,
                "crossing_edges": self.n_crossing, "edges": self.n_edges}

    # ---------------------------------------------------------------- names
    def node_name(self, forward: int, span: int) -> str:
        return f"{self.layout.forward_names[forward]}@{self.spans[span]}"

    def edge_name(self, span: int, forward: int, backward: int) -> str:
        if not self.real_edge_mask[span, forward, backward]:
            raise ValueError(f"({span}, {forward}, {backward}) is not a non-crossing edge of this graph")
        return f"{self.layout.forward_names[forward]}->{self.layout.backward_names[backward]}@{self.spans[span]}"

    def crossing_name(self, layer: int, head: int, kv: int, s_kv: int, s_q: int) -> str:
        if not self.real_crossing_mask[layer, head, kv, s_kv, s_q]:
            raise ValueError(f"({layer}, {head}, {KV[kv]}, {s_kv}, {s_q}) is not a crossing edge (keys and values "
                             "are read only by queries at later spans)")
        return f"a{layer}.h{head}<{KV[kv]}>:{self.spans[s_kv]}->{self.spans[s_q]}"

    def span_index(self, name: str) -> int:
        if name not in self.spans:
            raise UnknownNameError("span", name, f"unknown span {name!r} (spans: {', '.join(self.spans)})",
                                   close_matches(name, self.spans))
        return self.spans.index(name)

    def edge_index(self, name: str) -> tuple[int, int, int]:
        """``(span, forward, backward)`` of a non-crossing edge ``parent->child@span``."""
        body, at, span = name.rpartition("@")
        if not at:
            raise UnknownNameError("edge", name, f"edge name {name!r} is not of the form 'parent->child@span'")
        forward, backward = self._base.edge_index(body)
        s = self.span_index(span)
        if not self.real_edge_mask[s, forward, backward]:
            raise UnknownNameError("edge", name, f"{name!r} is not an edge: the logits read only the last span "
                                                 f"({self.spans[-1]!r})")
        return s, forward, backward

    def crossing_index(self, name: str) -> tuple[int, int, int, int, int]:
        match = re.fullmatch(r"a(\d+)\.h(\d+)<([kv])>:(.+)->(.+)", name)
        if match is None:
            raise UnknownNameError("crossing edge", name, f"crossing edge name {name!r} is not of the form "
                                                          "'a<L>.h<H><k|v>:<span>-><span>'")
        layer, head = int(match.group(1)), int(match.group(2))
        if not (0 <= layer < self.layout.n_layers and 0 <= head < self.layout.n_heads):
            raise UnknownNameError("crossing edge", name, f"{name!r}: no head a{layer}.h{head} in this model")
        s_kv, s_q = self.span_index(match.group(4)), self.span_index(match.group(5))
        kv = KV.index(match.group(3))
        if not self.real_crossing_mask[layer, head, kv, s_kv, s_q]:
            raise UnknownNameError("crossing edge", name, f"{name!r}: keys and values are read only by queries "
                                                          "at later spans")
        return layer, head, kv, s_kv, s_q

    # ------------------------------------------------------------------ files
    @property
    def cfg(self) -> dict[str, Any]:
        return {"n_layers": self.layout.n_layers, "n_heads": self.layout.n_heads,
                "parallel_attn_mlp": self.layout.parallel_attn_mlp, "d_model": self.layout.d_model,
                "spans": list(self.spans), "format": FORMAT}

    def save_json(self, path: str | os.PathLike[str]) -> None:
        """MIB's JSON layout with span labels; every real edge listed, atomically written."""
        nodes = {self.node_name(f, s): {"in_graph": bool(self.nodes_in_graph[s, f])}
                 for s in range(self.n_spans) for f in range(self.layout.n_forward)}
        nodes[LOGITS] = {"in_graph": True}
        edges = {}
        for s, f, b in self.real_edge_mask.nonzero().tolist():
            edges[self.edge_name(s, f, b)] = {"score": float(self.edge_scores[s, f, b]),
                                              "in_graph": bool(self.edges_in_graph[s, f, b])}
        crossing = {}
        for index in self.real_crossing_mask.nonzero().tolist():
            key = tuple(index)
            crossing[self.crossing_name(*index)] = {"score": float(self.crossing_scores[key]),
                                                    "in_graph": bool(self.crossings_in_graph[key])}
        with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            json.dump({"cfg": self.cfg, "nodes": nodes, "edges": edges, "crossing_edges": crossing}, handle)

    @classmethod
    def load_json(cls, path: str | os.PathLike[str], layout: GraphLayout | None = None) -> PositionalGraph:
        """Read :meth:`save_json`'s format; names outside the graph, bad types or sizes name the field."""
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CircuitFileError(path, None, f"cannot read position-aware circuit JSON: {exc}") from None
        if not isinstance(data, dict) or not {"cfg", "edges", "crossing_edges"} <= set(data):
            raise CircuitFileError(path, None, "expected an object with cfg, nodes, edges and crossing_edges")
        graph = cls(_layout_of(path, data["cfg"], layout), _spans_of(path, data["cfg"]))
        for field, entries, locate, scores, members in (
                ("edges", data["edges"], graph.edge_index, graph.edge_scores, graph.edges_in_graph),
                ("crossing_edges", data["crossing_edges"], graph.crossing_index, graph.crossing_scores,
                 graph.crossings_in_graph)):
            if not isinstance(entries, dict):
                raise CircuitFileError(path, field, "expected an object of name -> {score, in_graph}")
            for name, entry in entries.items():
                try:
                    index = locate(name)
                except UnknownNameError as exc:
                    raise CircuitFileError(path, f"{field}[{name!r}]", exc.message) from None
                if not isinstance(entry, dict) or not isinstance(entry.get("in_graph", False), bool) \
                        or isinstance(entry.get("score", 0.0), bool) \
                        or not isinstance(entry.get("score", 0.0), (int, float)):
                    raise CircuitFileError(path, f"{field}[{name!r}]", "expected {\"score\": number, "
                                                                       "\"in_graph\": true|false}")
                scores[index] = float(entry.get("score", 0.0))
                members[index] = bool(entry.get("in_graph", False))
        for name, entry in (data.get("nodes") or {}).items():
            if name == LOGITS:
                continue
            node, at, span = name.rpartition("@")
            try:
                f = graph._base.forward_index(node)
                s = graph.span_index(span) if at else None
            except UnknownNameError as exc:
                raise CircuitFileError(path, f"nodes[{name!r}]", exc.message) from None
            if s is None or not isinstance(entry, dict) or not isinstance(entry.get("in_graph", False), bool):
                raise CircuitFileError(path, f"nodes[{name!r}]", "expected a 'node@span' name with {\"in_graph\": bool}")
            graph.nodes_in_graph[s, f] = entry.get("in_graph", False)
        return graph


def _spans_of(path, cfg: Any) -> list[str]:
    spans = cfg.get("spans") if isinstance(cfg, dict) else None
    if not isinstance(spans, list) or not spans or not all(isinstance(s, str) and s for s in spans) \
            or len(set(spans)) != len(spans):
        raise CircuitFileError(path, "cfg.spans", f"expected a list of distinct span names, got {spans!r}")
    return spans


def _layout_of(path, cfg: Any, expected: GraphLayout | None) -> GraphLayout:
    if not isinstance(cfg, dict):
        raise CircuitFileError(path, "cfg", "expected an object")
    try:
        layout = GraphLayout(n_layers=cfg["n_layers"], n_heads=cfg["n_heads"], d_model=cfg["d_model"],
                             parallel_attn_mlp=bool(cfg.get("parallel_attn_mlp", False)))
    except (KeyError, TypeError, ValueError) as exc:
        raise CircuitFileError(path, "cfg", f"not a graph configuration: {exc}") from None
    if expected is not None and (layout.n_layers, layout.n_heads, layout.d_model) != (
            expected.n_layers, expected.n_heads, expected.d_model):
        raise CircuitFileError(path, "cfg", f"made for {layout.n_layers} layers x {layout.n_heads} heads (d_model "
                                            f"{layout.d_model}), not this model's {expected.n_layers} x "
                                            f"{expected.n_heads} (d_model {expected.d_model})")
    return layout


def positional_counts(layout: GraphLayout, n_spans: int) -> dict[str, int]:
    """Node and edge counts of the position-aware graph in closed form (checked against the tensors)::

        non-crossing = n_spans * (MIB edges - edges into logits) + edges into logits
        crossing     = n_layers * n_heads * 2 * n_spans * (n_spans - 1) / 2
    """
    into_logits = layout.n_forward
    non_crossing = n_spans * (layout.n_edges - into_logits) + into_logits
    crossing = layout.n_layers * layout.n_heads * 2 * n_spans * (n_spans - 1) // 2
    return {"spans": n_spans, "nodes": n_spans * layout.n_forward + 1, "non_crossing_edges": non_crossing,
            "crossing_edges": crossing, "edges": non_crossing + crossing}
