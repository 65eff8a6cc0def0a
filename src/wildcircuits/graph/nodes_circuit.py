"""Node-level circuits: sets of heads and MLPs (the IOI-paper view), optionally per position.

A `NodeCircuit` keeps some heads / MLPs; `input` and `logits` are always kept. Removing a node
means replacing its output (everywhere it is read) by the ablation value, which for the edge
engine is ablating every outgoing edge of the removed node: `NodeCircuit.ablated()`. As an edge
circuit it is every edge among the kept nodes, `input` and `logits` (`to_circuit()`); the two give
the same forward, because the inputs of a node whose output is fully ablated cannot matter.

Per position: `positions[node]` lists the token positions where `node` is kept (it is ablated at
all others); nodes without an entry are kept at every position. Only the outgoing edges of the
removed (node, position) pairs are ablated: a head kept at position 5 still reads keys and values
at position 3 even when its own output at 3 is removed. `ablated_by_position(n_pos)` gives that
mask as (pos, receiver, sender); `node_ablated(batch, n_pos)` the same as the edge engine's
node-position mask (`EdgeForward.run(node_ablated=...)`), which runs it exactly in one forward.

Node scores from edge scores (`node_scores`): for each node, the sum of |score| over its incoming
edges (all q / k / v slots) and its outgoing edges.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch

from wildcircuits.errors import GraphError
from wildcircuits.graph.circuit import Circuit, EdgeScores
from wildcircuits.graph.graph import Graph
from wildcircuits.names import Node, NodeKind, parse_node


@dataclass(frozen=True)
class NodeCircuit:
    """nodes: the kept heads / MLPs; positions: node -> kept positions (missing: all)."""

    graph: Graph
    nodes: frozenset[Node]
    positions: Mapping[Node, tuple[int, ...]] = field(default_factory=dict)
    description: str = ""

    def __post_init__(self) -> None:
        for node in self.nodes:
            if node not in self.graph.sender_index or node.kind is NodeKind.INPUT:
                raise GraphError(
                    f"node {node.name} is not a head or MLP of this graph ({self.graph.describe()})"
                )
        for node, kept in self.positions.items():
            if node not in self.nodes:
                raise GraphError(f"positions given for {node.name}, which is not in the circuit")
            if any(p < 0 for p in kept):
                raise GraphError(f"negative position in {node.name}'s positions {kept}")
        object.__setattr__(self, "nodes", frozenset(self.nodes))
        plain = {node: tuple(sorted(set(kept))) for node, kept in self.positions.items()}
        object.__setattr__(self, "positions", plain)

    # construction -----------------------------------------------------------------------------
    @classmethod
    def from_names(
        cls,
        graph: Graph,
        names: Iterable[str],
        positions: Mapping[str, Iterable[int]] | None = None,
        description: str = "",
    ) -> NodeCircuit:
        """`["a9.h6", "m3"]`, optionally `{"a9.h6": [14]}`; unknown names raise."""
        nodes = frozenset(parse_node(name) for name in names)
        kept = {parse_node(name): tuple(p) for name, p in (positions or {}).items()}
        return cls(graph, nodes, kept, description)

    @classmethod
    def from_circuit(cls, circuit: Circuit) -> NodeCircuit:
        """The heads and MLPs that some edge of `circuit` touches."""
        nodes = {n for n in circuit.nodes() if n.kind in (NodeKind.HEAD, NodeKind.MLP)}
        return cls(circuit.graph, frozenset(nodes), {}, f"nodes of {circuit.description}")

    # views ------------------------------------------------------------------------------------
    @property
    def per_position(self) -> bool:
        return bool(self.positions)

    def kept_senders(self) -> torch.Tensor:
        """(sender,) bool: `input` and the kept nodes (at any position)."""
        kept = torch.zeros(self.graph.n_senders, dtype=torch.bool)
        kept[0] = True
        for node in self.nodes:
            kept[self.graph.sender_index[node]] = True
        return kept

    def to_circuit(self) -> Circuit:
        """Every edge among the kept nodes, `input` and `logits`. Position-free circuits only."""
        if self.per_position:
            raise GraphError(
                "a per-position node circuit has no position-free edge circuit; "
                "use ablated_by_position(n_pos)"
            )
        kept = self.kept_senders()
        receiver_kept = torch.tensor(
            [r.node.kind is NodeKind.LOGITS or r.node in self.nodes for r in self.graph.receivers]
        )
        edges = self.graph.valid & kept[None, :] & receiver_kept[:, None]
        return Circuit(self.graph, edges, self.description or "node circuit")

    def ablated(self) -> torch.Tensor:
        """(receiver, sender) bool for `EdgeForward.run`: every outgoing edge of removed nodes."""
        if self.per_position:
            raise GraphError("a per-position node circuit needs ablated_by_position(n_pos)")
        return self.graph.valid & ~self.kept_senders()[None, :]

    def kept_positions(self, n_pos: int) -> torch.Tensor:
        """(pos, sender) bool: where each sender's output is kept."""
        kept = self.kept_senders()[None, :].repeat(n_pos, 1)  # (pos, sender)
        for node, positions in self.positions.items():
            column = self.graph.sender_index[node]
            if positions and positions[-1] >= n_pos:
                raise GraphError(f"{node.name} kept at position {positions[-1]} >= n_pos {n_pos}")
            kept[:, column] = False
            kept[list(positions), column] = True
        return kept

    def node_ablated(self, batch: int, n_pos: int) -> torch.Tensor:
        """(batch, pos, sender) bool for `EdgeForward.run(node_ablated=...)`: the removed
        (node, position) pairs, the same in every row (position-free circuits too)."""
        return (~self.kept_positions(n_pos))[None].expand(batch, -1, -1).clone()

    def ablated_by_position(self, n_pos: int) -> torch.Tensor:
        """(pos, receiver, sender) bool: edge u -> v ablated at position p iff u is removed at p."""
        kept = self.kept_positions(n_pos)  # (pos, sender)
        return self.graph.valid[None, :, :] & ~kept[:, None, :]

    def names(self) -> list[str]:
        return [node.name for node in sorted(self.nodes)]


