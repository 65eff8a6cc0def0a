"""The computational graph used by edge-level circuit discovery (EAP-IG / MIB convention).

Nodes: `input` (embeddings), attention heads `a{l}.h{h}`, MLPs `m{l}`, `logits`.
Receivers: each head has three slots (q, k, v), each MLP one, `logits` one.
Edges: every upstream node to every downstream receiver slot, named `a0.h1->a2.h3<q>`,
`input->m0`, `m11->logits`. With sequential blocks MLP l also receives from the heads of layer l;
with parallel attention + MLP blocks (GPT-NeoX) it does not. GQA models are un-grouped: every
query head has its own k and v receiver slots (MIB's convention).

Edge sets and scores are dense (receiver, sender) matrices over `Graph.receivers` x
`Graph.senders`, with `Graph.valid` marking which cells are real edges.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum

import torch

from wildcircuits.errors import WildcircuitsError


class GraphError(WildcircuitsError):
    """An unknown node / edge name, or a graph that does not match the model."""


class NodeKind(StrEnum):
    INPUT = "input"
    HEAD = "head"
    MLP = "mlp"
    LOGITS = "logits"


class Slot(StrEnum):
    """The input slot of a receiver: a head's q, k or v, or the single input of an MLP / logits."""

    Q = "q"
    K = "k"
    V = "v"
    IN = "in"


@dataclass(frozen=True, order=True)
class Node:
    kind: NodeKind
    layer: int = -1
    head: int = -1

    @property
    def name(self) -> str:
        if self.kind is NodeKind.HEAD:
            return f"a{self.layer}.h{self.head}"
        if self.kind is NodeKind.MLP:
            return f"m{self.layer}"
        return self.kind.value

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Receiver:
    node: Node
    slot: Slot = Slot.IN

    @property
    def name(self) -> str:
        return (
            f"{self.node.name}<{self.slot.value}>" if self.slot is not Slot.IN else self.node.name
        )


@dataclass(frozen=True)
class Edge:
    sender: Node
    receiver: Receiver

    @property
    def name(self) -> str:
        return f"{self.sender.name}->{self.receiver.name}"


INPUT = Node(NodeKind.INPUT)
LOGITS = Node(NodeKind.LOGITS)
_NODE = re.compile(r"^(?:a(?P<al>\d+)\.h(?P<ah>\d+)|m(?P<ml>\d+)|(?P<special>input|logits))$")


def parse_node(name: str) -> Node:
    """`a3.h2`, `m4`, `input` or `logits` -> Node; anything else raises."""
    match = _NODE.match(name.strip())
    if match is None:
        raise GraphError(
            f"unknown node name {name!r}; expected a<layer>.h<head>, m<layer>, input or logits"
        )
    if match.group("special"):
        return INPUT if match.group("special") == "input" else LOGITS
    if match.group("ml") is not None:
        return Node(NodeKind.MLP, int(match.group("ml")))
    return Node(NodeKind.HEAD, int(match.group("al")), int(match.group("ah")))


def parse_edge(name: str) -> Edge:
    """`a0.h1->a2.h3<q>` / `m0->logits` -> Edge; anything else raises."""
    if "->" not in name:
        raise GraphError(f"edge name {name!r} lacks '->'")
    sender_text, receiver_text = name.split("->", 1)
    slot = Slot.IN
    match = re.match(r"^(?P<node>.+)<(?P<slot>[qkv])>$", receiver_text.strip())
    if match:
        receiver_text, slot = match.group("node"), Slot(match.group("slot"))
    receiver = Receiver(parse_node(receiver_text), slot)
    if (receiver.node.kind is NodeKind.HEAD) != (slot is not Slot.IN):
        raise GraphError(f"edge {name!r}: heads take a <q>, <k> or <v> slot, other nodes none")
    return Edge(parse_node(sender_text), receiver)


class Graph:
    """The edge graph of one model shape (layers, heads, parallel or sequential blocks)."""

    def __init__(self, n_layers: int, n_heads: int, parallel_attn_mlp: bool = False):
        self.n_layers, self.n_heads = n_layers, n_heads
        self.parallel_attn_mlp = parallel_attn_mlp
        self.senders: list[Node] = [INPUT]
        self.receivers: list[Receiver] = []
        for layer in range(n_layers):
            heads = [Node(NodeKind.HEAD, layer, h) for h in range(n_heads)]
            for slot in (Slot.Q, Slot.K, Slot.V):
                self.receivers += [Receiver(node, slot) for node in heads]
            self.receivers.append(Receiver(Node(NodeKind.MLP, layer)))
            self.senders += [*heads, Node(NodeKind.MLP, layer)]
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
