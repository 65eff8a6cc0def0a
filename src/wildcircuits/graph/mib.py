"""Circuit files: MIB JSON and MIB-style PT, both ways.

JSON (what MIB / EAP-IG's `Graph.to_json` writes and `from_json` reads):
    {"cfg": {"n_layers", "n_heads", "parallel_attn_mlp", "d_model"},
     "nodes": {"a0.h1": {"in_graph": bool, "score"?: float}, ...},
     "edges": {"a0.h1->a2.h3<q>": {"score": float, "in_graph": bool}, ...}}
plus our own top-level "wildcircuits" block (method, settings, provenance, whether the scores are
real), which MIB's reader ignores. Edge `in_graph` flags define the circuit; node flags are only
checked (MIB re-derives nodes from edges when it prunes) and disagreements counted in the report.

PT (MIB's `Graph.to_pt` layout, so either tool reads the other's files): a dict of plain values
and tensors: cfg, src_nodes (sender names), dst_nodes (receiver names), edges_scores and
edges_in_graph (src, dst), nodes_in_graph (src,), optional nodes_scores, plus "wildcircuits".
Loaded with `torch.load(weights_only=True)`: a file holding any other object is refused, so a
circuit file from elsewhere can never run code.

Reading checks the model shape (a mismatch names both shapes), raises on any unknown edge or node
name, and sets edges of this graph that the file lacks to "not in graph", counting them in the
returned `ImportReport`.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from wildcircuits.errors import GraphError
from wildcircuits.files import (
    FileCheck,
    kind_of,
    one_line,
    parse_json,
    read_text_file,
    safe_torch_load,
)
from wildcircuits.graph.circuit import (
    Circuit,
    EdgeScores,
    checked_graph_shape,
    describe_shape,
    graph_shape,
)
from wildcircuits.graph.graph import Graph
from wildcircuits.names import LOGITS, parse_node, parse_receiver
from wildcircuits.results import atomic_write_bytes

FORMAT = "wildcircuits.circuit/1"
JSON_FILE = "MIB circuit file (JSON)"
PT_FILE = "MIB circuit file (PT)"


@dataclass(frozen=True)
class ImportReport:
    """What a circuit file held, relative to this graph."""

    path: str
    n_edges_in_file: int
    n_missing: int  # edges of this graph absent from the file (set to not in graph)
    n_in_graph: int
    has_scores: bool
    n_node_conflicts: int = 0  # in-graph edges touching a node the file marks not in graph


@dataclass(frozen=True)
class CircuitFile:
    circuit: Circuit
    scores: EdgeScores | None
    report: ImportReport


# JSON -----------------------------------------------------------------------------------------
def save_mib_json(
    path: Path | str,
    circuit: Circuit,
    scores: EdgeScores | None = None,
    d_model: int | None = None,
    node_scores: torch.Tensor | None = None,
) -> Path:
    """Write `circuit` (and its edge scores, else 0.0) as MIB JSON, atomically.

    `d_model` goes into cfg (MIB's reader needs it); `node_scores` is (sender,)."""
    graph = circuit.graph
    values = _scores_for(circuit, scores).values().tolist()
    flags = circuit.edges[graph.valid].tolist()
    edges = {
        e.name: {"score": v, "in_graph": f}
        for e, v, f in zip(graph.edges, values, flags, strict=True)
    }
    in_nodes = set(circuit.nodes())
    nodes: dict[str, dict[str, Any]] = {}
    for i, node in enumerate([*graph.senders, LOGITS]):
        nodes[node.name] = {"in_graph": node in in_nodes}
        if node_scores is not None and i < graph.n_senders:
            nodes[node.name]["score"] = float(node_scores[i])
    document = {
        "cfg": _cfg(graph, d_model),
        "nodes": nodes,
        "edges": edges,
        "wildcircuits": _metadata(circuit, scores),
    }
    return atomic_write_bytes(path, json.dumps(document).encode())


def load_mib_json(path: Path | str, graph: Graph, d_model: int | None = None) -> CircuitFile:
    """Read a MIB JSON circuit for `graph`; see the module docstring for the checks."""
    check = FileCheck(Path(path), JSON_FILE, GraphError)
    document = parse_json(read_text_file(path, JSON_FILE, GraphError), check)
    if not isinstance(document, Mapping) or not {"cfg", "edges"} <= document.keys():
        got = f"keys {sorted(document)[:6]}" if isinstance(document, Mapping) else kind_of(document)
        raise check.problem(f"not a MIB circuit file (needs 'cfg' and 'edges'; got {got})")
    _check_cfg(check, document["cfg"], graph, d_model)
    edges = check.mapping(document["edges"], "edges")
    cells = _edge_cells(graph)
    unknown = [name for name in edges if name not in cells]
    if unknown:
        _raise_unknown(path, unknown, graph)
    entries = [(cells[name], *_edge_entry(path, name, e)) for name, e in edges.items()]
    in_graph = torch.zeros_like(graph.valid)
    values = torch.zeros(graph.n_receivers, graph.n_senders)
    if entries:
        cell_list, flags, scores = zip(*entries, strict=True)
        index = tuple(torch.tensor(cell_list, dtype=torch.long).reshape(-1, 2).T)  # (2, edge)
        in_graph[index], values[index] = torch.tensor(flags), torch.tensor(scores)
    circuit, scores = _assemble(check, graph, in_graph, values, document.get("wildcircuits"))
    nodes = check.mapping(document.get("nodes") or {}, "nodes")
    report = ImportReport(
        str(path),
        len(edges),
        graph.n_edges - len(edges),
        circuit.n_edges,
        scores is not None,
        _node_conflicts(path, circuit, _json_node_flags(path, nodes)),
    )
    return CircuitFile(circuit, scores, report)


# PT -------------------------------------------------------------------------------------------
def save_circuit_pt(
    path: Path | str,
    circuit: Circuit,
    scores: EdgeScores | None = None,
    d_model: int | None = None,
) -> Path:
    """Write `circuit` (and scores) in MIB's PT layout, atomically; loads with weights_only."""
    graph = circuit.graph
    in_nodes = set(circuit.nodes())
    data = {
        "cfg": _cfg(graph, d_model),
        "src_nodes": [node.name for node in graph.senders],
        "dst_nodes": [receiver.name for receiver in graph.receivers],
        "edges_scores": _scores_for(circuit, scores).scores.T.contiguous(),  # (src, dst)
        "edges_in_graph": circuit.edges.T.contiguous(),  # (src, dst)
        "nodes_in_graph": torch.tensor([node in in_nodes for node in graph.senders]),
        "wildcircuits": _metadata(circuit, scores),
    }
    buffer = io.BytesIO()
    torch.save(data, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def load_circuit_pt(path: Path | str, graph: Graph, d_model: int | None = None) -> CircuitFile:
    """Read a MIB-style PT circuit for `graph` (weights_only=True; see the module docstring)."""
    check = FileCheck(Path(path), PT_FILE, GraphError)
    data = safe_torch_load(path, PT_FILE, GraphError)
    required = ("cfg", "src_nodes", "dst_nodes", "edges_scores", "edges_in_graph")
    check.mapping(data, "its content", required)
    _check_cfg(check, data["cfg"], graph, d_model)
    columns = [_sender_index(path, graph, name) for name in _names(check, data, "src_nodes")]
    rows = [_receiver_index(path, graph, name) for name in _names(check, data, "dst_nodes")]
    if len(set(columns)) != len(columns) or len(set(rows)) != len(rows):
        raise GraphError(f"{path}: src_nodes / dst_nodes repeat a name")
    shape = (len(columns), len(rows))
    flags = _edge_tensor(check, data["edges_in_graph"], "edges_in_graph", shape).bool()
    stored = _edge_tensor(check, data["edges_scores"], "edges_scores", shape).float()
    in_graph = torch.zeros_like(graph.valid)
    values = torch.zeros(graph.n_receivers, graph.n_senders)
    index = (
        torch.tensor(rows, dtype=torch.long)[None, :],
        torch.tensor(columns, dtype=torch.long)[:, None],
    )
    in_graph[index], values[index] = flags, stored
    present = torch.zeros_like(graph.valid)
    present[index] = True
    backwards = in_graph & ~graph.valid
    if bool(backwards.any()):
        count = int(backwards.sum())
        raise GraphError(f"{path}: {count} in-graph edges are not edges of {graph.describe()}")
    circuit, scores = _assemble(check, graph, in_graph, values, data.get("wildcircuits"))
    n_present = int((present & graph.valid).sum())
    report = ImportReport(
        str(path), n_present, graph.n_edges - n_present, circuit.n_edges, scores is not None
    )
    return CircuitFile(circuit, scores, report)


def _names(check: FileCheck, data: Mapping[str, Any], key: str) -> list[str]:
    names = data[key]
    if not isinstance(names, list | tuple):
        raise check.problem(f"{key} is {kind_of(names)}, expected a list of node names")
    return [check.string(name, f"{key}[{i}]") for i, name in enumerate(names)]


def _edge_tensor(check: FileCheck, value: Any, key: str, shape: tuple[int, int]) -> torch.Tensor:
    """A (src, dst) tensor of bools or real numbers."""
    if not isinstance(value, torch.Tensor) or value.is_complex():
        raise check.problem(f"{key} is {kind_of(value)}, expected a real (src, dst) tensor {shape}")
    if tuple(value.shape) != shape:
        raise check.problem(
            f"edge tensors must be (src, dst) = {shape}; {key} is {tuple(value.shape)}"
        )
    return value


def load_circuit(path: Path | str, graph: Graph, d_model: int | None = None) -> CircuitFile:
    """By extension: `.json` -> MIB JSON, `.pt` -> PT."""
    suffix = Path(path).suffix.lower()
    if suffix == ".json":
        return load_mib_json(path, graph, d_model)
    if suffix == ".pt":
        return load_circuit_pt(path, graph, d_model)
    raise GraphError(f"circuit file {path} must end in .json (MIB JSON) or .pt")


# helpers --------------------------------------------------------------------------------------
def _cfg(graph: Graph, d_model: int | None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "n_layers": graph.n_layers,
        "n_heads": graph.n_heads,
        "parallel_attn_mlp": graph.parallel_attn_mlp,
    }
    if d_model is not None:
        cfg["d_model"] = int(d_model)
    return cfg


def _check_cfg(check: FileCheck, cfg: Any, graph: Graph, d_model: int | None) -> None:
    if not isinstance(cfg, Mapping) or not {"n_layers", "n_heads"} <= cfg.keys():
        raise check.problem(f"cfg must give n_layers and n_heads, got {one_line(repr(cfg), 80)}")
    shape = checked_graph_shape(check, cfg, "cfg")
    if shape != graph_shape(graph):
        raise check.problem(
            f"is a circuit for {describe_shape(*shape)}; this model's graph is {graph.describe()}"
        )
    stored = cfg.get("d_model")
    if d_model is not None and stored is not None and stored != d_model:
        raise check.problem(
            f"is for d_model {one_line(repr(stored), 40)}; this model has {d_model}"
        )


def _edge_cells(graph: Graph) -> dict[str, tuple[int, int]]:
    cells = graph.valid.nonzero().tolist()
    return {edge.name: (r, s) for edge, (r, s) in zip(graph.edges, cells, strict=True)}


def _raise_unknown(path, unknown: list[str], graph: Graph) -> None:
    shown = ", ".join(repr(name) for name in unknown[:5])
    try:  # say why the first one is wrong (bad syntax, unknown node, or a backwards edge)
        graph.edge_cell(unknown[0])
        why = ""
    except GraphError as error:
        why = f" ({error})"
    raise GraphError(
        f"{path}: {len(unknown)} edge names are not edges of this graph "
        f"({graph.describe()}): {shown}{why}"
    )


def _edge_entry(path, name: str, entry: Any) -> tuple[bool, float]:
    if not isinstance(entry, Mapping) or not isinstance(entry.get("in_graph"), bool):
        raise GraphError(
            f"{path}: edge {name} needs a boolean 'in_graph', got {one_line(repr(entry), 60)}"
        )
    score = entry.get("score", 0.0)
    if score is None:
        score = 0.0
    if isinstance(score, bool) or not isinstance(score, (int, float)):
        raise GraphError(f"{path}: edge {name} has a non-numeric score {one_line(repr(score), 40)}")
    try:
        return entry["in_graph"], float(score)
    except OverflowError:
        raise GraphError(f"{path}: edge {name} has a score too large for a float") from None


def _json_node_flags(path, nodes: Any) -> dict[str, bool]:
    flags = {}
    for name, entry in nodes.items():
        _node(path, name)  # unknown node names raise
        flag = entry.get("in_graph") if isinstance(entry, Mapping) else entry  # old: name -> bool
        if not isinstance(flag, bool):
            shown = one_line(repr(entry), 60)
            raise GraphError(f"{path}: node {name} needs a boolean 'in_graph', got {shown}")
        flags[name] = flag
    return flags


def _node_conflicts(path, circuit: Circuit, flags: dict[str, bool]) -> int:
    for name in flags:
        node = _node(path, name)
        if node != LOGITS and node not in circuit.graph.sender_index:
            raise GraphError(f"{path}: node {name} is not in this graph")
    excluded = {name for name, flag in flags.items() if not flag}
    return sum(
        edge.sender.name in excluded or edge.receiver.node.name in excluded
        for edge in circuit.edge_list()
    )


def _node(path, name: str):
    try:
        return parse_node(name)
    except GraphError as error:
        raise GraphError(f"{path}: {error}") from None


def _sender_index(path, graph: Graph, name: str) -> int:
    node = _node(path, name)
    if node not in graph.sender_index:
        raise GraphError(f"{path}: source node {name} is not in this graph ({graph.describe()})")
    return graph.sender_index[node]


def _receiver_index(path, graph: Graph, name: str) -> int:
    try:
        receiver = parse_receiver(name)
    except GraphError as error:
        raise GraphError(f"{path}: {error}") from None
    if receiver not in graph.receiver_index:
        raise GraphError(f"{path}: destination {name} is not in this graph ({graph.describe()})")
    return graph.receiver_index[receiver]


def _scores_for(circuit: Circuit, scores: EdgeScores | None) -> EdgeScores:
    if scores is None:
        return EdgeScores(circuit.graph, torch.zeros(circuit.graph.valid.shape), "none")
    if scores.graph is not circuit.graph and (scores.graph.describe() != circuit.graph.describe()):
        raise GraphError(
            f"scores are for {scores.graph.describe()}, the circuit for {circuit.graph.describe()}"
        )
    return scores


def _metadata(circuit: Circuit, scores: EdgeScores | None) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "format": FORMAT,
        "description": circuit.description,
        "has_scores": scores is not None,
    }
    if scores is not None:
        meta |= {
            "method": scores.method,
            "settings": _plain(scores.settings),
            "provenance": _plain(scores.provenance),
        }
    return meta


def _assemble(check: FileCheck, graph, in_graph, values, meta) -> tuple[Circuit, EdgeScores | None]:
    """The circuit and scores read from a file; `meta` is our "wildcircuits" block, if any."""
    meta = _meta(check, meta)
    if not bool(values.isfinite().all()):
        raise check.problem(f"{int((~values.isfinite()).sum())} edge scores are not finite")
    description = meta.get("description") or f"circuit from {check.path.name}"
    circuit = Circuit(graph, in_graph, description)
    if meta and not meta.get("has_scores", True):
        return circuit, None
    provenance = {**dict(meta.get("provenance") or {}), "imported_from": str(check.path)}
    method = meta.get("method") or "imported"
    scores = EdgeScores(graph, values, method, dict(meta.get("settings") or {}), provenance)
    return circuit, scores


def _meta(check: FileCheck, meta: Any) -> dict[str, Any]:
    """Our "wildcircuits" block, each field checked (a foreign file may lack it: {})."""
    if not isinstance(meta, Mapping):
        return {}
    out = dict(meta)
    for key in ("description", "method"):
        if out.get(key) is not None:
            out[key] = check.string(out[key], f"wildcircuits.{key}")
    for key in ("settings", "provenance"):
        if out.get(key) is not None:
            out[key] = dict(check.mapping(out[key], f"wildcircuits.{key}"))
    if out.get("has_scores") is not None:
        out["has_scores"] = check.boolean(out["has_scores"], "wildcircuits.has_scores")
    return out


def _plain(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """JSON-plain copy (unknown objects become strings), safe for weights_only loading."""
    return json.loads(json.dumps(dict(mapping), default=str))
