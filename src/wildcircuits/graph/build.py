"""Circuits from edge scores: top-n, threshold, greedy-from-logits; pruning to a fixed point.

Ranking: `Ranking.ABSOLUTE` orders edges by |score| (MIB's CMD convention), `Ranking.SIGNED` by
the score itself (MIB's CPR convention). Ties are broken by `Graph.edges` order (earlier wins),
so every construction is deterministic.

Sizes: an `int` is a number of edges, a `float` a fraction of `graph.n_edges` in [0, 1], taken
as MIB does, `int(fraction * n_edges)` (floor: 0.001 of SmolLM2's 123,211 edges -> 123).

Pruning rule (exact): an edge u -> v stays iff u is reachable from `input` and v's node reaches
`logits`, both through edges of the circuit. Reaching is node-level: a head receives through any of
its q / k / v slots (a head fed only through its q slot counts as receiving). These are exactly the
edges lying on some input -> logits path, which is also the fixed point of "repeatedly drop every
head / MLP without an incoming or without an outgoing edge, with its edges", so `prune` is
idempotent in one pass.
"""

from __future__ import annotations

import heapq
from enum import StrEnum

import torch

from wildcircuits.errors import GraphError
from wildcircuits.graph.circuit import Circuit, EdgeScores
from wildcircuits.graph.graph import Graph


class Ranking(StrEnum):
    ABSOLUTE = "absolute"
    SIGNED = "signed"


def as_ranking(ranking: Ranking | str) -> Ranking:
    try:
        return Ranking(ranking)
    except ValueError:
        options = ", ".join(r.value for r in Ranking)
        raise GraphError(f"unknown ranking {ranking!r}; expected one of {options}") from None


def edge_count(graph: Graph, size: int | float) -> int:
    """An edge count from a count (int) or a fraction of the graph's edges (float in [0, 1])."""
    if isinstance(size, bool) or not isinstance(size, (int, float)):
        raise GraphError(f"circuit size must be an int count or a float fraction, got {size!r}")
    if isinstance(size, float):
        if not 0.0 <= size <= 1.0:
            raise GraphError(f"circuit fraction {size} is outside [0, 1]")
        return int(size * graph.n_edges)  # MIB's rule (evaluation.curves.edges_at agrees)
    if not 0 <= size <= graph.n_edges:
        raise GraphError(f"circuit size {size} is outside [0, {graph.n_edges}] edges")
    return size


def edge_order(scores: EdgeScores, ranking: Ranking | str = Ranking.ABSOLUTE) -> torch.Tensor:
    """Edge indices (into `Graph.edges`) best first; ties keep `Graph.edges` order: (edge,)."""
    values = _keys(scores, ranking)
    return torch.sort(values, descending=True, stable=True).indices


def top_n(
    scores: EdgeScores,
    size: int | float,
    ranking: Ranking | str = Ranking.ABSOLUTE,
    prune_result: bool = True,
) -> Circuit:
    """The `size` best edges (then pruned unless `prune_result=False`, which may drop some)."""
    graph = scores.graph
    n = edge_count(graph, size)
    chosen = torch.zeros(graph.n_edges, dtype=torch.bool)
    chosen[edge_order(scores, ranking)[:n]] = True
    circuit = _from_flat(graph, chosen, f"top {n} edges by {as_ranking(ranking).value} score")
    return prune(circuit) if prune_result else circuit


def threshold(
    scores: EdgeScores,
    minimum: float,
    ranking: Ranking | str = Ranking.ABSOLUTE,
    prune_result: bool = True,
) -> Circuit:
    """Edges with |score| >= minimum (absolute) or score >= minimum (signed)."""
    chosen = _keys(scores, ranking) >= minimum
    name = "|score|" if as_ranking(ranking) is Ranking.ABSOLUTE else "score"
    circuit = _from_flat(scores.graph, chosen, f"edges with {name} >= {minimum:g}")
    return prune(circuit) if prune_result else circuit


