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

from wildcircuits.errors import GraphError
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
                "format": "wildcircuits.edge_scores/1",
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
        data = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(data, dict) or data.get("format") != "wildcircuits.edge_scores/1":
            raise GraphError(f"{path} is not a wildcircuits edge-scores file")
        stored = graph_from_config(data["graph"])
        if graph is not None and graph_config(graph) != graph_config(stored):
            raise GraphError(
                f"{path} holds scores for a graph of {stored.describe()}; "
                f"this model's graph is {graph.describe()}"
            )
        return cls(
            graph or stored, data["scores"], data["method"], data["settings"], data["provenance"]
        )


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
