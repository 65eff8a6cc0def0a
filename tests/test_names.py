"""Names of heads, nodes, receivers and edges: every string form round-trips; bad names raise."""

from __future__ import annotations

import pytest

from wildcircuits.errors import GraphError, SiteError, UnknownNameError
from wildcircuits.graph.graph import Graph
from wildcircuits.names import (
    INPUT,
    LOGITS,
    Edge,
    Node,
    NodeKind,
    Receiver,
    Shape,
    Slot,
    head_label,
    head_node,
    layer_label,
    mlp_node,
    parse_display_node,
    parse_display_receiver,
    parse_edge,
    parse_head,
    parse_node,
    parse_receiver,
    split_names,
)
from wildcircuits.patching.sites import GLOBAL_COMPONENTS, Component, Site, parse_site

SHAPE = Shape(n_layers=4, n_heads=3)


def every_node(shape: Shape) -> list[Node]:
    heads = [head_node(layer, h) for layer in range(shape.n_layers) for h in range(shape.n_heads)]
    return [INPUT, *heads, *(mlp_node(layer) for layer in range(shape.n_layers)), LOGITS]


def every_receiver(shape: Shape) -> list[Receiver]:
    out = []
    for node in every_node(shape):
        if node.kind is NodeKind.HEAD:
            out += [Receiver(node, slot) for slot in (Slot.Q, Slot.K, Slot.V)]
        elif node.kind is not NodeKind.INPUT:
            out.append(Receiver(node))
    return out


def test_the_two_forms_of_each_kind() -> None:
    cases = [
        (head_node(3, 2), "a3.h2", "L3.H2"),
        (mlp_node(3), "m3", "L3.mlp"),
        (INPUT, "input", "input"),
        (LOGITS, "logits", "logits"),
    ]
    for node, mib, display in cases:
        assert (node.name, node.display, str(node)) == (mib, display, mib)
    receiver = Receiver(head_node(3, 2), Slot.Q)
    assert (receiver.name, receiver.display) == ("a3.h2<q>", "L3.H2:q")
    assert (Receiver(mlp_node(5)).name, Receiver(mlp_node(5)).display) == ("m5", "L5.mlp")
    edge = Edge(head_node(0, 1), Receiver(head_node(2, 3), Slot.V))
    assert edge.name == str(edge) == "a0.h1->a2.h3<v>"


def test_grid_labels_compose_the_display_name() -> None:
    """Score grids label rows L<layer> and columns H<head>; row '.' column is the head's name."""
    for layer in range(3):
        for head in range(3):
            assert f"{layer_label(layer)}.{head_label(head)}" == head_node(layer, head).display


def test_every_node_round_trips_in_both_forms() -> None:
    for shape in (SHAPE, Shape(12, 12), Shape(1, 1)):
        for node in every_node(shape):
            assert parse_node(node.name, shape) == node
            assert parse_display_node(node.display, shape) == node
            if node.kind is NodeKind.HEAD:
                assert parse_head(node.display, shape) == node


def test_every_receiver_round_trips_in_both_forms() -> None:
    for receiver in every_receiver(SHAPE):
        assert parse_receiver(receiver.name, SHAPE) == receiver
        assert parse_display_receiver(receiver.display, SHAPE) == receiver


def test_every_graph_edge_and_receiver_round_trips() -> None:
    for graph in (Graph(3, 2), Graph(2, 3, parallel_attn_mlp=True)):
        assert set(graph.receivers) == set(every_receiver(graph.shape))
        for edge in graph.edges:
            assert parse_edge(edge.name, graph.shape) == edge


