"""The computational graph used by edge-level circuit discovery (EAP-IG / MIB convention).

Nodes: `input` (embeddings), attention heads `a{l}.h{h}`, MLPs `m{l}`, `logits`.
Receivers: each head has three slots (q, k, v), each MLP one, `logits` one.
Edges: every upstream node to every downstream receiver slot, named `a0.h1->a2.h3<q>`,
`input->m0`, `m11->logits`. With sequential blocks MLP l also receives from the heads of layer l;
with parallel attention + MLP blocks (GPT-NeoX) it does not. GQA models are un-grouped: every
query head has its own k and v receiver slots (MIB's convention).

The node, receiver and edge values and both string forms of their names (MIB `a3.h2`, display
`L3.H2`) live in `wildcircuits.names`.

Edge sets and scores are dense (receiver, sender) matrices over `Graph.receivers` x
`Graph.senders`, with `Graph.valid` marking which cells are real edges.
"""

from __future__ import annotations

import functools

import torch

from wildcircuits.errors import GraphError
from wildcircuits.names import (
    INPUT,
    LOGITS,
    Edge,
    Node,
    NodeKind,
    Receiver,
    Shape,
    Slot,
    head_node,
    mlp_node,
    parse_edge,
)

__all__ = ["Graph", "expected_edge_count"]


class Graph:
    """The edge graph of one model shape (layers, heads, parallel or sequential blocks)."""

    def __init__(self, n_layers: int, n_heads: int, parallel_attn_mlp: bool = False):
        self.n_layers, self.n_heads = n_layers, n_heads
        self.parallel_attn_mlp = parallel_attn_mlp
        self.senders: list[Node] = [INPUT]
        self.receivers: list[Receiver] = []
        for layer in range(n_layers):
            heads = [head_node(layer, h) for h in range(n_heads)]
            for slot in (Slot.Q, Slot.K, Slot.V):
                self.receivers += [Receiver(node, slot) for node in heads]
            self.receivers.append(Receiver(mlp_node(layer)))
            self.senders += [*heads, mlp_node(layer)]
        self.receivers.append(Receiver(LOGITS))
        self.sender_index = {node: i for i, node in enumerate(self.senders)}
        self.receiver_index = {r: i for i, r in enumerate(self.receivers)}
        self.upstream = torch.tensor([self.n_upstream(r) for r in self.receivers])
        senders = torch.arange(len(self.senders))
        self.valid = senders[None, :] < self.upstream[:, None]  # (receiver, sender)

    # shapes -----------------------------------------------------------------------------------
    @classmethod
    def for_model(cls, model) -> Graph:
        return cls(model.n_layers, model.n_heads, model.parallel_residual)

    @property
    def shape(self) -> Shape:
        """The ranges node names are checked against (k / v slots: query heads, un-grouped)."""
        return Shape(self.n_layers, self.n_heads)

    @property
    def n_senders(self) -> int:
        return len(self.senders)

    @property
    def n_receivers(self) -> int:
        return len(self.receivers)

    @property
    def n_edges(self) -> int:
        return int(self.valid.sum())

    def n_upstream(self, receiver: Receiver) -> int:
        """Senders feeding `receiver`: a prefix of `self.senders` (topological order)."""
        node = receiver.node
        if node.kind is NodeKind.HEAD:
            return self.first_sender(node.layer)
        if node.kind is NodeKind.MLP:
            heads_same_layer = 0 if self.parallel_attn_mlp else self.n_heads
            return self.first_sender(node.layer) + heads_same_layer
        return self.n_senders

    # layout used by the edge forward ------------------------------------------------------------
    def first_receiver(self, layer: int) -> int:
        """Receiver rows that read the residual stream before `layer` (n_layers: every row but
        the logits)."""
        return layer * (3 * self.n_heads + 1)

    def receiver_layer(self, row: int) -> int:
        """The layer whose input receiver `row` reads (n_layers for the logits)."""
        return row // (3 * self.n_heads + 1)

    def attention_receivers(self, layer: int) -> slice:
        """Rows of the layer's 3 x n_heads head slots (q for every head, then k, then v)."""
        start = self.first_receiver(layer)
        return slice(start, start + 3 * self.n_heads)

    def mlp_receiver(self, layer: int) -> int:
        return self.first_receiver(layer) + 3 * self.n_heads

    @property
    def logits_receiver(self) -> int:
        return self.n_receivers - 1

    def first_sender(self, layer: int) -> int:
        """Senders computed before `layer` (n_layers: every sender)."""
        return 1 + layer * (self.n_heads + 1)

    def head_senders(self, layer: int) -> slice:
        start = self.first_sender(layer)
        return slice(start, start + self.n_heads)

    def mlp_sender(self, layer: int) -> int:
        return self.first_sender(layer) + self.n_heads

    # names ----------------------------------------------------------------------------------------
    @functools.cached_property
    def edges(self) -> list[Edge]:
        """Every edge, in (receiver, sender) row-major order of `valid`."""
        return [Edge(self.senders[s], self.receivers[r]) for r, s in self.valid.nonzero().tolist()]

    def edge_cell(self, edge: Edge | str) -> tuple[int, int]:
        """(receiver row, sender column) of an edge; edges not in this graph raise."""
        edge = parse_edge(edge) if isinstance(edge, str) else edge
        try:
            r, s = self.receiver_index[edge.receiver], self.sender_index[edge.sender]
        except KeyError:
            raise GraphError(f"edge {edge.name} is not in this graph ({self.describe()})") from None
        if not bool(self.valid[r, s]):
            raise GraphError(
                f"edge {edge.name} goes backwards: {edge.sender.name} is not "
                f"upstream of {edge.receiver.name}"
            )
        return r, s

    def describe(self) -> str:
        kind = "parallel" if self.parallel_attn_mlp else "sequential"
        return f"{self.n_layers} layers x {self.n_heads} heads, {kind} blocks"


def expected_edge_count(n_layers: int, n_heads: int) -> int:
    """The closed-form edge count for sequential blocks (REFERENCE.md)."""
    h = n_heads
    total = sum(
        3 * h * (1 + layer * (h + 1)) + (1 + layer * (h + 1) + h) for layer in range(n_layers)
    )
    return total + 1 + n_layers * (h + 1)