def greedy(
    scores: EdgeScores,
    size: int | float,
    ranking: Ranking | str = Ranking.ABSOLUTE,
    prune_result: bool = True,
) -> Circuit:
    """Grow backwards from `logits`: repeatedly add the best edge whose receiver node is already
    in the circuit (initially only `logits`); its sender joins the circuit. Every edge so added
    reaches the logits, so the result is connected to them by construction (EAP-IG's greedy).
    Pruning then drops edges whose sender is not reachable from `input`."""
    graph = scores.graph
    n = edge_count(graph, size)
    order = edge_order(scores, ranking)
    rank = torch.empty_like(order)
    rank[order] = torch.arange(len(order))
    node_of_edge = receiver_nodes(graph)[graph.valid.nonzero()[:, 0]]  # (edge,) node index
    # Incoming edges of each node, best first: sort by rank, then stably by receiver node.
    by_node = order[torch.sort(node_of_edge[order], stable=True).indices]
    starts = torch.searchsorted(node_of_edge[by_node], torch.arange(_n_nodes(graph) + 1))
    by_node, starts, rank_list = by_node.tolist(), starts.tolist(), rank.tolist()
    senders = graph.valid.nonzero()[:, 1].tolist()
    frontier: list[tuple[int, int, int]] = []  # (rank of the node's next edge, node, pointer)

    def enter(node: int) -> None:
        if starts[node] < starts[node + 1]:
            heapq.heappush(frontier, (rank_list[by_node[starts[node]]], node, starts[node]))

    picked: list[int] = []
    inside = [False] * _n_nodes(graph)
    inside[graph.n_senders] = True
    enter(graph.n_senders)  # logits
    for _ in range(n):
        _, node, pointer = heapq.heappop(frontier)
        edge = by_node[pointer]
        picked.append(edge)
        if pointer + 1 < starts[node + 1]:
            heapq.heappush(frontier, (rank_list[by_node[pointer + 1]], node, pointer + 1))
        if not inside[senders[edge]]:
            inside[senders[edge]] = True
            enter(senders[edge])
    chosen = torch.zeros(graph.n_edges, dtype=torch.bool)
    chosen[torch.tensor(picked, dtype=torch.long)] = True
    description = f"greedy {n} edges from logits by {as_ranking(ranking).value} score"
    circuit = _from_flat(graph, chosen, description)
    return prune(circuit) if prune_result else circuit


# pruning --------------------------------------------------------------------------------------
def prune(circuit: Circuit) -> Circuit:
    """Keep the edges lying on some input -> logits path of the circuit (module docstring)."""
    graph = circuit.graph
    from_input = reachable_from_input(graph, circuit.edges)  # (node,)
    to_logits = reaches_logits(graph, circuit.edges)  # (node,)
    keep = (
        circuit.edges
        & from_input[: graph.n_senders][None, :]
        & to_logits[receiver_nodes(graph)][:, None]
    )
    return Circuit(graph, keep, circuit.description)


def receiver_nodes(graph: Graph) -> torch.Tensor:
    """Node index of each receiver row: (receiver,) long. Node indices are sender indices
    (input, heads, MLPs), and `graph.n_senders` for logits."""
    nodes = [graph.sender_index.get(r.node, graph.n_senders) for r in graph.receivers]
    return torch.tensor(nodes)


def reachable_from_input(graph: Graph, edges: torch.Tensor) -> torch.Tensor:
    """Nodes with a path from `input` through `edges` (receiver, sender): (node,) bool."""
    adjacency = _node_adjacency(graph, edges).float()  # (node, sender)
    reached = torch.zeros(_n_nodes(graph), dtype=torch.bool)
    reached[0] = True
    while True:
        grown = reached | ((adjacency @ reached[: graph.n_senders].float()) > 0)
        if torch.equal(grown, reached):
            return reached
        reached = grown


def reaches_logits(graph: Graph, edges: torch.Tensor) -> torch.Tensor:
    """Nodes with a path to `logits` through `edges` (receiver, sender): (node,) bool."""
    adjacency = _node_adjacency(graph, edges).float()  # (node, sender)
    reached = torch.zeros(_n_nodes(graph), dtype=torch.bool)
    reached[graph.n_senders] = True
    while True:
        grown = reached.clone()
        grown[: graph.n_senders] |= (reached.float() @ adjacency) > 0
        if torch.equal(grown, reached):
            return reached
        reached = grown


# helpers --------------------------------------------------------------------------------------
def _n_nodes(graph: Graph) -> int:
    return graph.n_senders + 1


def _node_adjacency(graph: Graph, edges: torch.Tensor) -> torch.Tensor:
    """(node, sender) bool: sender feeds any slot of node. A head's q / k / v slots merge."""
    layers, heads = graph.n_layers, graph.n_heads
    edges = edges & graph.valid
    blocks = edges[:-1].view(layers, 3 * heads + 1, graph.n_senders)
    head_rows = blocks[:, : 3 * heads].view(layers, 3, heads, graph.n_senders).any(1)
    nodes = torch.cat([head_rows, blocks[:, 3 * heads :]], 1)  # (layer, head + 1, sender)
    none = torch.zeros(1, graph.n_senders, dtype=torch.bool)  # `input` receives nothing
    return torch.cat([none, nodes.reshape(-1, graph.n_senders), edges[-1:]], 0)


def _keys(scores: EdgeScores, ranking: Ranking | str) -> torch.Tensor:
    values = scores.values()  # (edge,)
    if bool(values.isnan().any()):
        raise GraphError(f"{int(values.isnan().sum())} edge scores are NaN; cannot rank edges")
    return values.abs() if as_ranking(ranking) is Ranking.ABSOLUTE else values


def _from_flat(graph: Graph, chosen: torch.Tensor, description: str) -> Circuit:
    """(edge,) bool in `Graph.edges` order -> Circuit."""
    mask = torch.zeros_like(graph.valid)
    mask[graph.valid] = chosen
    return Circuit(graph, mask, description)
