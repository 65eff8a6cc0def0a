"""The shared clean prefix (`patching.edge_prefix`): edge forwards that compute only the columns
after the tokens every clean and corrupted prompt share equal the full forwards (every family,
edge and node-position masks, stacked copies, loss positions, the real models), the prefix
length is exactly the agreement, a too-long prefix is wrong (so the prefix is really read), and
the evaluators that use it give the numbers of running every column."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.discovery_fixtures import tiny_problem
from tests.tiny_models import FAMILIES, tiny_model
from wildcircuits.errors import WildcircuitsError
from wildcircuits.evaluation.faithfulness import evaluate_circuits
from wildcircuits.explanation.pair_evaluator import PairEvaluator
from wildcircuits.explanation.positions import pair_space
from wildcircuits.graph.circuit import Circuit
from wildcircuits.models import InstrumentedModel
from wildcircuits.models.tokens import Tokens
from wildcircuits.patching.edge_ablation import AblationCache
from wildcircuits.patching.edge_prefix import build_prefix, counterfactual_prefix, shared_length
from wildcircuits.patching.edges import EdgeForward

TOL = {"atol": 1e-5, "rtol": 1e-5}
SHARED = 4  # columns the corrupted prompts below share with the clean ones


def _problem(model, shared: int = SHARED):
    """tiny_problem with corrupted prompts that agree with the clean ones on `shared` columns
    (padding included: row 1 is right-padded, row 2 left-padded)."""
    problem = tiny_problem(model)
    clean = problem.clean
    ids = problem.corrupted.input_ids.clone()
    ids[:, :shared] = clean.input_ids[:, :shared]
    corrupted = Tokens(ids, clean.attention_mask, clean.position_ids, clean.last_index)
    return replace(problem, corrupted=corrupted)


def _masks(engine, problem, copies: int = 2, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    graph = engine.graph
    edges = (torch.rand(graph.n_receivers, graph.n_senders, generator=generator) < 0.5) & (
        graph.valid
    )
    shape = (copies * problem.batch, problem.clean.seq_len, graph.n_senders)
    nodes = torch.rand(shape, generator=generator) < 0.4
    return edges, nodes


def _circuits(graph, fractions, seed: int) -> list[Circuit]:
    """Random edge circuits keeping about each fraction of the edges."""
    generator = torch.Generator().manual_seed(seed)
    return [
        Circuit(graph, (torch.rand(graph.valid.shape, generator=generator) < p) & graph.valid)
        for p in fractions
    ]


@pytest.mark.parametrize("family", FAMILIES)
def test_prefix_runs_equal_full_runs_and_the_prefix_is_really_read(family):
    model = tiny_model(family)
    engine = EdgeForward(model)
    problem = _problem(model)
    clean, at = problem.clean, problem.positions
    values = engine.outputs(problem.corrupted)
    prefix = counterfactual_prefix(model, clean, problem.corrupted, at)
    assert prefix.length == SHARED
    edges, nodes = _masks(engine, problem)
    full = engine.run(clean, at, ablated=edges, ablation=values).logits
    fast = engine.run(clean, at, ablated=edges, ablation=values, prefix=prefix).logits
    torch.testing.assert_close(fast, full, **TOL)
    stacked = dict(ablation=values, node_ablated=nodes, copies=2)
    full_nodes = engine.run(clean, at, **stacked).logits
    torch.testing.assert_close(
        engine.run(clean, at, **stacked, prefix=prefix).logits, full_nodes, **TOL
    )
    assert (full - engine.run(clean, at).logits).abs().max() > 1e-3  # the ablation matters
    # a prefix one column past the agreement holds clean keys where the runs differ: wrong
    too_long = build_prefix(model, clean, SHARED + 1)
    wrong = engine.run(clean, at, ablated=edges, ablation=values, prefix=too_long).logits
    assert (wrong - full).abs().max() > 1e-4


def test_loss_positions_shift_and_masked_entries_stay_valid():
    model = tiny_model("llama")
    engine = EdgeForward(model)
    problem = _problem(model)
    clean = problem.clean
    positions = torch.tensor([[5, 6, 0], [4, 5, 0], [6, 7, 8]])
    mask = torch.tensor([[1, 1, 0], [1, 1, 0], [1, 1, 1]], dtype=torch.bool)
    values = engine.outputs(problem.corrupted)
    prefix = counterfactual_prefix(model, clean, problem.corrupted, positions, mask)
    assert prefix.length == SHARED  # the masked 0 entries do not cap it
    edges, _ = _masks(engine, problem)
    full = engine.run(clean, positions, ablated=edges, ablation=values).logits
    fast = engine.run(clean, positions, ablated=edges, ablation=values, prefix=prefix).logits
    torch.testing.assert_close(fast[mask], full[mask], **TOL)


def test_shared_length_is_the_agreement_capped_at_the_first_position():
    model = tiny_model("llama")
    problem = _problem(model)
    clean, corrupted, at = problem.clean, problem.corrupted, problem.positions
    assert shared_length(clean, corrupted, at) == SHARED
    assert shared_length(clean, clean, at) == int(at.min())  # identical: every read column
    assert shared_length(clean, clean, torch.tensor([2, 7, 8])) == 2
    other = tiny_problem(model).corrupted  # differs at column 0 somewhere
    assert shared_length(clean, other, at) == 0
    assert counterfactual_prefix(model, clean, other, at) is None
    padding = clean.attention_mask.clone()
    padding[0, 2] = 0  # the same ids, other padding at column 2
    moved = Tokens(corrupted.input_ids, padding, corrupted.position_ids, corrupted.last_index)
    assert shared_length(clean, moved, at) == 2


def test_prefix_refuses_what_could_change_its_columns():
    model = tiny_model("gpt2")
    engine = EdgeForward(model)
    problem = _problem(model)
    prefix = counterfactual_prefix(model, problem.clean, problem.corrupted, problem.positions)
    for bad in ({"extra": {1: torch.zeros(1)}}, {"override": {1: torch.zeros(1)}}):
        with pytest.raises(WildcircuitsError, match="shared prefix cannot be combined"):
            engine.run(problem.clean, problem.positions, prefix=prefix, **bad)
    with pytest.raises(WildcircuitsError, match="shared prefix cannot be combined"):
        engine.receiver_gradients(
            problem.clean, problem.positions, lambda x: x.sum(), override={1: 0}, prefix=prefix
        )


@pytest.mark.parametrize("family", ["gpt2", "gemma3_text"])
def test_evaluators_give_the_numbers_of_running_every_column(family):
    model = tiny_model(family)
    engine = EdgeForward(model)
    problem = _problem(model)
    graph = engine.graph
    circuits = _circuits(graph, (0.2, 0.6, 0.9), seed=3)
    fast = evaluate_circuits(model, problem, circuits, "counterfactual", engine=engine)
    slow = evaluate_circuits(
        model, problem, circuits, "counterfactual", engine=engine, share_prefix=False
    )
    for a, b in [
        (fast.metric, slow.metric),
        ((fast.m_full, fast.m_empty), (slow.m_full, slow.m_empty)),
    ]:
        assert a == pytest.approx(b, abs=1e-5)
    pairs = list(pair_space(graph, problem).all_pairs())[::3]
    kept = [pairs, pairs[::2], ()]
    a = PairEvaluator(engine, problem, "counterfactual").metrics(kept)
    b = PairEvaluator(engine, problem, "counterfactual", share_prefix=False).metrics(kept)
    assert a == pytest.approx(b, abs=1e-5)
    assert len(set(a)) == 3  # three different circuits, three different numbers


def _templated(model):
    """_problem with two templates (rows 0, 1 and row 2) whose clean and corrupted prompts all
    agree on the first SHARED columns within each template (row 2 is left-padded: the whole
    batch agrees on none)."""
    problem = _problem(model)
    clean, corrupted = problem.clean.input_ids.clone(), problem.corrupted.input_ids.clone()
    clean[1, :SHARED] = clean[0, :SHARED]
    corrupted[:, :SHARED] = clean[:, :SHARED]
    c, k = problem.clean, problem.corrupted
    return replace(
        problem,
        clean=Tokens(clean, c.attention_mask, c.position_ids, c.last_index),
        corrupted=Tokens(corrupted, k.attention_mask, k.position_ids, k.last_index),
        groups=torch.tensor([0, 0, 1]),
        group_names=("a", "b"),
    )


def test_which_ablations_share_a_prefix():
    model = tiny_model("llama")
    engine = EdgeForward(model)
    problem = _problem(model)
    assert AblationCache(engine, problem, "counterfactual", 16).prefix(problem).length == SHARED
    grouped = replace(problem, groups=torch.tensor([0, 0, 1]), group_names=("a", "b"))
    for spec in ("mean", "zero", "mean:template"):  # random rows agree on no column
        assert AblationCache(engine, grouped, spec, 16).prefix(grouped) is None
    templated = _templated(model)
    assert AblationCache(engine, templated, "mean:template", 16).prefix(templated).length == 4
    for spec in ("mean", "mean:template:pooled", "zero"):  # the batch's padding differs
        assert AblationCache(engine, templated, spec, 16).prefix(templated) is None


@pytest.mark.parametrize("family", ["gpt2", "gemma3_text"])
def test_per_template_means_with_the_prefix_equal_every_column(family):
    model = tiny_model(family)
    engine = EdgeForward(model)
    problem = _templated(model)
    graph = engine.graph
    circuits = _circuits(graph, (0.3, 0.8), seed=5)
    spec = "mean:template"
    fast = evaluate_circuits(model, problem, circuits, spec, engine=engine)
    slow = evaluate_circuits(model, problem, circuits, spec, engine=engine, share_prefix=False)
    assert fast.metric == pytest.approx(slow.metric, abs=1e-5)
    assert (fast.m_full, fast.m_empty) == pytest.approx((slow.m_full, slow.m_empty), abs=1e-5)
    pairs = list(pair_space(graph, problem).all_pairs())[::2]
    kept = [pairs, pairs[::3], ()]
    a = PairEvaluator(engine, problem, spec).metrics(kept)
    b = PairEvaluator(engine, problem, spec, share_prefix=False).metrics(kept)
    assert a == pytest.approx(b, abs=1e-5) and len(set(b)) == 3


@pytest.mark.parametrize("name", ["smollm2", "gemma3"])
def test_real_models_prefix_runs_equal_full_runs(name, request):
    model = InstrumentedModel(*request.getfixturevalue(name))
    engine = EdgeForward(model)
    clean = model.tokenize(["When John and Mary went to the store, John gave a drink to"])
    corrupted = model.tokenize(["When John and Mary went to the store, Mary gave a drink to"])
    at, values = clean.last_index, engine.outputs(corrupted)
    prefix = counterfactual_prefix(model, clean, corrupted, at)
    assert 8 <= prefix.length < clean.seq_len - 3  # up to ", " before the second name
    edges, nodes = _masks(engine, type("P", (), {"batch": 1, "clean": clean})(), copies=1)
    full = engine.run(clean, at, ablated=edges, ablation=values).logits
    fast = engine.run(clean, at, ablated=edges, ablation=values, prefix=prefix).logits
    assert (fast - full).abs().max().item() <= 1e-4  # float32, other matmul shapes
    full = engine.run(clean, at, ablation=values, node_ablated=nodes).logits
    fast = engine.run(clean, at, ablation=values, node_ablated=nodes, prefix=prefix).logits
    assert (fast - full).abs().max().item() <= 1e-4  # float32, other matmul shapes
    assert (full - model.logits(clean, positions=at)).abs().max().item() > 0.1  # it matters


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["heads", "resid", "mlp_out", "k"])
def test_activation_patching_with_the_prefix_equals_every_column(family, kind):
    from wildcircuits.patching.activation import activation_patching

    model = tiny_model(family)
    problem = _problem(model)
    for direction in ("denoise", "noise"):
        runs = [
            activation_patching(
                model, problem, kind, direction, progress=False, max_rows=6, share_prefix=share
            )
            for share in (True, False)
        ]
        fast, slow = (torch.as_tensor(r.metric.values, dtype=torch.float64) for r in runs)
        torch.testing.assert_close(fast, slow, atol=1e-5, rtol=1e-5, equal_nan=True)
        assert float(slow.nan_to_num().abs().max()) > 0


def test_instrumented_runs_refuse_positioned_sites_with_a_prefix():
    from wildcircuits.errors import SiteError
    from wildcircuits.patching.sites import Component, Site

    model = tiny_model("llama")
    problem = _problem(model)
    prefix = counterfactual_prefix(model, problem.clean, problem.corrupted, problem.positions)
    with pytest.raises(SiteError, match="shared prefix"):
        model.run(prefix.tokens, capture=[Site(Component.RESID_PRE, 1, position=2)], prefix=prefix)


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3_text"])
def test_attributions_with_the_prefix_equal_every_column(family, monkeypatch):
    """EAP-IG-inputs edge scores and the explain step's pair attribution: the runs after the
    shared columns give the scores of running every column (the shared columns' differences
    are zero)."""
    from wildcircuits.discovery import eap_ig
    from wildcircuits.discovery.eap_ig import EAPIGConfig, eap_ig_inputs
    from wildcircuits.explanation.positions import score_pairs

    model = tiny_model(family)
    problem = _problem(model)
    fast_edges = eap_ig_inputs(model, problem, EAPIGConfig(steps=3)).scores
    fast_pairs = score_pairs(model, problem, steps=3)
    fast_plain = score_pairs(model, problem, steps=1)
    monkeypatch.setattr(eap_ig, "counterfactual_prefix", lambda *args, **kwargs: None)
    monkeypatch.setattr(AblationCache, "prefix", lambda self, chunk: None)
    slow_edges = eap_ig_inputs(model, problem, EAPIGConfig(steps=3)).scores
    torch.testing.assert_close(fast_edges, slow_edges, atol=1e-6, rtol=1e-5)
    assert float(slow_edges.abs().max()) > 1e-4
    for fast, slow in ((fast_pairs, score_pairs(model, problem, steps=3)),
                       (fast_plain, score_pairs(model, problem, steps=1))):  # fmt: skip
        assert {s.pair: s.attribution for s in fast} == pytest.approx(
            {s.pair: s.attribution for s in slow}, abs=1e-6, rel=1e-5
        )
