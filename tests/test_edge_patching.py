"""The edge graph and the one-pass edge patching engine against a slow, obvious reference."""

from __future__ import annotations

import pytest
import torch

from tests.edge_reference import edge_patching_reference
from tests.tiny_models import FAMILIES, tiny_model, tiny_tokens
from wildcircuits.errors import GraphError, WildcircuitsError
from wildcircuits.graph.graph import Graph, expected_edge_count
from wildcircuits.models.tokens import Tokens
from wildcircuits.names import NodeKind, Slot, parse_edge
from wildcircuits.patching.edges import EdgeForward


@pytest.mark.parametrize(
    ("layers", "heads", "expected"), [(12, 12, 32_491), (30, 9, 123_211), (18, 4, 10_342)]
)
def test_edge_counts_follow_the_formula(layers, heads, expected):
    graph = Graph(layers, heads)
    assert graph.n_edges == expected == expected_edge_count(layers, heads) == len(graph.edges)


def test_parallel_blocks_drop_same_layer_head_to_mlp_edges():
    assert Graph(2, 3, parallel_attn_mlp=True).n_edges == Graph(2, 3).n_edges - 2 * 3


@pytest.mark.parametrize("parallel", [False, True])
def test_receiver_and_sender_layout_by_layer(parallel):
    graph = Graph(4, 3, parallel_attn_mlp=parallel)
    for row, receiver in enumerate(graph.receivers):
        layer = graph.receiver_layer(row)
        expected = graph.n_layers if receiver.node.name == "logits" else receiver.node.layer
        assert layer == expected
        assert graph.first_receiver(layer) <= row < graph.first_receiver(layer + 1) or (
            layer == graph.n_layers and row == graph.logits_receiver
        )
        # a receiver reads only senders computed before its layer, or its own layer's heads
        assert graph.n_upstream(receiver) >= graph.first_sender(layer)
    assert graph.first_receiver(graph.n_layers) == graph.logits_receiver
    assert graph.first_sender(graph.n_layers) == graph.n_senders
    for layer in range(graph.n_layers):
        assert graph.first_receiver(layer) == graph.attention_receivers(layer).start
        assert graph.first_sender(layer) == graph.head_senders(layer).start


def test_edge_names_round_trip_and_bad_names_raise():
    graph = Graph(3, 2)
    for edge in graph.edges:
        assert parse_edge(edge.name) == edge
        r, s = graph.edge_cell(edge.name)
        assert graph.receivers[r] == edge.receiver and graph.senders[s] == edge.sender
    with pytest.raises(GraphError, match="goes backwards"):
        graph.edge_cell("a2.h0->a1.h0<q>")
    with pytest.raises(GraphError, match="not in this graph"):
        graph.edge_cell("a7.h0->logits")
    with pytest.raises(GraphError, match="unknown node name"):
        parse_edge("blocks.0->logits")
    with pytest.raises(GraphError, match="<q>, <k> or <v>"):
        parse_edge("input->a1.h0")


def _corrupted_like(tokens: Tokens, seed: int) -> Tokens:
    other = tiny_tokens(batch=tokens.batch, length=tokens.seq_len, seed=seed)
    return Tokens(other.input_ids, tokens.attention_mask, tokens.position_ids, tokens.last_index)


def _random_mask(graph: Graph, fraction: float, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(graph.valid.shape, generator=generator) < fraction) & graph.valid


