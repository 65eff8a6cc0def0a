"""Node-position ablation in the edge engine (`EdgeForward.run(node_ablated=...)`): a sender's
output replaced at chosen (row, position) tokens, against a slow reference (hook interventions
on the instrumented model) and the engine's own position-free node ablation."""

from __future__ import annotations

import pytest
import torch

from tests.discovery_fixtures import tiny_problem
from tests.tiny_models import FAMILIES, tiny_model
from wildcircuits.errors import WildcircuitsError
from wildcircuits.graph.nodes_circuit import NodeCircuit
from wildcircuits.models import InstrumentedModel
from wildcircuits.names import NodeKind, parse_node
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.patching.hooks import replace
from wildcircuits.patching.sites import Component, Site

TOL = {"atol": 1e-5, "rtol": 1e-5}


def _setup(family: str):
    model = tiny_model(family)
    engine = EdgeForward(model)
    problem = tiny_problem(model)
    values = engine.outputs(problem.corrupted)  # (batch, pos, sender, d_model)
    return model, engine, problem, values


def _random_node_mask(engine, problem, fraction: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    shape = (problem.batch, problem.clean.seq_len, engine.graph.n_senders)
    mask = torch.rand(shape, generator=generator) < fraction
    mask[:, :, 0] = False  # input kept (the reference below replaces heads and MLPs only)
    return mask


def _run(engine, problem, values, node_ablated=None, copies=1):
    return engine.run(
        problem.clean, problem.positions, ablation=values, node_ablated=node_ablated, copies=copies
    ).logits


def _reference(model, engine, problem, mask: torch.Tensor) -> torch.Tensor:
    """Slow and obvious: hooks replace each head's z and each MLP's output at the masked tokens
    by their values on the corrupted prompts (a head's output is linear in its z without a
    post-norm, so this replaces the head's output)."""
    graph = engine.graph
    sites = [Site(Component.Z, layer) for layer in range(model.n_layers)]
    sites += [Site(Component.MLP_OUT, layer) for layer in range(model.n_layers)]
    corrupted = model.run(problem.corrupted, capture=sites, return_logits=False)
    interventions = []
    for column, node in enumerate(graph.senders):
        if node.kind is NodeKind.INPUT or not bool(mask[:, :, column].any()):
            continue
        keep = mask[:, :, column]  # (batch, pos)
        if node.kind is NodeKind.HEAD:
            site = Site(Component.Z, node.layer, head=node.head)
            value = corrupted[Site(Component.Z, node.layer)][:, :, node.head]
            where = keep[:, :, None]
        else:
            site = Site(Component.MLP_OUT, node.layer)
            value = corrupted[site]
            where = keep[:, :, None]
        interventions.append(replace(site, lambda cur, v=value, w=where: torch.where(w, v, cur)))
    return model.run(problem.clean, interventions=interventions, positions=problem.positions).logits


@pytest.mark.parametrize("family", ["gpt2", "llama", "gpt_neox"])
@pytest.mark.parametrize("fraction", [0.1, 0.5])
def test_node_position_ablation_matches_hook_reference(family, fraction):
    model, engine, problem, values = _setup(family)
    mask = _random_node_mask(engine, problem, fraction, seed=3)
    fast = _run(engine, problem, values, mask)
    torch.testing.assert_close(fast, _reference(model, engine, problem, mask), **TOL)
    clean = engine.run(problem.clean, problem.positions).logits
    assert (fast - clean).abs().max() > 1e-3  # the mask matters


@pytest.mark.parametrize("family", FAMILIES)
def test_nothing_masked_is_the_clean_run(family):
    model, engine, problem, values = _setup(family)
    mask = torch.zeros(problem.batch, problem.clean.seq_len, engine.graph.n_senders).bool()
    clean = engine.run(problem.clean, problem.positions).logits
    assert torch.equal(_run(engine, problem, values, mask), clean)


@pytest.mark.parametrize("family", FAMILIES)
def test_every_position_equals_the_position_free_node_ablation(family):
    """A mask covering every token of the removed nodes gives NodeCircuit.ablated()'s run
    (Gemma3 included: the frozen post-norm scale holds either way)."""
    model, engine, problem, values = _setup(family)
    graph = engine.graph
    generator = torch.Generator().manual_seed(5)
    kept = {node for node in graph.senders[1:] if torch.rand(1, generator=generator) < 0.5}
    circuit = NodeCircuit(graph, frozenset(kept))
    removed = ~circuit.kept_senders()  # (sender,)
    mask = removed[None, None, :].expand(problem.batch, problem.clean.seq_len, -1).clone()
    by_edges = engine.run(
        problem.clean, problem.positions, ablated=circuit.ablated(), ablation=values
    ).logits
    torch.testing.assert_close(_run(engine, problem, values, mask), by_edges, **TOL)
    # everything masked (input included) is the run with every edge ablated: the corrupted run
    everything = torch.ones_like(mask)
    corrupted = engine.run(problem.corrupted, problem.positions).logits
    torch.testing.assert_close(_run(engine, problem, values, everything), corrupted, **TOL)


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_pairs_that_cannot_reach_the_logits_change_nothing(family):
    """Last-layer heads and MLP away from the metric position feed no receiver that reaches
    the logits there."""
    model, engine, problem, values = _setup(family)
    graph, last = engine.graph, model.n_layers - 1
    mask = torch.zeros(problem.batch, problem.clean.seq_len, graph.n_senders).bool()
    mask[:, :, graph.head_senders(last)] = True
    mask[:, :, graph.mlp_sender(last)] = True
    mask[torch.arange(problem.batch), problem.positions] = False
    clean = engine.run(problem.clean, problem.positions).logits
    assert torch.equal(_run(engine, problem, values, mask), clean)


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_stacked_copies_equal_separate_runs(family):
    model, engine, problem, values = _setup(family)
    masks = [_random_node_mask(engine, problem, f, seed=s) for s, f in ((1, 0.2), (2, 0.7))]
    stacked = _run(engine, problem, values, torch.cat(masks), copies=2)
    separate = torch.cat([_run(engine, problem, values, m) for m in masks])
    torch.testing.assert_close(stacked, separate, **TOL)
    pooled = values.mean(dim=(0, 1), keepdim=True)  # one value for every row and position
    stacked = _run(engine, problem, pooled, torch.cat(masks), copies=2)
    separate = torch.cat([_run(engine, problem, pooled, m) for m in masks])
    torch.testing.assert_close(stacked, separate, **TOL)


def test_bad_node_masks_raise_one_line_errors():
    model, engine, problem, values = _setup("llama")
    with pytest.raises(WildcircuitsError, match="node-position mask must be a bool tensor"):
        _run(engine, problem, values, torch.zeros(2, 3, 4).bool())
    mask = torch.zeros(problem.batch, problem.clean.seq_len, engine.graph.n_senders)
    with pytest.raises(WildcircuitsError, match="node-position mask must be a bool tensor"):
        _run(engine, problem, values, mask)
    with pytest.raises(WildcircuitsError, match="pass both"):
        engine.run(problem.clean, problem.positions, node_ablated=mask.bool())


def test_a_per_position_node_circuit_runs_as_its_node_mask():
    model, engine, problem, values = _setup("llama")
    graph = engine.graph
    circuit = NodeCircuit.from_names(graph, ["a1.h2", "m0", "a2.h0"], positions={"a1.h2": [3, 8]})
    mask = circuit.node_ablated(problem.batch, problem.clean.seq_len)
    assert not mask[:, :, 0].any()  # input kept
    column = graph.sender_index[parse_node("a1.h2")]
    assert mask[:, :, column].sum(1).tolist() == [problem.clean.seq_len - 2] * problem.batch
    fast = _run(engine, problem, values, mask)
    torch.testing.assert_close(fast, _reference(model, engine, problem, mask), **TOL)


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_real_model_every_position_equals_node_ablation_and_nothing_is_clean(name, request):
    """Exact on the real models: a node-position mask over every token of the removed nodes
    is the position-free node ablation; an empty mask the clean run."""
    model = InstrumentedModel(*request.getfixturevalue(name))
    engine = EdgeForward(model)
    clean = model.tokenize(["When John and Mary went to the store, John gave a drink to"])
    corrupted = model.tokenize(["When Paul and Anna went to the store, Mark gave a drink to"])
    assert clean.input_ids.shape == corrupted.input_ids.shape
    at, values = clean.last_index, engine.outputs(corrupted)
    circuit = NodeCircuit(engine.graph, frozenset(engine.graph.senders[1::3]))
    mask = circuit.node_ablated(1, clean.seq_len)
    fast = engine.run(clean, at, ablation=values, node_ablated=mask).logits
    edges = engine.run(clean, at, ablated=circuit.ablated(), ablation=values).logits
    assert (fast - edges).abs().max().item() <= 1e-3
    assert (fast - model.logits(clean, positions=at)).abs().max().item() > 0.1  # it matters
    nothing = engine.run(clean, at, ablation=values, node_ablated=torch.zeros_like(mask)).logits
    assert torch.equal(nothing, engine.run(clean, at).logits)
