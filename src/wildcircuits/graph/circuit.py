"""Edge scores and circuits over a `Graph`.

Both are dense (receiver, sender) matrices aligned with `Graph.receivers` x `Graph.senders`;
cells outside `Graph.valid` are never edges (scores there are 0, masks there are False).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from wildcircuits.errors import GraphError, NotScoresFileError
from wildcircuits.graph.graph import Graph
from wildcircuits.names import Edge, Node, NodeKind


@dataclass(frozen=True)
class EdgeScores:
    """scores: (receiver, sender) float; higher = more important (sign kept as computed).

    `method` and `settings` say how the scores were made (e.g. {"steps": 5, "riemann":
    "left"}); `provenance` how the numbers were obtained (model, quantization, task, split,
    seed, metric, corruption).
    """

    graph: Graph
    scores: torch.Tensor
    method: str
    settings: Mapping[str, Any] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shape = (self.graph.n_receivers, self.graph.n_senders)
        if tuple(self.scores.shape) != shape:
            raise GraphError(f"scores shape {tuple(self.scores.shape)} != graph shape {shape}")
        valid = self.graph.valid.to(self.scores.device)
        object.__setattr__(self, "scores", torch.where(valid, self.scores, 0.0).float().cpu())

    def values(self) -> torch.Tensor:
        """Scores of the real edges, in `Graph.edges` order: (edge,)."""
        return self.scores[self.graph.valid]

    def of(self, edge: Edge | str) -> float:
        r, s = self.graph.edge_cell(edge)
        return float(self.scores[r, s])

    def top(self, k: int = 20, by_abs: bool = True) -> list[tuple[str, float]]:
        values = self.values()
        order = (values.abs() if by_abs else values).argsort(descending=True)[:k]
        edges = self.graph.edges
        return [(edges[i].name, float(values[i])) for i in order.tolist()]

    def _repr_html_(self) -> str:
        from wildcircuits.report.notebook import edge_scores_html

        return edge_scores_html(self)

    def save(self, path: Path | str) -> Path:
        """A `.pt` file of plain tensors / strings / numbers (loads with weights_only=True)."""
        import io

        from wildcircuits.results import atomic_write_bytes

        buffer = io.BytesIO()
        torch.save(
            {
                "format": SCORES_FORMAT,
                "graph": graph_config(self.graph),
                "scores": self.scores,
                "method": self.method,
                "settings": dict(self.settings),
                "provenance": dict(self.provenance),
            },
            buffer,
        )
        return atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: Path | str, graph: Graph | None = None) -> EdgeScores:
        """Read a file written by `save`; GraphError (one line naming the file) on any problem:
        missing, damaged, hostile (a pickle is never run), wrong structure, or another graph."""
        from wildcircuits.files import FileCheck, safe_torch_load

        check = FileCheck(Path(path), SCORES_FILE, GraphError)
        data = check.mapping(safe_torch_load(path, SCORES_FILE, GraphError), "its content")
        if data.get("format") != SCORES_FORMAT:
            raise FileCheck(Path(path), SCORES_FILE, NotScoresFileError).problem(
                f"is not a wildcircuits edge-scores file (format {data.get('format')!r}, "
                f"expected {SCORES_FORMAT!r})"
            )
        check.mapping(data, "its content", ("graph", "scores", "method"))
        shape = checked_graph_shape(check, data["graph"], "graph")
        if graph is not None and shape != graph_shape(graph):
            raise check.problem(
                f"holds scores for a graph of {describe_shape(*shape)}; "
                f"this model's graph is {graph.describe()}"
            )
        cells = graph_cells(*shape[:2])
        scores = check.tensor(data["scores"], "scores", cells, "float")
        stored = graph if graph is not None else Graph(*shape)
        nan = int(torch.where(stored.valid, scores.float(), 0.0).isnan().sum())
        if nan:
            raise check.problem(f"scores: {nan} edge scores are NaN, expected numbers")
        settings = check.mapping(data.get("settings", {}), "settings")
        provenance = check.mapping(data.get("provenance", {}), "provenance")
        method = check.string(data["method"], "method")
        return cls(stored, scores.float(), method, dict(settings), dict(provenance))


@dataclass(frozen=True)
class Circuit:
    """A set of edges: `edges` is a (receiver, sender) bool mask inside `graph.valid`."""

    graph: Graph
    edges: torch.Tensor
    description: str = ""

    def __post_init__(self) -> None:
        shape = (self.graph.n_receivers, self.graph.n_senders)
        if tuple(self.edges.shape) != shape or self.edges.dtype != torch.bool:
            raise GraphError(
                f"circuit mask must be bool {shape}, got {self.edges.dtype} "
                f"{tuple(self.edges.shape)}"
            )
        object.__setattr__(self, "edges", (self.edges.cpu() & self.graph.valid))

    @classmethod
    def full(cls, graph: Graph) -> Circuit:
        return cls(graph, graph.valid.clone(), "full model")

    @classmethod
    def empty(cls, graph: Graph) -> Circuit:
        return cls(graph, torch.zeros_like(graph.valid), "empty")

    @classmethod
    def from_edges(
        cls, graph: Graph, edges: Iterable[Edge | str], description: str = ""
    ) -> Circuit:
        mask = torch.zeros_like(graph.valid)
        for edge in edges:
            r, s = graph.edge_cell(edge)
            mask[r, s] = True
        return cls(graph, mask, description)

    @property
    def n_edges(self) -> int:
        return int(self.edges.sum())

    @property
    def fraction(self) -> float:
        return self.n_edges / self.graph.n_edges

    @property
    def ablated(self) -> torch.Tensor:
        """The mask the edge engine takes: real edges NOT in the circuit."""
        return self.graph.valid & ~self.edges

    def edge_list(self) -> list[Edge]:
        return [
            Edge(self.graph.senders[s], self.graph.receivers[r])
            for r, s in self.edges.nonzero().tolist()
        ]

    def nodes(self) -> list[Node]:
        """Nodes touched by at least one edge (senders and receiver nodes)."""
        senders = {self.graph.senders[s] for s in self.edges.any(0).nonzero().flatten().tolist()}
        receivers = {
            self.graph.receivers[r].node for r in self.edges.any(1).nonzero().flatten().tolist()
        }
        return sorted(senders | receivers)

    def heads(self) -> list[Node]:
        return [n for n in self.nodes() if n.kind is NodeKind.HEAD]

    def _repr_html_(self) -> str:
        from wildcircuits.report.notebook import circuit_html

        return circuit_html(self)


def graph_config(graph: Graph) -> dict[str, Any]:
    return {
        "n_layers": graph.n_layers,
        "n_heads": graph.n_heads,
        "parallel_attn_mlp": graph.parallel_attn_mlp,
    }


def graph_from_config(config: Mapping[str, Any]) -> Graph:
    return Graph(
        int(config["n_layers"]),
        int(config["n_heads"]),
        bool(config.get("parallel_attn_mlp", False)),
    )


SCORES_FORMAT = "wildcircuits.edge_scores/1"
SCORES_FILE = "wildcircuits scores file"
MAX_LAYERS = MAX_HEADS = 256  # a file claiming more is damaged or hostile (the graph is dense)


def graph_shape(graph: Graph) -> tuple[int, int, bool]:
    return graph.n_layers, graph.n_heads, graph.parallel_attn_mlp


def graph_cells(n_layers: int, n_heads: int) -> tuple[int, int]:
    """(receivers, senders) of a graph, without building it."""
    return n_layers * (3 * n_heads + 1) + 1, n_layers * (n_heads + 1) + 1


def describe_shape(n_layers: int, n_heads: int, parallel: bool) -> str:
    kind = "parallel" if parallel else "sequential"
    return f"{n_layers} layers x {n_heads} heads, {kind} blocks"


def checked_graph_shape(check: Any, config: Any, where: str) -> tuple[int, int, bool]:
    """(n_layers, n_heads, parallel_attn_mlp) from a file's graph config, each checked by
    `check` (a `wildcircuits.files.FileCheck`), so no absurd graph is ever built."""
    config = check.mapping(config, where, ("n_layers", "n_heads"))
    n_layers = check.integer(config["n_layers"], f"{where}.n_layers", 1, MAX_LAYERS)
    n_heads = check.integer(config["n_heads"], f"{where}.n_heads", 1, MAX_HEADS)
    parallel = config.get("parallel_attn_mlp", False)
    parallel = False if parallel is None else check.boolean(parallel, f"{where}.parallel_attn_mlp")
    return n_layers, n_heads, parallel