@pytest.mark.parametrize("family", FAMILIES)
def test_no_ablation_reproduces_the_model(family):
    model = tiny_model(family)
    tokens = tiny_tokens()
    run = EdgeForward(model).run(tokens, tokens.last_index)
    expected = model.logits(tokens, positions=tokens.last_index)
    torch.testing.assert_close(run.logits, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_full_circuit_gives_clean_and_empty_circuit_gives_corrupted(family):
    model = tiny_model(family)
    engine = EdgeForward(model)
    clean = tiny_tokens()
    corrupted = _corrupted_like(clean, seed=7)
    ablation = engine.outputs(corrupted)
    none = torch.zeros_like(engine.graph.valid)
    full = engine.run(clean, clean.last_index, ablated=none, ablation=ablation).logits
    empty = engine.run(clean, clean.last_index, ablated=engine.graph.valid, ablation=ablation)
    torch.testing.assert_close(
        full, model.logits(clean, positions=clean.last_index), atol=1e-5, rtol=1e-5
    )
    torch.testing.assert_close(
        empty.logits, model.logits(corrupted, positions=clean.last_index), atol=1e-5, rtol=1e-5
    )


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9])
def test_random_circuits_match_the_slowedge_patching_reference(family, fraction):
    model = tiny_model(family)
    engine = EdgeForward(model)
    clean = tiny_tokens()
    ablation = engine.outputs(_corrupted_like(clean, seed=3))
    mask = _random_mask(engine.graph, fraction, seed=11)
    fast = engine.run(clean, clean.last_index, ablated=mask, ablation=ablation).logits
    with torch.no_grad():
        slow = edge_patching_reference(model, engine.graph, clean, mask, ablation, clean.last_index)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def _column_mask(graph: Graph, columns: list[int], ablate_them: bool) -> torch.Tensor:
    """Edges from `columns` ablated (or every edge but those ablated)."""
    chosen = torch.zeros_like(graph.valid)
    chosen[:, columns] = True
    return (chosen if ablate_them else ~chosen) & graph.valid


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize(
    "pattern", ["ablate_two_senders", "keep_two_senders", "keep_few_edges", "ablate_few_edges"]
)
def test_sparse_and_complement_circuits_match_the_slowedge_patching_reference(family, pattern):
    """The engine sums whichever side of each receiver's edges is smaller (ablated or kept):
    circuits near empty, near full and concentrated on a few senders all take those paths."""
    model = tiny_model(family)
    engine = EdgeForward(model)
    graph = engine.graph
    clean = tiny_tokens()
    ablation = engine.outputs(_corrupted_like(clean, seed=4))
    columns = [0, graph.mlp_sender(0)]
    mask = {
        "ablate_two_senders": lambda: _column_mask(graph, columns, ablate_them=True),
        "keep_two_senders": lambda: _column_mask(graph, columns, ablate_them=False),
        "keep_few_edges": lambda: graph.valid & ~_random_mask(graph, 0.03, seed=8),
        "ablate_few_edges": lambda: _random_mask(graph, 0.03, seed=8),
    }[pattern]()
    fast = engine.run(clean, clean.last_index, ablated=mask, ablation=ablation).logits
    with torch.no_grad():
        slow = edge_patching_reference(model, graph, clean, mask, ablation, clean.last_index)
    torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_mean_and_zero_ablation_match_theedge_patching_reference():
    model = tiny_model("llama")
    engine = EdgeForward(model)
    clean = tiny_tokens(padded=False)
    mean = engine.outputs(_corrupted_like(clean, seed=3)).mean(0, keepdim=True)
    mask = _random_mask(engine.graph, 0.3, seed=2)
    for ablation in (mean, torch.zeros_like(mean)):
        fast = engine.run(clean, clean.last_index, ablated=mask, ablation=ablation).logits
        with torch.no_grad():
            slow = edge_patching_reference(
                model,
                engine.graph,
                clean,
                mask,
                ablation.expand(clean.batch, -1, -1, -1),
                clean.last_index,
            )
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5)


def test_ablating_an_edge_changes_only_its_receiver():
    model = tiny_model("qwen2")
    engine = EdgeForward(model)
    clean = tiny_tokens()
    ablation = engine.outputs(_corrupted_like(clean, seed=3))
    graph = engine.graph
    r, s = graph.edge_cell("a0.h1->a2.h3<v>")
    mask = torch.zeros_like(graph.valid)
    mask[r, s] = True
    before = engine.run(clean, clean.last_index, keep_outputs=True).outputs
    after = engine.run(clean, clean.last_index, ablated=mask, ablation=ablation, keep_outputs=True)
    unchanged = graph.head_senders(2).start  # everything before layer 2's heads
    torch.testing.assert_close(
        after.outputs[:, :, :unchanged], before[:, :, :unchanged], atol=0, rtol=0
    )
    assert not torch.allclose(after.outputs[:, :, unchanged + 3], before[:, :, unchanged + 3])


