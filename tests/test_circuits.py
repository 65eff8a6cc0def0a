"""Circuits from scores (top-n, threshold, greedy), pruning, node-level circuits."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_models import tiny_model, tiny_tokens
from wildcircuits.errors import GraphError
from wildcircuits.graph.build import (
    Ranking,
    edge_count,
    greedy,
    prune,
    reachable_from_input,
    reaches_logits,
    receiver_nodes,
    threshold,
    top_n,
)
from wildcircuits.graph.circuit import Circuit, EdgeScores
from wildcircuits.graph.graph import Graph
from wildcircuits.graph.nodes_circuit import NodeCircuit, node_scores, top_nodes
from wildcircuits.names import parse_node
from wildcircuits.patching.edges import EdgeForward

# Graph(2, 1): senders input, a0.h0, m0, a1.h0, m1; 23 edges.
SMALL = Graph(2, 1)


def _scores(graph: Graph, named: dict[str, float], rest: float = 0.0) -> EdgeScores:
    values = torch.where(graph.valid, rest, 0.0)
    for name, value in named.items():
        values[graph.edge_cell(name)] = value
    return EdgeScores(graph, values, "hand")


def _names(circuit: Circuit) -> set[str]:
    return {edge.name for edge in circuit.edge_list()}


def _random_circuit(graph: Graph, fraction: float, seed: int) -> Circuit:
    generator = torch.Generator().manual_seed(seed)
    mask = torch.rand(graph.valid.shape, generator=generator) < fraction
    return Circuit(graph, mask & graph.valid)


def _slow_prune(circuit: Circuit) -> set[str]:
    """Repeatedly drop heads / MLPs without an incoming or without an outgoing edge."""
    edges = {(e.sender, e.receiver.node, e.name) for e in circuit.edge_list()}
    while True:
        senders = {s for s, _, _ in edges}
        receivers = {r for _, r, _ in edges}
        dead = {
            n
            for n in senders | receivers
            if n.name not in ("input", "logits") and (n not in senders or n not in receivers)
        }
        kept = {e for e in edges if e[0] not in dead and e[1] not in dead}
        if kept == edges:
            return {name for _, _, name in edges}
        edges = kept


# pruning ----------------------------------------------------------------------------------------
def test_prune_drops_nodes_without_inputs_transitively():
    circuit = Circuit.from_edges(
        SMALL,
        [
            "input->a0.h0<q>",  # a0.h0 receives only through q: that counts as receiving
            "a0.h0->m1",
            "m1->logits",
            "m0->a1.h0<v>",  # m0 has no input ...
            "a1.h0->logits",  # ... so a1.h0 has none either: both dropped in one call
        ],
    )
    assert _names(prune(circuit)) == {"input->a0.h0<q>", "a0.h0->m1", "m1->logits"}


def test_prune_drops_nodes_without_outputs_transitively():
    circuit = Circuit.from_edges(
        SMALL,
        [
            "input->a0.h0<k>",
            "a0.h0->m0",
            "m0->a1.h0<q>",  # a1.h0 has no output, so m0, then a0.h0, lose theirs
            "input->m1",
            "m1->logits",
        ],
    )
    assert _names(prune(circuit)) == {"input->m1", "m1->logits"}
    assert prune(Circuit.empty(SMALL)).n_edges == 0
    assert prune(Circuit.full(SMALL)).n_edges == SMALL.n_edges


@pytest.mark.parametrize("graph", [Graph(3, 2), Graph(3, 2, parallel_attn_mlp=True)])
@pytest.mark.parametrize("fraction", [0.05, 0.2, 0.5])
def test_prune_matches_iterated_node_removal_and_is_idempotent(graph, fraction):
    for seed in range(5):
        circuit = _random_circuit(graph, fraction, seed)
        pruned = prune(circuit)
        assert _names(pruned) == _slow_prune(circuit)
        assert torch.equal(prune(pruned).edges, pruned.edges)


def test_prune_is_idempotent_and_connected_on_smollm2_graph():
    graph = Graph(30, 9)
    circuit = prune(_random_circuit(graph, 0.02, seed=0))
    assert 0 < circuit.n_edges < graph.n_edges * 0.02
    assert torch.equal(prune(circuit).edges, circuit.edges)
    _assert_on_input_logits_paths(circuit)


def _assert_on_input_logits_paths(circuit: Circuit) -> None:
    graph = circuit.graph
    from_input = reachable_from_input(graph, circuit.edges)[: graph.n_senders]
    to_logits = reaches_logits(graph, circuit.edges)[receiver_nodes(graph)]
    rows, columns = circuit.edges.nonzero().unbind(1)
    assert bool(from_input[columns].all()) and bool(to_logits[rows].all())


# top-n and threshold ----------------------------------------------------------------------------
def test_top_n_signed_and_absolute_pick_the_right_edges():
    scores = _scores(SMALL, {"m1->logits": 3.0, "a0.h0->logits": -5.0, "m0->logits": 1.0})
    absolute = top_n(scores, 2, Ranking.ABSOLUTE, prune_result=False)
    signed = top_n(scores, 2, "signed", prune_result=False)
    assert _names(absolute) == {"a0.h0->logits", "m1->logits"}
    assert _names(signed) == {"m1->logits", "m0->logits"}


def test_top_n_breaks_ties_by_graph_edge_order():
    scores = _scores(SMALL, {}, rest=1.0)  # every edge ties
    chosen = top_n(scores, 4, prune_result=False)
    assert _names(chosen) == {e.name for e in SMALL.edges[:4]}
    assert torch.equal(top_n(scores, 4, prune_result=False).edges, chosen.edges)


def test_top_n_then_prune_drops_disconnected_edges():
    scores = _scores(SMALL, {"input->m1": 4, "m1->logits": 3, "m0->logits": 2})
    assert _names(top_n(scores, 3)) == {"input->m1", "m1->logits"}
    assert top_n(scores, 3).n_edges == 2 and top_n(scores, 3, prune_result=False).n_edges == 3


def test_threshold_is_inclusive_and_respects_the_sign():
    scores = _scores(SMALL, {"input->logits": 2.0, "m1->logits": -2.0, "m0->logits": 1.9})
    assert _names(threshold(scores, 2.0, prune_result=False)) == {"input->logits", "m1->logits"}
    assert _names(threshold(scores, 2.0, "signed", prune_result=False)) == {"input->logits"}


def test_sizes_as_counts_or_fractions():
    graph = Graph(30, 9)
    assert edge_count(graph, 0.001) == 123  # int(123.211), as MIB
    assert edge_count(graph, 1.0) == graph.n_edges and edge_count(graph, 0) == 0
    assert edge_count(SMALL, 0.5) == 11  # int(11.5)
    assert edge_count(graph, 0.999999) == graph.n_edges - 1
    for bad in (-1, graph.n_edges + 1, 1.5, -0.1, True, "10"):
        with pytest.raises(GraphError):
            edge_count(graph, bad)


def test_nan_scores_and_unknown_rankings_raise():
    values = torch.zeros(SMALL.valid.shape)
    values[SMALL.edge_cell("m1->logits")] = torch.nan
    with pytest.raises(GraphError, match="NaN"):
        top_n(EdgeScores(SMALL, values, "hand"), 3)
    with pytest.raises(GraphError, match="absolute, signed"):
        top_n(_scores(SMALL, {}), 3, "biggest")


# greedy -----------------------------------------------------------------------------------------
def test_greedy_grows_backwards_from_logits():
    scores = _scores(
        SMALL,
        {
            "input->a1.h0<q>": 10,  # best edge, but a1.h0 is not reachable at first
            "a0.h0->m0": 8,  # never reachable to logits within 3 steps
            "a1.h0->logits": 5,
            "m1->logits": 4,
        },
    )
    grown = greedy(scores, 3, prune_result=False)
    assert _names(grown) == {"a1.h0->logits", "input->a1.h0<q>", "m1->logits"}
    assert _names(greedy(scores, 3)) == {"a1.h0->logits", "input->a1.h0<q>"}  # m1: no input
    assert _names(top_n(scores, 3, prune_result=False)) == {
        "input->a1.h0<q>",
        "a0.h0->m0",
        "a1.h0->logits",
    }


def _slow_greedy(scores: EdgeScores, n: int, ranking: Ranking) -> set[str]:
    graph = scores.graph
    values = scores.values().tolist()
    keys = [abs(v) if ranking is Ranking.ABSOLUTE else v for v in values]
    inside, chosen = {parse_node("logits")}, set()
    for _ in range(n):
        candidates = [
            i for i, e in enumerate(graph.edges) if i not in chosen and e.receiver.node in inside
        ]
        best = max(candidates, key=lambda i: (keys[i], -i))
        chosen.add(best)
        inside.add(graph.edges[best].sender)
    return {graph.edges[i].name for i in chosen}


@pytest.mark.parametrize("ranking", list(Ranking))
def test_greedy_matches_the_slow_reference(ranking):
    graph = Graph(3, 2)
    generator = torch.Generator().manual_seed(4)
    values = torch.randint(-3, 4, graph.valid.shape, generator=generator).float()  # many ties
    scores = EdgeScores(graph, values, "random")
    for n in (1, 7, 30, graph.n_edges):
        fast = greedy(scores, n, ranking, prune_result=False)
        assert _names(fast) == _slow_greedy(scores, n, ranking)


def test_greedy_is_connected_on_smollm2_graph():
    graph = Graph(30, 9)
    scores = EdgeScores(graph, torch.randn(graph.valid.shape), "random")
    for size in (0.001, 0.01, 0.1):
        grown = greedy(scores, size, prune_result=False)
        assert grown.n_edges == edge_count(graph, size)
        to_logits = reaches_logits(graph, grown.edges)[receiver_nodes(graph)]
        assert bool(to_logits[grown.edges.nonzero()[:, 0]].all())
        pruned = greedy(scores, size)
        _assert_on_input_logits_paths(pruned)
        assert torch.equal(prune(pruned).edges, pruned.edges)
    assert greedy(scores, 1.0).n_edges == graph.n_edges


# node-level circuits ----------------------------------------------------------------------------
def test_node_circuit_to_edges_and_back():
    nodes = NodeCircuit.from_names(SMALL, ["a0.h0", "m1"])
    expected = {
        "input->a0.h0<q>",
        "input->a0.h0<k>",
        "input->a0.h0<v>",
        "input->m1",
        "a0.h0->m1",
        "input->logits",
        "a0.h0->logits",
        "m1->logits",
    }
    assert _names(nodes.to_circuit()) == expected
    assert NodeCircuit.from_circuit(nodes.to_circuit()).nodes == nodes.nodes
    ablated = {SMALL.edges[i].name for i in nodes.ablated()[SMALL.valid].nonzero().flatten()}
    assert ablated == {e.name for e in SMALL.edges if e.sender.name in ("m0", "a1.h0")}


def test_node_circuit_rejects_unknown_nodes():
    with pytest.raises(GraphError):
        NodeCircuit.from_names(SMALL, ["a2.h0"])
    with pytest.raises(GraphError):
        NodeCircuit.from_names(SMALL, ["input"])
    with pytest.raises(GraphError, match="not in the circuit"):
        NodeCircuit.from_names(SMALL, ["m0"], positions={"m1": [0]})


def test_per_position_node_circuit_masks():
    nodes = NodeCircuit.from_names(SMALL, ["a0.h0", "m1"], positions={"a0.h0": [2, 0]})
    kept = nodes.kept_positions(4)  # (pos, sender)
    a0, m1, m0 = (SMALL.sender_index[parse_node(n)] for n in ("a0.h0", "m1", "m0"))
    assert kept[:, a0].tolist() == [True, False, True, False]
    assert bool(kept[:, m1].all()) and not bool(kept[:, m0].any()) and bool(kept[:, 0].all())
    ablated = nodes.ablated_by_position(4)  # (pos, receiver, sender)
    assert torch.equal(ablated[1], SMALL.valid & ~kept[1][None, :])
    assert ablated[0, :, a0].sum() == 0 and ablated[1, :, a0].sum() == SMALL.valid[:, a0].sum()
    with pytest.raises(GraphError):
        nodes.to_circuit()
    with pytest.raises(GraphError):
        nodes.kept_positions(2)  # position 2 does not exist


def test_node_ablation_equals_its_edge_circuit_in_the_engine():
    model = tiny_model("llama")
    engine = EdgeForward(model)
    tokens = tiny_tokens()
    ablation = engine.outputs(tokens).flip(0)  # another prompt's outputs as the ablation
    nodes = NodeCircuit.from_names(engine.graph, ["a0.h1", "m0", "a1.h3", "a2.h0", "m2"])
    by_node = engine.run(tokens, tokens.last_index, nodes.ablated(), ablation).logits
    circuit = nodes.to_circuit().ablated
    by_edges = engine.run(tokens, tokens.last_index, circuit, ablation).logits
    torch.testing.assert_close(by_node, by_edges, atol=1e-5, rtol=1e-5)
    full = engine.run(tokens, tokens.last_index).logits
    assert not torch.allclose(by_node, full, atol=1e-3)


def test_node_scores_sum_incoming_and_outgoing_magnitudes():
    graph = Graph(3, 2)
    values = torch.randn(graph.valid.shape, generator=torch.Generator().manual_seed(1))
    scores = EdgeScores(graph, values, "random")
    expected = torch.zeros(graph.n_senders)
    for edge in graph.edges:
        magnitude = abs(scores.of(edge))
        expected[graph.sender_index[edge.sender]] += magnitude
        if edge.receiver.node.name != "logits":
            expected[graph.sender_index[edge.receiver.node]] += magnitude
    torch.testing.assert_close(node_scores(scores), expected)
    best = top_nodes(scores, 3)
    order = expected[1:].argsort(descending=True)[:3] + 1
    assert best.nodes == frozenset(graph.senders[i] for i in order.tolist())
