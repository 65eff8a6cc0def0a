"""MIB JSON and PT circuit files: round trips, hand-written files, and every refusal."""

from __future__ import annotations

import json

import pytest
import torch

from wildcircuits.errors import GraphError
from wildcircuits.graph.build import top_n
from wildcircuits.graph.circuit import Circuit, EdgeScores
from wildcircuits.graph.graph import Graph
from wildcircuits.graph.mib import (
    load_circuit,
    load_circuit_pt,
    load_mib_json,
    save_circuit_pt,
    save_mib_json,
)

GRAPH = Graph(3, 2)
SMALL = Graph(2, 1)  # 23 edges
RAN = []


def _scored(graph: Graph = GRAPH, seed: int = 0) -> EdgeScores:
    values = torch.randn(graph.valid.shape, generator=torch.Generator().manual_seed(seed))
    provenance = {"model": "tiny", "quantization": "none", "metric": "logit_diff", "seed": seed}
    return EdgeScores(graph, values, "eap-ig", {"steps": 5}, provenance)


@pytest.mark.parametrize(
    ("save", "load", "suffix"),
    [(save_mib_json, load_mib_json, ".json"), (save_circuit_pt, load_circuit_pt, ".pt")],
)
def test_round_trip_keeps_circuit_scores_and_provenance(tmp_path, save, load, suffix):
    scores = _scored()
    circuit = top_n(scores, 0.3)
    path = save(tmp_path / f"circuit{suffix}", circuit, scores, d_model=32)
    loaded = load(path, GRAPH, d_model=32)
    assert torch.equal(loaded.circuit.edges, circuit.edges)
    assert loaded.circuit.description == circuit.description
    torch.testing.assert_close(loaded.scores.scores, scores.scores, atol=0, rtol=0)
    assert loaded.scores.method == "eap-ig" and loaded.scores.settings == {"steps": 5}
    assert loaded.scores.provenance["metric"] == "logit_diff"
    assert loaded.scores.provenance["imported_from"] == str(path)
    report = loaded.report
    assert (report.n_missing, report.n_in_graph, report.has_scores) == (0, circuit.n_edges, True)
    assert report.n_edges_in_file == GRAPH.n_edges
    assert torch.equal(load_circuit(path, GRAPH).circuit.edges, circuit.edges)


@pytest.mark.parametrize(("save", "suffix"), [(save_mib_json, ".json"), (save_circuit_pt, ".pt")])
def test_a_circuit_without_scores_loads_without_scores(tmp_path, save, suffix):
    circuit = Circuit.from_edges(GRAPH, ["input->m0", "m0->logits"])
    loaded = load_circuit(save(tmp_path / f"c{suffix}", circuit), GRAPH)
    assert loaded.scores is None and loaded.report.has_scores is False
    assert torch.equal(loaded.circuit.edges, circuit.edges)


def test_json_is_written_as_mib_writes_it(tmp_path):
    circuit = Circuit.from_edges(SMALL, ["input->a1.h0<q>", "a1.h0->logits"])
    node_values = torch.arange(SMALL.n_senders, dtype=torch.float)
    path = save_mib_json(tmp_path / "c.json", circuit, d_model=64, node_scores=node_values)
    document = json.loads(path.read_text())
    assert document["cfg"] == {
        "n_layers": 2,
        "n_heads": 1,
        "parallel_attn_mlp": False,
        "d_model": 64,
    }
    assert len(document["edges"]) == 23
    assert document["edges"]["input->a1.h0<q>"] == {"score": 0.0, "in_graph": True}
    assert document["edges"]["m0->a1.h0<k>"] == {"score": 0.0, "in_graph": False}
    assert {"a0.h0->m1", "input->m0", "m1->logits"} <= document["edges"].keys()
    assert document["nodes"]["a1.h0"] == {"in_graph": True, "score": 3.0}
    assert document["nodes"]["m0"] == {"in_graph": False, "score": 2.0}
    assert document["nodes"]["logits"] == {"in_graph": True}


def test_hand_written_mib_json_imports(tmp_path):
    document = {
        "cfg": {"n_layers": 2, "n_heads": 1, "parallel_attn_mlp": False, "d_model": 8},
        "nodes": {"input": True, "a0.h0": {"in_graph": True}, "m1": {"in_graph": False}},
        "edges": {
            "input->a0.h0<v>": {"score": 0.5, "in_graph": True},
            "a0.h0->m1": {"score": -1.25, "in_graph": True},
            "m1->logits": {"score": 2.0, "in_graph": True},
            "input->logits": {"score": 0.125, "in_graph": False},
        },
    }
    path = tmp_path / "mib.json"
    path.write_text(json.dumps(document))
    loaded = load_mib_json(path, SMALL)
    expected = {"input->a0.h0<v>", "a0.h0->m1", "m1->logits"}
    assert {e.name for e in loaded.circuit.edge_list()} == expected
    assert loaded.scores.of("a0.h0->m1") == -1.25 and loaded.scores.of("input->logits") == 0.125
    assert loaded.scores.of("m0->logits") == 0.0
    assert loaded.scores.method == "imported"
    report = loaded.report
    assert (report.n_edges_in_file, report.n_missing, report.n_in_graph) == (4, 19, 3)
    assert report.n_node_conflicts == 2  # two in-graph edges touch m1, which is marked out