def test_receiver_gradients_match_finite_differences():
    model = tiny_model("gemma3_text")
    engine = EdgeForward(model)
    tokens = tiny_tokens()
    graph = engine.graph

    def objective(logits):
        return logits[:, 7].sum()

    grads = engine.receiver_gradients(tokens, tokens.last_index, objective, keep_outputs=True)
    outputs = grads.outputs
    direction = torch.randn(
        outputs.shape[:2] + (model.d_model,), generator=torch.Generator().manual_seed(0)
    )
    for name in ("input->a1.h2<q>", "a0.h3->a2.h0<k>", "m1->logits", "a1.h1->m1"):
        r, s = graph.edge_cell(name)
        mask = torch.zeros_like(graph.valid)
        mask[r, s] = True

        def shifted(eps, s=s, mask=mask):
            ablation = outputs.clone()
            ablation[:, :, s] += eps * direction
            return objective(engine.run(tokens, tokens.last_index, mask, ablation).logits)

        eps = 1e-2
        numeric = (shifted(eps) - shifted(-eps)) / (2 * eps)
        analytic = (grads.receiver_grads[:, :, r] * direction).sum()
        torch.testing.assert_close(numeric, analytic, atol=2e-3, rtol=2e-2)
    assert grads.receiver_grads.shape[2] == graph.n_receivers
    assert graph.receivers[graph.logits_receiver].node.kind is NodeKind.LOGITS
    assert graph.receivers[graph.attention_receivers(1).start].slot is Slot.Q


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
def test_receiver_gradients_resumed_at_a_layer_equal_the_full_run(family):
    """Resuming the gradient run at layer l (overrides at l or later) gives the full run's
    gradients for every receiver from l on, and zeros before l."""
    model = tiny_model(family)
    engine = EdgeForward(model)
    graph = engine.graph
    tokens = tiny_tokens()
    outputs = engine.outputs(tokens)
    layer = 1
    sender = graph.head_senders(layer).start + 1
    override = {sender: outputs[:, :, sender] * 0.5}

    def objective(logits):
        return logits[:, 3].sum() - logits[:, 5].sum()

    full = engine.receiver_gradients(tokens, tokens.last_index, objective, override=override)
    start = engine.state_at(tokens, layer)
    resumed = engine.receiver_gradients(
        tokens, tokens.last_index, objective, override=override, start=start
    )
    first = graph.first_receiver(layer)
    assert resumed.receiver_grads.shape == full.receiver_grads.shape
    torch.testing.assert_close(resumed.logits, full.logits, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        resumed.receiver_grads[:, :, first:], full.receiver_grads[:, :, first:],
        atol=1e-6, rtol=1e-5,
    )  # fmt: skip
    assert bool((resumed.receiver_grads[:, :, :first] == 0).all())
    assert float(full.receiver_grads[:, :, :first].abs().sum()) > 0  # the full run had some


@pytest.mark.parametrize("family", ["gpt_neox", "qwen2"])
def test_receiver_gradients_accumulate_in_place(family):
    """`accumulate` adds the gradients into the given buffer (integrated gradients' sum)."""
    model = tiny_model(family)
    engine = EdgeForward(model)
    tokens = tiny_tokens()

    def objective(logits):
        return logits[:, 2].sum()

    plain = engine.receiver_gradients(tokens, tokens.last_index, objective).receiver_grads
    buffer = torch.ones_like(plain)
    run = engine.receiver_gradients(tokens, tokens.last_index, objective, accumulate=buffer)
    assert run.receiver_grads is buffer
    torch.testing.assert_close(buffer, plain + 1, atol=1e-6, rtol=1e-6)