# node scores ----------------------------------------------------------------------------------
def node_scores(scores: EdgeScores) -> torch.Tensor:
    """(sender,) float: sum of |score| over each node's incoming and outgoing edges.

    Aligned with `graph.senders` (`input` has only outgoing edges); logits are not a sender."""
    graph, magnitude = scores.graph, scores.scores.abs()  # (receiver, sender)
    outgoing = magnitude.sum(0)  # (sender,)
    incoming_by_receiver = magnitude.sum(1)  # (receiver,)
    incoming = torch.zeros(graph.n_senders)
    for row, receiver in enumerate(graph.receivers):
        if receiver.node.kind is not NodeKind.LOGITS:
            incoming[graph.sender_index[receiver.node]] += incoming_by_receiver[row]
    return outgoing + incoming


def top_nodes(scores: EdgeScores | torch.Tensor, n: int, graph: Graph | None = None) -> NodeCircuit:
    """The `n` heads / MLPs with the highest node score (ties: earlier in `graph.senders`).

    `scores` is EdgeScores (aggregated with `node_scores`) or a (sender,) node-score tensor."""
    if isinstance(scores, EdgeScores):
        graph, values = scores.graph, node_scores(scores)
    elif graph is None:
        raise GraphError("top_nodes with a node-score tensor needs the graph")
    else:
        values = scores.float().cpu()
    if tuple(values.shape) != (graph.n_senders,):
        raise GraphError(f"node scores must have shape ({graph.n_senders},), got {values.shape}")
    candidates = values.clone()
    candidates[0] = -torch.inf  # `input` is always kept, never chosen
    n_candidates = graph.n_senders - 1
    if not 0 <= n <= n_candidates:
        raise GraphError(f"node count {n} is outside [0, {n_candidates}]")
    order = torch.sort(candidates, descending=True, stable=True).indices[:n]
    nodes = frozenset(graph.senders[i] for i in order.tolist())
    return NodeCircuit(graph, nodes, {}, f"top {n} nodes by summed |edge score|")
