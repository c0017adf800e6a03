"""Circuit / score files in MIB's formats: JSON, torch ``.pt``, and safetensors.

The JSON and ``.pt`` layouts are exactly MIB's (``hannamw/EAP-IG`` ``Graph.to_json`` / ``to_pt``), so files
move freely between mibench and the MIB tooling:

* JSON: ``{"cfg": {n_layers, n_heads, parallel_attn_mlp, d_model},
  "nodes": {name: {"in_graph", ["score"], ["neurons", "neurons_scores"]}},
  "edges": {"parent->child": {"score", "in_graph"}}}``. ``nodes`` lists the source nodes and ``logits``;
  edges are listed in MIB's order. Unscored values are written as ``NaN`` (Python's JSON dialect, as MIB).
* ``.pt``: a ``torch.save`` dict with ``cfg``, ``src_nodes``, ``dst_nodes``, ``edges_scores``,
  ``edges_in_graph``, ``nodes_in_graph`` and optionally ``nodes_scores``, ``neurons_in_graph``,
  ``neurons_scores``.
* ``.safetensors`` (mibench's addition): the same tensors, with ``cfg`` as JSON in the header metadata.

Score values follow MIB's magnitude convention: writers multiply every score by the graph's
``file_score_scale`` (``1 / batch size`` for gradient attribution, whose in-memory scores are per-example
means; 1 otherwise), because EAP-IG's files hold batch-mean gradients divided by the number of examples.
Readers take the values as they are. See ``docs/file-formats.md``.

Files from outside are *data, never code*: ``.pt`` files are read only with
``torch.load(weights_only=True)``, and a pickle that would need to run code is refused with a
``CircuitFileError``. Every other defect (missing keys, wrong types, dtypes or shapes, unknown names,
pairs that are not edges) is reported as a ``CircuitFileError`` naming the file and the field.

Where we differ from MIB's loader, on purpose: we validate everything it assumes; a JSON ``null`` score
is read as NaN (unscored) instead of crashing; entries of the score matrix that are not real edges
(meaningless, and ignored by MIB's top-k) are stored and loaded as 0 so that files compare cleanly.
Like MIB, edges missing from a JSON file get score 0 and are not in the graph, missing node / neuron
scores are NaN, and the ``logits`` entry of ``nodes`` is ignored (logits are always in the graph).
"""

from __future__ import annotations

import json
import os
import pickle
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import torch

from mibench.errors import CircuitFileError, UnknownNameError, close_matches
from mibench.graph.graph import LOGITS, Graph
from mibench.graph.layout import GraphLayout
from mibench.io_utils import atomic_path

PathLike = str | os.PathLike[str]

#: file key -> (Graph attribute, dtype kind, shape kind). Keys are MIB's; attributes are mibench's.
TENSOR_KEYS: dict[str, tuple[str, str, str]] = {
    "edges_scores": ("edge_scores", "float", "edges"),
    "edges_in_graph": ("edges_in_graph", "bool", "edges"),
    "nodes_in_graph": ("nodes_in_graph", "bool", "nodes"),
    "nodes_scores": ("node_scores", "float", "nodes"),
    "neurons_in_graph": ("neurons_in_graph", "bool", "neurons"),
    "neurons_scores": ("neuron_scores", "float", "neurons"),
}
REQUIRED_TENSOR_KEYS = ("edges_scores", "edges_in_graph", "nodes_in_graph")
PT_KEYS = ("cfg", "src_nodes", "dst_nodes", *TENSOR_KEYS)
JSON_KEYS = ("cfg", "nodes", "edges")
CFG_FIELDS: dict[str, type] = {"n_layers": int, "n_heads": int, "parallel_attn_mlp": bool, "d_model": int}
NODE_ENTRY_KEYS = ("in_graph", "score", "neurons", "neurons_scores")
EDGE_ENTRY_KEYS = ("score", "in_graph")
SAFETENSORS_FORMAT = "mib-circuit"