def test_bad_masks_are_clear_errors():
    model = tiny_model("llama")
    engine = EdgeForward(model)
    tokens = tiny_tokens()
    ablation = engine.outputs(tokens)
    with pytest.raises(WildcircuitsError, match="bool tensor of shape"):
        engine.run(tokens, tokens.last_index, torch.zeros(3, 3, dtype=torch.bool), ablation)
    with pytest.raises(WildcircuitsError, match="pass both"):
        engine.run(tokens, tokens.last_index, ablated=engine.graph.valid)


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt_neox"])
def test_resuming_at_a_layer_with_extra_receiver_inputs_equals_ablating_the_edge(family):
    model = tiny_model(family)
    engine = EdgeForward(model)
    graph = engine.graph
    clean = tiny_tokens()
    ablation = engine.outputs(_corrupted_like(clean, seed=3))
    base = _random_mask(graph, 0.3, seed=5)
    layer = 1
    start = engine.state_at(clean, layer, base, ablation)
    resumed = engine.run_from(start, clean, clean.last_index, base, ablation)
    full = engine.run(clean, clean.last_index, base, ablation).logits
    torch.testing.assert_close(resumed, full, atol=1e-6, rtol=1e-6)
    candidates = ["a0.h1->a1.h2<k>", "input->m1", "a1.h0->m1", "m0->logits", "a0.h3->a2.h1<q>"]
    for name in candidates:
        if model.parallel_residual and name == "a1.h0->m1":
            continue  # parallel blocks: no same-layer head -> MLP edge
        r, s = graph.edge_cell(name)
        present = base.clone()
        present[r, s] = False  # the state of a run where the edge is present ...
        state = engine.state_at(clean, layer, present, ablation)
        ablated = present.clone()
        ablated[r, s] = True  # ... and the run where it is ablated: only receiver r changes
        expected = engine.run(clean, clean.last_index, ablated, ablation).logits
        # z_s of the run with the edge present (a same-layer head feeding an MLP is computed
        # after the resume point, so take it from that run's outputs, not from the state)
        present_outputs = engine.run(clean, clean.last_index, present, ablation, True).outputs
        extra = ablation[:, :, s] - present_outputs[:, :, s]
        got = engine.run_from(state, clean, clean.last_index, present, ablation, extra={r: extra})
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
        # the same candidate stacked with a no-op copy: batched candidates agree
        twice = engine.run_from(
            state, clean, clean.last_index, present, ablation,
            extra={r: torch.cat([extra, torch.zeros_like(extra)])}, copies=2,
        )  # fmt: skip
        torch.testing.assert_close(twice[: clean.batch], expected, atol=1e-5, rtol=1e-5)
        kept = engine.run(clean, clean.last_index, present, ablation).logits
        torch.testing.assert_close(twice[clean.batch :], kept, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt_neox"])
@pytest.mark.parametrize("kind", ["counterfactual", "mean"])
def test_stacked_copies_of_a_resumed_run_equal_separate_runs(family, kind):
    """copies > 1 shares the senders before the resume layer across copies (computed once, on
    one batch); each copy must still equal its own run, whatever side of the mask is summed."""
    model = tiny_model(family)
    engine = EdgeForward(model)
    graph = engine.graph
    clean = tiny_tokens()
    ablation = engine.outputs(_corrupted_like(clean, seed=4))
    if kind == "mean":
        ablation = ablation.mean(0, keepdim=True)
    generator = torch.Generator().manual_seed(11)
    for fraction, layer in ((0.2, 1), (0.9, 1), (0.5, 2)):
        mask = _random_mask(graph, fraction, seed=int(fraction * 10) + layer)
        state = engine.state_at(clean, layer, mask, ablation)
        row = graph.attention_receivers(layer).start + 1
        shape = (clean.batch, clean.input_ids.shape[1], model.d_model)
        extras = [0.1 * torch.randn(shape, generator=generator) for _ in range(3)]
        stacked = engine.run_from(
            state, clean, clean.last_index, mask, ablation, extra={row: torch.cat(extras)},
            copies=3,
        )  # fmt: skip
        for copy, extra in enumerate(extras):
            alone = engine.run_from(state, clean, clean.last_index, mask, ablation, {row: extra})
            part = stacked[copy * clean.batch : (copy + 1) * clean.batch]
            torch.testing.assert_close(part, alone, atol=1e-5, rtol=1e-5)
        assert not torch.equal(stacked[: clean.batch], stacked[clean.batch : 2 * clean.batch])