@pytest.mark.parametrize(
    ("parser", "text", "expected"),
    [
        (parse_node, "L3.H2", "a<layer>.h<head>, m<layer>, input or logits"),
        (parse_node, "a3h2", "a<layer>.h<head>"),
        (parse_node, "a-1.h0", "a<layer>.h<head>"),
        (parse_node, "mlp3", "m<layer>"),
        (parse_display_node, "a3.h2", "L<layer>.H<head>, L<layer>.mlp, input or logits"),
        (parse_display_node, "MLP3", "L<layer>.mlp"),
        (parse_display_node, "L3", "L<layer>.H<head>"),
        (parse_head, "L3.mlp", "L<layer>.H<head>"),
        (parse_head, "12.3", "L<layer>.H<head>"),
        (parse_receiver, "a3.h2", "<q>, <k> or <v>"),
        (parse_receiver, "m3<q>", "<q>, <k> or <v>"),
        (parse_receiver, "input", "input receives nothing"),
        (parse_receiver, "a3.h2:q", "a<layer>.h<head><q|k|v>"),
        (parse_display_receiver, "L3.H2<q>", "L<layer>.H<head>:q|k|v"),
        (parse_display_receiver, "L3.H2", ":q, :k or :v"),
        (parse_display_receiver, "L7:mlp", "L<layer>.mlp"),
        (parse_display_receiver, "L3.H1:z", "L<layer>.H<head>:q|k|v"),
        (parse_edge, "a0.h0", "lacks '->'"),
        (parse_edge, "a0.h0->L1.H0:q", "a<layer>.h<head><q|k|v>"),
    ],
)
def test_malformed_names_raise_naming_the_string_and_the_form(parser, text, expected) -> None:
    with pytest.raises(UnknownNameError) as error:
        parser(text)
    assert repr(text) in str(error.value) and expected in str(error.value)
    assert isinstance(error.value, GraphError) and isinstance(error.value, SiteError)


@pytest.mark.parametrize(
    ("parser", "text", "message"),
    [
        (parse_node, "a4.h0", "valid layers 0..3, heads 0..2"),
        (parse_node, "a0.h3", "valid layers 0..3, heads 0..2"),
        (parse_node, "m4", "valid layers 0..3"),
        (parse_display_node, "L4.mlp", "valid layers 0..3"),
        (parse_head, "L0.H3", "heads 0..2"),
        (parse_receiver, "a1.h3<k>", "heads 0..2"),
        (parse_display_receiver, "L9.H0:q", "layers 0..3"),
        (parse_edge, "a0.h0->a4.h0<q>", "layers 0..3"),
    ],
)
def test_names_outside_the_shape_raise(parser, text, message) -> None:
    parser(text)  # well-formed: fine without a shape
    with pytest.raises(UnknownNameError, match=message) as error:
        parser(text, SHAPE)
    assert repr(text) in str(error.value)


def test_kv_heads_bound_k_and_v_receivers_only_when_given() -> None:
    grouped = Shape(4, 6, n_kv_heads=2)
    assert parse_display_receiver("L1.H5:q", grouped) == Receiver(head_node(1, 5), Slot.Q)
    assert parse_display_receiver("L1.H1:k", grouped) == Receiver(head_node(1, 1), Slot.K)
    with pytest.raises(UnknownNameError, match="KV heads 0..1"):
        parse_display_receiver("L1.H2:v", grouped)
    assert parse_receiver("a1.h5<k>", Shape(4, 6)) == Receiver(head_node(1, 5), Slot.K)


def test_invalid_values_raise() -> None:
    for kind, layer, head in [
        (NodeKind.HEAD, 1, -1),
        (NodeKind.MLP, 1, 0),
        (NodeKind.MLP, -1, -1),
        (NodeKind.INPUT, 0, -1),
    ]:
        with pytest.raises(UnknownNameError):
            Node(kind, layer, head)
    for node, slot in [(mlp_node(1), Slot.Q), (head_node(1, 0), Slot.IN), (INPUT, Slot.IN)]:
        with pytest.raises(UnknownNameError):
            Receiver(node, slot)


def test_split_names() -> None:
    assert split_names(" L1.H2, L3.H0 ,,") == ["L1.H2", "L3.H0"]
    assert split_names("") == []


def test_site_constructors_equal_the_string_form() -> None:
    assert Site.z(23, head=3) == parse_site("z.L23.H3") == Site(Component.Z, 23, 3)
    assert Site.resid_pre(5) == parse_site("resid_pre.L5")
    assert Site.mlp_out(2, position=-1) == parse_site("mlp_out.L2@-1")
    assert Site.pattern(3, head=1) == parse_site("pattern.L3.H1")
    assert Site.k(0, 1, position=4) == parse_site("k.L0.H1@4")
    assert Site.logits(position=-1) == parse_site("logits@-1")
    assert Site.embed() == parse_site("embed")


def test_every_component_has_its_constructor() -> None:
    for component in Component:
        make = getattr(Site, component.value)
        if component in GLOBAL_COMPONENTS:
            site = make(position=2)
            assert site == Site(component, position=2)
        else:
            site = make(7, position=2)
            assert site == Site(component, 7, position=2)
        assert parse_site(str(site)) == site