_NAN = float("nan")


def _fail(path: PathLike, field: str | None, message: str) -> NoReturn:
    raise CircuitFileError(path, field, message)


def _describe(value: Any) -> str:
    """A value's type as a JSON reader would name it (``true`` is a boolean, not an int)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {value!r}"
    if isinstance(value, (int, float, str)):
        return f"{type(value).__name__} {value!r}"
    return type(value).__name__


# ------------------------------------------------------------------ shared checks
def _check_keys(
    path: PathLike,
    data: Any,
    required: Sequence[str],
    allowed: Sequence[str],
    container: str,
    prefix: str | None = None,
) -> None:
    """``data`` must be a mapping holding every ``required`` key and nothing outside ``allowed``.

    Unknown keys are an error (with a "did you mean") because a misspelt optional key such as
    ``neuron_scores`` would otherwise be silently dropped and change what the circuit means.
    ``prefix`` is the field path of ``data`` itself (``None`` at the top level of the file).
    """

    def field(key: Any) -> str:
        return f"{prefix}.{key}" if prefix else str(key)

    if not isinstance(data, Mapping):
        _fail(path, prefix, f"expected {container} with keys {', '.join(required)}; got {_describe(data)}")
    for key in data:
        if key not in allowed:
            hint = close_matches(str(key), allowed)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            _fail(path, field(key), f"unexpected key in {container} (allowed: {', '.join(allowed)}){suggestion}")
    for key in required:
        if key not in data:
            _fail(path, field(key), f"missing (required in {container}: {', '.join(required)})")


def _layout_from_cfg(path: PathLike, cfg: Any, field: str, expected: GraphLayout | None) -> GraphLayout:
    """Validate MIB's ``cfg`` block and turn it into a layout; optionally insist it matches the model's.

    Other keys are ignored: MIB copies whatever its config dict holds into ``cfg``.
    """
    if not isinstance(cfg, Mapping):
        _fail(path, field, f"expected an object with {', '.join(CFG_FIELDS)}; got {_describe(cfg)}")
    values: dict[str, Any] = {}
    for key, kind in CFG_FIELDS.items():
        if key not in cfg:
            _fail(path, f"{field}.{key}", "missing")
        value = cfg[key]
        if kind is bool:
            if not isinstance(value, bool):
                _fail(path, f"{field}.{key}", f"expected true/false, got {_describe(value)}")
        elif isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            _fail(path, f"{field}.{key}", f"expected a positive integer, got {_describe(value)}")
        values[key] = value
    layout = GraphLayout(**values)
    if expected is not None and layout != expected:
        _fail(path, field, f"the file describes a graph with {_layout_text(layout)}, "
              f"but the model's graph has {_layout_text(expected)}")
    return layout


def _layout_text(layout: GraphLayout) -> str:
    return (f"n_layers={layout.n_layers}, n_heads={layout.n_heads}, d_model={layout.d_model}, "
            f"parallel_attn_mlp={layout.parallel_attn_mlp}")


# ------------------------------------------------------------------ tensors (.pt / .safetensors)
def file_scores(graph: Graph, scores: torch.Tensor) -> torch.Tensor:
    """``scores`` (one of the graph's score tensors) in the units files hold: times ``graph.file_score_scale``.

    The product is taken in float64 and rounded once to float32, so a scale of 1 leaves every value unchanged.
    """
    if graph.file_score_scale == 1.0:
        return scores.float()
    return (scores.double() * graph.file_score_scale).float()


def _tensor_payload(graph: Graph) -> dict[str, torch.Tensor]:
    """The graph's tensors under MIB's key names, canonicalised (non-edges: score 0, not in graph), scores in
    file units."""
    real = graph.real_edge_mask
    out = {
        "edges_scores": torch.where(real, file_scores(graph, graph.edge_scores), torch.zeros(())),
        "edges_in_graph": graph.edges_in_graph & real,
    }
    for key, (attr, kind, _shape) in TENSOR_KEYS.items():
        value = getattr(graph, attr)
        if key not in out and value is not None:
            value = file_scores(graph, value) if kind == "float" else value.to(torch.bool)
            out[key] = value.contiguous().clone()
    return out


def _fill_tensors(path: PathLike, graph: Graph, tensors: Mapping[str, Any]) -> Graph:
    """Validate the tensors read from a file against ``graph``'s layout and install them."""
    shapes = {
        "edges": ((graph.n_forward, graph.n_backward), "n_forward x n_backward"),
        "nodes": ((graph.n_forward,), "n_forward"),
        "neurons": ((graph.n_forward, graph.d_model), "n_forward x d_model"),
    }
    for key, value in tensors.items():
        attr, kind, shape_kind = TENSOR_KEYS[key]
        expected, meaning = shapes[shape_kind]
        if not isinstance(value, torch.Tensor):
            _fail(path, key, f"expected a tensor, got {_describe(value)}")
        if tuple(value.shape) != expected:
            _fail(path, key, f"shape mismatch: expected {list(expected)} ({meaning} from cfg), "
                  f"got {list(value.shape)}")
        if kind == "bool" and value.dtype != torch.bool:
            _fail(path, key, f"wrong dtype: expected torch.bool, got {value.dtype}")
        if kind == "float" and not value.is_floating_point():
            _fail(path, key, f"wrong dtype: expected a floating-point tensor, got {value.dtype}")
        dtype = torch.float32 if kind == "float" else torch.bool
        setattr(graph, attr, value.detach().to(device="cpu", dtype=dtype, copy=True).contiguous())

    not_edges = graph.edges_in_graph & ~graph.real_edge_mask
    if not_edges.any():
        forward, backward = (int(i) for i in not_edges.nonzero()[0])
        count = int(not_edges.sum())
        _fail(path, "edges_in_graph",
              f"{count} {'entry puts a pair that is' if count == 1 else 'entries put pairs that are'} "
              "not an edge of this graph in the circuit, "
              f"e.g. [{forward}, {backward}] = {graph._pair_name(forward, backward)!r} "
              "(the source is not upstream of the destination)")
    graph.edge_scores.masked_fill_(~graph.real_edge_mask, 0.0)
    return graph


def _check_names(path: PathLike, field: str, value: Any, expected: Sequence[str]) -> None:
    """``src_nodes`` / ``dst_nodes`` must list exactly the layout's names, in MIB's order."""
    if not isinstance(value, (list, tuple)) or not all(isinstance(name, str) for name in value):
        _fail(path, field, f"expected a list of names, got {_describe(value)}")
    if list(value) == list(expected):
        return
    if len(value) != len(expected):
        _fail(path, field, f"expected {len(expected)} names (from cfg), got {len(value)}")
    position = next(i for i, (got, want) in enumerate(zip(value, expected)) if got != want)
    _fail(path, field, f"names differ from MIB's order at position {position}: "
          f"expected {expected[position]!r}, got {value[position]!r}")


def save_pt(graph: Graph, path: PathLike) -> None:
    """Write MIB's ``.pt`` format (a plain dict: loadable with ``weights_only=True``), atomically."""
    payload: dict[str, Any] = {
        "cfg": graph.cfg,
        "src_nodes": list(graph.forward_names),
        "dst_nodes": list(graph.backward_names),
        **_tensor_payload(graph),
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_pt(path: PathLike, layout: GraphLayout | None = None) -> Graph:
    """Read MIB's ``.pt`` format without ever executing code from the file."""
    try:
        with warnings.catch_warnings():  # torch warns about the pickle protocol of files it then refuses
            warnings.filterwarnings("ignore", message="Detected pickle protocol")
            data = torch.load(path, map_location="cpu", weights_only=True)
    except OSError:
        raise
    except pickle.UnpicklingError as err:
        # torch's restricted unpickler refused it: the pickle references code (classes, functions such as
        # os.system) or uses opcodes outside the safe subset. Either way we will not run it.
        reason = next((line.strip() for line in str(err).splitlines() if "Unsupported" in line), "")
        _fail(path, None, "not a plain tensor/dict file: torch.load(weights_only=True) refused it, and "
              "mibench never executes code from a data file. Save circuits as a dict of tensors, lists, "
              f"strings and numbers, or as .json/.safetensors{f' ({reason})' if reason else ''}")
    except Exception as err:  # torch raises many types for corrupt files (KeyError, RuntimeError, EOFError...)
        _fail(path, None, f"not a readable torch file ({type(err).__name__}: {err})")
    required = ("cfg", "src_nodes", "dst_nodes", *REQUIRED_TENSOR_KEYS)
    _check_keys(path, data, required, PT_KEYS, "a dict")
    graph = Graph(_layout_from_cfg(path, data["cfg"], "cfg", layout))
    _check_names(path, "src_nodes", data["src_nodes"], graph.forward_names)
    _check_names(path, "dst_nodes", data["dst_nodes"], graph.backward_names)
    return _fill_tensors(path, graph, {key: data[key] for key in TENSOR_KEYS if key in data})


def save_safetensors(graph: Graph, path: PathLike) -> None:
    """Write the tensors as safetensors, with the cfg as JSON in the header metadata, atomically."""
    from safetensors.torch import save_file

    metadata = {"format": SAFETENSORS_FORMAT, "cfg": json.dumps(graph.cfg)}
    with atomic_path(path) as tmp:
        save_file(_tensor_payload(graph), os.fspath(tmp), metadata=metadata)


def load_safetensors(path: PathLike, layout: GraphLayout | None = None) -> Graph:
    """Read a safetensors circuit file (format can hold only tensors: nothing in it can run)."""
    from safetensors import safe_open

    try:
        with safe_open(os.fspath(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}  # noqa: SIM118 (not a dict)
    except OSError:
        raise
    except Exception as err:  # SafetensorError and friends: the header or data is corrupt
        _fail(path, None, f"not a readable safetensors file ({err})")
    if "cfg" not in metadata:
        _fail(path, "metadata.cfg", "missing: a circuit safetensors file stores its cfg as JSON "
              "in the header metadata")
    try:
        cfg = json.loads(metadata["cfg"])
    except json.JSONDecodeError as err:
        _fail(path, "metadata.cfg", f"not valid JSON ({err.msg})")
    _check_keys(path, tensors, REQUIRED_TENSOR_KEYS, tuple(TENSOR_KEYS), "a tensor file")
    graph = Graph(_layout_from_cfg(path, cfg, "metadata.cfg", layout))
    return _fill_tensors(path, graph, tensors)


# ------------------------------------------------------------------ JSON
def _json_bool(path: PathLike, field: str, value: Any) -> bool:
    if not isinstance(value, bool):
        _fail(path, field, f"expected true/false, got {_describe(value)}")
    return value


def _json_number(path: PathLike, field: str, value: Any) -> float:
    """A score: a number, ``NaN`` (unscored), or ``null`` (read as NaN)."""
    if value is None:
        return _NAN
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        _fail(path, field, f"expected a number, got {_describe(value)}")
    return float(value)


def _json_list(path: PathLike, field: str, value: Any, length: int, kind: str) -> list[Any]:
    """A per-neuron list: ``length`` booleans (``kind='bool'``) or numbers/null (``kind='float'``)."""
    what = "true/false values" if kind == "bool" else "numbers"
    if not isinstance(value, list) or len(value) != length:
        got = f"a list of {len(value)}" if isinstance(value, list) else _describe(value)
        _fail(path, field, f"expected a list of {length} {what} (d_model), got {got}")
    if kind == "bool":
        bad = next((i for i, x in enumerate(value) if not isinstance(x, bool)), None)
    else:
        bad = next((i for i, x in enumerate(value)
                    if x is not None and (isinstance(x, bool) or not isinstance(x, (int, float)))), None)
    if bad is not None:
        _fail(path, f"{field}[{bad}]", f"expected {what[:-1]}, got {_describe(value[bad])}")
    return value if kind == "bool" else [_NAN if x is None else float(x) for x in value]


def _read_json(path: PathLike) -> Any:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as err:
        _fail(path, None, f"not valid JSON: {err.msg} at line {err.lineno}, column {err.colno}")
    except UnicodeDecodeError:
        _fail(path, None, "not valid JSON: the file is not UTF-8 text")


def _scatter_rows(rows: Mapping[int, Any], n_rows: int, tail: Sequence[int], fill: Any, dtype: torch.dtype):
    """A [n_rows, *tail] tensor filled with ``fill`` whose rows ``rows`` come from the file."""
    out = torch.full((n_rows, *tail), fill, dtype=dtype)
    if rows:
        out[list(rows)] = torch.tensor(list(rows.values()), dtype=dtype)
    return out


def _load_json_nodes(path: PathLike, graph: Graph, nodes: Any) -> None:
    if not isinstance(nodes, Mapping):
        _fail(path, "nodes", f"expected an object mapping node names to entries, got {_describe(nodes)}")
    scores: dict[int, float] = {}
    neurons: dict[int, list[bool]] = {}
    neuron_scores: dict[int, list[float]] = {}
    for name, entry in nodes.items():
        field = f'nodes["{name}"]'
        if not isinstance(entry, Mapping):
            _fail(path, field, f'expected an object like {{"in_graph": true}}, got {_describe(entry)}')
        if name == LOGITS:
            continue  # always in the graph; MIB ignores this entry too
        try:
            index = graph.forward_index(name)
        except UnknownNameError as err:
            _fail(path, field, str(err))
        _check_keys(path, entry, ("in_graph",), NODE_ENTRY_KEYS, "a node entry", prefix=field)
        graph.nodes_in_graph[index] = _json_bool(path, f"{field}.in_graph", entry["in_graph"])
        if "score" in entry:
            scores[index] = _json_number(path, f"{field}.score", entry["score"])
        if "neurons" in entry:
            neurons[index] = _json_list(path, f"{field}.neurons", entry["neurons"], graph.d_model, "bool")
        if "neurons_scores" in entry:
            neuron_scores[index] = _json_list(
                path, f"{field}.neurons_scores", entry["neurons_scores"], graph.d_model, "float"
            )
    # As MIB: any node score makes the graph node-level, any neuron list neuron-level; the rest is unscored.
    n = graph.n_forward
    if scores:
        graph.node_scores = _scatter_rows(scores, n, (), _NAN, torch.float32)
    if neurons:
        graph.neurons_in_graph = _scatter_rows(neurons, n, (graph.d_model,), False, torch.bool)
    if neuron_scores:
        graph.neuron_scores = _scatter_rows(neuron_scores, n, (graph.d_model,), _NAN, torch.float32)


def _load_json_edges(path: PathLike, graph: Graph, edges: Any) -> None:
    if not isinstance(edges, Mapping):
        _fail(path, "edges", f"expected an object mapping edge names to entries, got {_describe(edges)}")
    forward: list[int] = []
    backward: list[int] = []
    scores: list[float] = []
    members: list[bool] = []
    for name, entry in edges.items():  # one pass; per-edge work is kept to dict lookups and type checks
        field = f'edges["{name}"]'
        try:
            source, slot = graph.edge_index(name)
        except UnknownNameError as err:
            _fail(path, field, str(err))
        if not isinstance(entry, Mapping):
            _fail(path, field, f'expected an object like {{"score": 0.5, "in_graph": true}}, got {_describe(entry)}')
        if len(entry) != 2 or "score" not in entry or "in_graph" not in entry:  # slow path only on error
            _check_keys(path, entry, EDGE_ENTRY_KEYS, EDGE_ENTRY_KEYS, "an edge entry", prefix=field)
        score, member = entry["score"], entry["in_graph"]
        if type(score) is not float:
            score = _json_number(path, f"{field}.score", score)
        if type(member) is not bool:
            _json_bool(path, f"{field}.in_graph", member)
        forward.append(source)
        backward.append(slot)
        scores.append(score)
        members.append(member)
    if forward:
        graph.edge_scores[forward, backward] = torch.tensor(scores, dtype=torch.float32)
        graph.edges_in_graph[forward, backward] = torch.tensor(members, dtype=torch.bool)


def load_json(path: PathLike, layout: GraphLayout | None = None) -> Graph:
    """Read MIB's JSON format (edges not listed: score 0, not in the graph)."""
    data = _read_json(path)
    _check_keys(path, data, JSON_KEYS, JSON_KEYS, "a JSON object")
    graph = Graph(_layout_from_cfg(path, data["cfg"], "cfg", layout))
    _load_json_nodes(path, graph, data["nodes"])
    _load_json_edges(path, graph, data["edges"])
    return graph


def _node_entries(graph: Graph) -> dict[str, dict[str, Any]]:
    columns: dict[str, list[Any]] = {"in_graph": graph.nodes_in_graph.tolist()}
    optional = {"score": graph.node_scores, "neurons": graph.neurons_in_graph, "neurons_scores": graph.neuron_scores}
    columns.update({key: (value if value.dtype == torch.bool else file_scores(graph, value)).tolist()
                    for key, value in optional.items() if value is not None})
    entries = {
        name: {key: column[i] for key, column in columns.items()} for i, name in enumerate(graph.forward_names)
    }
    entries[LOGITS] = {"in_graph": True}
    return entries


def save_json(graph: Graph, path: PathLike) -> None:
    """Write MIB's JSON format, atomically; edges in MIB's order, unscored values as ``NaN``, scores in MIB's
    magnitude convention (see :func:`file_scores`)."""
    forward, backward = graph.edge_indices
    scores = file_scores(graph, graph.edge_scores[forward, backward]).tolist()
    members = graph.edges_in_graph[forward, backward].tolist()
    edges = {name: {"score": s, "in_graph": m} for name, s, m in zip(graph.edge_names(), scores, members)}
    data = {"cfg": graph.cfg, "nodes": _node_entries(graph), "edges": edges}
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
        json.dump(data, handle)


# ------------------------------------------------------------------ dispatch
_LOADERS = {".json": load_json, ".pt": load_pt, ".pth": load_pt, ".safetensors": load_safetensors}
_SAVERS = {".json": save_json, ".pt": save_pt, ".pth": save_pt, ".safetensors": save_safetensors}
CIRCUIT_SUFFIXES: tuple[str, ...] = tuple(_LOADERS)


def _suffix(path: PathLike, known: Iterable[str]) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in known:
        _fail(path, None, f"unknown circuit file type {suffix or '(no suffix)'!r}; "
              f"expected one of {', '.join(CIRCUIT_SUFFIXES)}")
    return suffix


def load_circuit(path: PathLike, layout: GraphLayout | None = None) -> Graph:
    """Read a circuit file of any supported format, chosen by suffix.

    With ``layout`` (the model's graph layout) a file made for a different model is refused up front.
    """
    return _LOADERS[_suffix(path, _LOADERS)](path, layout)


def save_circuit(graph: Graph, path: PathLike) -> None:
    """Write ``graph`` in the format its suffix names (``.json``, ``.pt``/``.pth``, ``.safetensors``)."""
    _SAVERS[_suffix(path, _SAVERS)](graph, path)


__all__ = [
    "CIRCUIT_SUFFIXES",
    "file_scores",
    "load_circuit",
    "load_json",
    "load_pt",
    "load_safetensors",
    "save_circuit",
    "save_json",
    "save_pt",
    "save_safetensors",
]
