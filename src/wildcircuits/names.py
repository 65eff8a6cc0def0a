"""Names of heads, nodes, receivers and edges: one typed value each, and their string forms.

Inside the library "head 2 of layer 3" is the value `head_node(3, 2)`, never a string. Strings
exist only at two boundaries, each with one parser and one formatter:

    form     head     MLP       receiver   edge               used for
    display  L3.H2    L3.mlp    L3.H2:q    -                  CLI arguments, figures, tables
    MIB      a3.h2    m3        a3.h2<q>   a0.h1->a2.h3<q>    circuit files, run folder

`input` and `logits` are spelled the same in both. Formatters: the `display` and `name` (MIB)
properties. Parsers: `parse_display_node`, `parse_head`, `parse_display_receiver` (display);
`parse_node`, `parse_receiver`, `parse_edge` (MIB). Each takes an optional `Shape` and raises
`UnknownNameError` (a GraphError and a SiteError) naming the string and the expected form, for a
malformed name and for one outside the shape.

A receiver is a node and its input slot: a head's q, k or v, the single input (`Slot.IN`) of an
MLP or the logits. Which head a k / v receiver names depends on its user: the edge graph is
un-grouped as MIB's (every query head has its own k / v slot, so the head is a query head), path
patching patches the k / v input of one KV head (the head is a KV head). They agree when a model
has as many KV heads as query heads; `Shape.n_kv_heads` says which range a check uses.

Site strings (`z.L3.H2@-1`, see patching.sites) carry their layer and head in the display form:
`split_site` / `join_site` are that boundary's pair; `Site` validates the component.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from enum import StrEnum

from wildcircuits.errors import UnknownNameError


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


@dataclass(frozen=True)
class Shape:
    """The layer and head ranges names are checked against.

    `n_kv_heads` is the head range of k / v receivers (path patching's KV heads); None: the
    query heads (the edge graph, un-grouped)."""

    n_layers: int
    n_heads: int
    n_kv_heads: int | None = None

    def check(self, text: str, node: Node, slot: Slot = Slot.IN) -> None:
        """Raise unless `node` (read from `text`, with `slot`) exists in this shape."""
        if node.kind in (NodeKind.INPUT, NodeKind.LOGITS):
            return
        kv = slot in (Slot.K, Slot.V) and self.n_kv_heads is not None
        n_heads = self.n_kv_heads if kv else self.n_heads
        if node.layer < self.n_layers and (node.kind is NodeKind.MLP or node.head < n_heads):
            return
        raise UnknownNameError(
            f"{text!r} is out of range: valid layers 0..{self.n_layers - 1}, "
            f"{'KV ' if kv else ''}heads 0..{n_heads - 1}"
        )


# the two forms ---------------------------------------------------------------------------------
_LAYER, _HEAD = r"L(?P<layer>\d+)", r"\.H(?P<head>\d+)"


@dataclass(frozen=True)
class _Form:
    """One string form: how it writes heads, MLPs and slots, the patterns that read them back,
    and the words that describe them in errors."""

    head: str  # template with {layer}, {head}
    mlp: str  # template with {layer}
    with_slot: str  # template with {node}, {slot}
    node: re.Pattern[str]  # groups: layer + head (a head) or mlp (an MLP's layer)
    slot: re.Pattern[str]  # groups: node, slot
    nodes: str
    receivers: str
    slots: str

    def write_node(self, node: Node) -> str:
        if node.kind is NodeKind.HEAD:
            return self.head.format(layer=node.layer, head=node.head)
        if node.kind is NodeKind.MLP:
            return self.mlp.format(layer=node.layer)
        return node.kind.value

    def write_receiver(self, receiver: Receiver) -> str:
        node = self.write_node(receiver.node)
        if receiver.slot is Slot.IN:
            return node
        return self.with_slot.format(node=node, slot=receiver.slot.value)


_MIB = _Form(
    "a{layer}.h{head}",
    "m{layer}",
    "{node}<{slot}>",
    re.compile(r"a(?P<layer>\d+)\.h(?P<head>\d+)|m(?P<mlp>\d+)"),
    re.compile(r"(?P<node>.+)<(?P<slot>[qkv])>"),
    "a<layer>.h<head>, m<layer>, input or logits",
    "a<layer>.h<head><q|k|v>, m<layer> or logits",
    "<q>, <k> or <v>",
)
_DISPLAY = _Form(
    "L{layer}.H{head}",  # layer_label + "." + head_label
    "L{layer}.mlp",
    "{node}:{slot}",
    re.compile(rf"{_LAYER}{_HEAD}|L(?P<mlp>\d+)\.mlp"),
    re.compile(r"(?P<node>.+):(?P<slot>[qkv])"),
    "L<layer>.H<head>, L<layer>.mlp, input or logits",
    "L<layer>.H<head>:q|k|v, L<layer>.mlp or logits",
    ":q, :k or :v",
)


def layer_label(layer: int) -> str:
    """`L3`: a layer in the display form (grid rows, the layer part of head and site names)."""
    return f"L{layer}"


def head_label(head: int) -> str:
    """`H2`: a head index in the display form (grid columns); `L3` + `.` + `H2` is the head."""
    return f"H{head}"


class _Named:
    """The two formatters of a node or receiver: `name` (MIB form, also `str()`) and `display`."""

    def written(self, form: _Form) -> str:
        raise NotImplementedError

    @functools.cached_property  # graphs share their node values, so edge names cost little
    def name(self) -> str:
        """The MIB form: `a3.h2`, `m3`, `a3.h2<q>`, `input`, `logits`."""
        return self.written(_MIB)

    @property
    def display(self) -> str:
        """The display form: `L3.H2`, `L3.mlp`, `L3.H2:q`, `input`, `logits`."""
        return self.written(_DISPLAY)

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True, order=True)
class Node(_Named):
    """A node of the edge graph: `input`, a head (layer, head), an MLP (layer) or `logits`.

    Fields a kind does not use are -1. Build heads and MLPs with `head_node` / `mlp_node`."""

    kind: NodeKind
    layer: int = -1
    head: int = -1

    def __post_init__(self) -> None:
        wants_layer = self.kind in (NodeKind.HEAD, NodeKind.MLP)
        if (self.layer >= 0) != wants_layer or (self.head >= 0) != (self.kind is NodeKind.HEAD):
            raise UnknownNameError(
                f"no {self.kind.value} node has layer={self.layer}, head={self.head}: heads need "
                "both, MLPs a layer only, input and logits neither (-1 for unused)"
            )

    def written(self, form: _Form) -> str:
        return form.write_node(self)


INPUT = Node(NodeKind.INPUT)
LOGITS = Node(NodeKind.LOGITS)


def head_node(layer: int, head: int) -> Node:
    return Node(NodeKind.HEAD, layer, head)


def mlp_node(layer: int) -> Node:
    return Node(NodeKind.MLP, layer)


@dataclass(frozen=True)
class Receiver(_Named):
    """An input slot of a node: a head's q / k / v (see the module doc for which head), or the
    one input of an MLP or of the logits. The edge graph and path patching both use it."""

    node: Node
    slot: Slot = Slot.IN

    def __post_init__(self) -> None:
        head = self.node.kind is NodeKind.HEAD
        if self.node.kind is NodeKind.INPUT or head != (self.slot is not Slot.IN):
            raise UnknownNameError(
                f"{self.node.name} has no {self.slot.value} slot: heads take a q, k or v slot, "
                "MLPs and logits one input, input receives nothing"
            )

    def written(self, form: _Form) -> str:
        return form.write_receiver(self)


@dataclass(frozen=True)
class Edge:
    sender: Node
    receiver: Receiver

    @property
    def name(self) -> str:
        """The MIB form: `a0.h1->a2.h3<q>`."""
        return f"{self.sender.name}->{self.receiver.name}"

    def __str__(self) -> str:
        return self.name


# parsing --------------------------------------------------------------------------------------
def _read_node(text: str, form: _Form, shape: Shape | None) -> Node:
    stripped = text.strip()
    if stripped in (NodeKind.INPUT, NodeKind.LOGITS):
        return INPUT if stripped == NodeKind.INPUT else LOGITS
    match = form.node.fullmatch(stripped)
    if match is None:
        raise UnknownNameError(f"unknown node name {text!r}; expected {form.nodes}")
    if match["mlp"] is not None:
        node = mlp_node(int(match["mlp"]))
    else:
        node = head_node(int(match["layer"]), int(match["head"]))
    if shape is not None:
        shape.check(text, node)
    return node


def _read_receiver(text: str, form: _Form, shape: Shape | None) -> Receiver:
    match = form.slot.fullmatch(text.strip())
    node_text, slot = (match["node"], Slot(match["slot"])) if match else (text, Slot.IN)
    try:
        node = _read_node(node_text, form, None)
    except UnknownNameError:
        raise UnknownNameError(
            f"unknown receiver name {text!r}; expected {form.receivers}"
        ) from None
    if node.kind is NodeKind.INPUT or (node.kind is NodeKind.HEAD) != (slot is not Slot.IN):
        raise UnknownNameError(
            f"receiver {text!r}: heads take a {form.slots} slot, MLPs and logits none, input "
            f"receives nothing; expected {form.receivers}"
        )
    if shape is not None:
        shape.check(text, node, slot)
    return Receiver(node, slot)


def parse_node(text: str, shape: Shape | None = None) -> Node:
    """MIB form `a3.h2`, `m4`, `input` or `logits` -> Node; anything else raises."""
    return _read_node(text, _MIB, shape)


def parse_receiver(text: str, shape: Shape | None = None) -> Receiver:
    """MIB form `a3.h2<q>`, `m4` or `logits` -> Receiver; anything else raises."""
    return _read_receiver(text, _MIB, shape)


def parse_edge(text: str, shape: Shape | None = None) -> Edge:
    """MIB form `a0.h1->a2.h3<q>` / `m0->logits` -> Edge; anything else raises."""
    if "->" not in text:
        raise UnknownNameError(
            f"edge name {text!r} lacks '->'; expected <sender>-><receiver>, e.g. a0.h1->a2.h3<q>"
        )
    sender, receiver = text.split("->", 1)
    try:
        return Edge(parse_node(sender, shape), parse_receiver(receiver, shape))
    except UnknownNameError as error:
        raise UnknownNameError(f"edge {text!r}: {error}") from None


def parse_display_node(text: str, shape: Shape | None = None) -> Node:
    """Display form `L3.H2`, `L3.mlp`, `input` or `logits` -> Node; anything else raises."""
    return _read_node(text, _DISPLAY, shape)


def parse_head(text: str, shape: Shape | None = None) -> Node:
    """Display form `L12.H3` -> the head's Node; anything else (an MLP too) raises."""
    try:
        node = parse_display_node(text)
    except UnknownNameError:
        node = None
    if node is None or node.kind is not NodeKind.HEAD:
        raise UnknownNameError(f"head {text!r}: expected the form L<layer>.H<head>, e.g. L12.H3")
    if shape is not None:
        shape.check(text, node)
    return node


def parse_display_receiver(text: str, shape: Shape | None = None) -> Receiver:
    """Display form `L3.H2:q`, `L3.mlp` or `logits` -> Receiver; anything else raises."""
    return _read_receiver(text, _DISPLAY, shape)


def split_names(text: str) -> list[str]:
    """A comma-separated list of names (CLI arguments), blanks dropped: 'L1.H2, L3.H0'."""
    return [part.strip() for part in text.split(",") if part.strip()]


# site strings ---------------------------------------------------------------------------------
_SITE = re.compile(rf"(?P<component>[a-z_]+)(?:\.{_LAYER}(?:{_HEAD})?)?(?:@(?P<position>-?\d+))?")


@dataclass(frozen=True)
class SiteParts:
    """The pieces of a site string `component[.L<layer>[.H<head>]][@<position>]`."""

    component: str
    layer: int | None = None
    head: int | None = None
    position: int | None = None


def split_site(text: str) -> SiteParts | None:
    """`z.L3.H2@-1` -> its pieces; None when the text has another shape."""
    match = _SITE.fullmatch(text.strip())
    if match is None:
        return None
    layer, head, position = (match[g] for g in ("layer", "head", "position"))
    return SiteParts(
        match["component"],
        None if layer is None else int(layer),
        None if head is None else int(head),
        None if position is None else int(position),
    )


def join_site(parts: SiteParts) -> str:
    """Inverse of `split_site`; the layer and head read as in the display form (`L3.H2`)."""
    text = parts.component
    if parts.layer is not None:
        text += f".{layer_label(parts.layer)}"
    if parts.head is not None:
        text += f".{head_label(parts.head)}"
    if parts.position is not None:
        text += f"@{parts.position}"
    return text