def test_mib_style_pt_without_our_block_imports(tmp_path):
    circuit = Circuit.from_edges(SMALL, ["input->m1", "m1->logits"])
    scores = torch.zeros(SMALL.valid.shape)
    scores[SMALL.edge_cell("m1->logits")] = 3.0
    reversed_senders = list(range(SMALL.n_senders))[::-1]  # names, not order, must matter
    data = {
        "cfg": {"n_layers": 2, "n_heads": 1, "parallel_attn_mlp": False},
        "src_nodes": [SMALL.senders[i].name for i in reversed_senders],
        "dst_nodes": [r.name for r in SMALL.receivers],
        "edges_scores": scores.T[reversed_senders],
        "edges_in_graph": circuit.edges.T[reversed_senders],
        "nodes_in_graph": torch.zeros(SMALL.n_senders, dtype=torch.bool),
    }
    torch.save(data, tmp_path / "mib.pt")
    loaded = load_circuit_pt(tmp_path / "mib.pt", SMALL)
    assert torch.equal(loaded.circuit.edges, circuit.edges)
    assert loaded.scores.of("m1->logits") == 3.0 and loaded.report.n_missing == 0


def test_the_full_smollm2_graph_round_trips_through_json(tmp_path):
    graph = Graph(30, 9)
    scores = _scored(graph)
    circuit = top_n(scores, 0.05)
    loaded = load_mib_json(save_mib_json(tmp_path / "c.json", circuit, scores, 576), graph, 576)
    assert torch.equal(loaded.circuit.edges, circuit.edges)
    assert torch.equal(loaded.scores.scores, scores.scores)


# refusals ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("save", "suffix"), [(save_mib_json, ".json"), (save_circuit_pt, ".pt")])
def test_wrong_model_shape_names_both_shapes(tmp_path, save, suffix):
    path = save(tmp_path / f"c{suffix}", Circuit.full(GRAPH), d_model=32)
    with pytest.raises(GraphError, match="3 layers x 2 heads.*30 layers x 9 heads"):
        load_circuit(path, Graph(30, 9))
    with pytest.raises(GraphError, match="d_model 32; this model has 576"):
        load_circuit(path, GRAPH, d_model=576)


@pytest.mark.parametrize("name", ["a5.h0->logits", "m1->a0.h0<q>", "a0.h0->m0<q>", "junk"])
def test_unknown_edge_names_raise(tmp_path, name):
    document = {
        "cfg": {"n_layers": 2, "n_heads": 1, "parallel_attn_mlp": False},
        "nodes": {},
        "edges": {
            "m1->logits": {"score": 1.0, "in_graph": True},
            name: {"score": 1.0, "in_graph": True},
        },
    }
    (tmp_path / "c.json").write_text(json.dumps(document))
    with pytest.raises(GraphError, match="1 edge names are not edges"):
        load_mib_json(tmp_path / "c.json", SMALL)


def test_malformed_entries_raise(tmp_path):
    path = tmp_path / "c.json"
    cfg = {"n_layers": 2, "n_heads": 1}
    for edges in (
        {"m1->logits": {"score": 1.0, "in_graph": "yes"}},
        {"m1->logits": {"score": "x", "in_graph": True}},
    ):
        path.write_text(json.dumps({"cfg": cfg, "edges": edges}))
        with pytest.raises(GraphError, match="m1->logits"):
            load_mib_json(path, SMALL)
    path.write_text(json.dumps({"edges": {}}))
    with pytest.raises(GraphError, match="needs 'cfg' and 'edges'"):
        load_mib_json(path, SMALL)
    with pytest.raises(GraphError, match=r"\.json .*or \.pt"):
        load_circuit(tmp_path / "c.txt", SMALL)


class _Payload:
    """Unpickling this runs code: it must never happen."""

    def __reduce__(self):
        return (RAN.append, ("ran",))


def test_pt_with_a_custom_class_is_refused_without_running_it(tmp_path):
    data = {"cfg": {"n_layers": 2, "n_heads": 1}, "payload": _Payload()}
    torch.save(data, tmp_path / "evil.pt")
    with pytest.raises(GraphError, match="never runs pickled code"):
        load_circuit_pt(tmp_path / "evil.pt", SMALL)
    assert RAN == []
