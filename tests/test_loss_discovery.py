"""Edge patching, every discovery method and faithfulness with a metric read at many positions
per row (the loss), each equal to the same computation on the unrolled problem (one row per
loss position, tests/loss_fixtures.py), plus EAP against finite differences and the slow edge
patching reference."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.discovery_fixtures import finite_difference, sender_outputs
from tests.edge_reference import edge_patching_reference
from tests.loss_fixtures import loss_problem, unroll
from tests.planted_models import VOCAB as PLANTED_VOCAB
from tests.planted_models import planted_induction_model
from tests.tiny_models import VOCAB, tiny_model
from wildcircuits.discovery import get_method
from wildcircuits.evaluation.curves import faithfulness_curves
from wildcircuits.evaluation.faithfulness import evaluate_circuits
from wildcircuits.graph.circuit import Circuit
from wildcircuits.models import wrap_hf_model
from wildcircuits.patching.edges import EdgeForward

TOL = dict(atol=1e-5, rtol=0)


def _case(name: str):
    if name == "planted":
        return planted_induction_model(), loss_problem(PLANTED_VOCAB)
    return tiny_model("llama"), loss_problem(VOCAB, seed=3)


def _random_mask(graph, fraction: float = 0.5, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return graph.valid & (torch.rand(graph.valid.shape, generator=generator) < fraction)


@pytest.mark.parametrize("case", ["planted", "llama"])
def test_edge_run_equals_reference_and_unrolled_rows(case):
    model, problem = _case(case)
    engine = EdgeForward(model)
    ablated = _random_mask(engine.graph)
    ablation = engine.outputs(problem.corrupted)
    run = engine.run(problem.clean, problem.positions, ablated=ablated, ablation=ablation)
    assert run.logits.shape[:2] == problem.positions.shape
    slow = edge_patching_reference(
        model, engine.graph, problem.clean, ablated, ablation, problem.positions
    )
    torch.testing.assert_close(run.logits, slow, atol=1e-4, rtol=1e-4)
    unrolled = unroll(problem)
    flat = engine.run(
        unrolled.clean,
        unrolled.positions,
        ablated=ablated,
        ablation=ablation[unrolled_rows(problem)],
    )
    per_row = unrolled.score(flat.logits).reshape(problem.batch, -1).mean(1)
    torch.testing.assert_close(problem.score(run.logits), per_row, **TOL)


def unrolled_rows(problem) -> torch.Tensor:
    """Each unrolled row's source row (`unroll` keeps the rows in order, lcm(k) per row)."""
    copies = len(unroll(problem).positions) // problem.batch
    return torch.arange(problem.batch).repeat_interleave(copies)


@pytest.mark.parametrize(
    "method", ["eap", "eap-ig-inputs", "eap-ig-activations", "node-attribution"]
)
@pytest.mark.parametrize("case", ["planted", "llama"])
def test_gradient_methods_equal_the_unrolled_problem(method, case):
    model, problem = _case(case)
    spec = get_method(method)
    config = spec.config({"batch_size": 3})
    scores = spec(model, problem, config).scores
    reference = spec(model, unroll(problem), spec.config({"batch_size": 7})).scores
    scale = max(1.0, float(reference.abs().max()))
    torch.testing.assert_close(scores, reference, atol=1e-5 * scale, rtol=0)
    assert float(scores.abs().max()) > 1e-3  # the loss depends on the edges


@pytest.mark.parametrize("loss", ["kl", "metric"])
def test_acdc_equals_the_unrolled_problem(loss):
    model, problem = _case("planted")
    spec = get_method("acdc")
    settings = {"loss": loss, "threshold": 0.05, "progress": False}
    found = spec(model, problem, spec.config(settings))
    reference = spec(model, unroll(problem), spec.config(settings))
    torch.testing.assert_close(found.scores, reference.scores, atol=1e-5, rtol=0, equal_nan=True)
    assert bool(torch.isfinite(found.scores).any())


def test_eap_equals_finite_differences_of_the_loss():
    base = tiny_model("llama")
    model = wrap_hf_model(copy.deepcopy(base.hf_model).double(), model_id="tiny-llama-f64")
    problem = loss_problem(VOCAB, seed=3)
    scores = get_method("eap")(model, problem, get_method("eap").config({})).scores
    engine = EdgeForward(model)
    clean, diff = sender_outputs(engine, problem)
    top = scores.abs().flatten().topk(6).indices.tolist()
    scale = float(scores.abs().max())
    for index in top:
        ablated = torch.zeros_like(engine.graph.valid)
        r, s = index // engine.graph.n_senders, index % engine.graph.n_senders
        ablated[r, s] = True
        expected = finite_difference(engine, problem, ablated, clean, diff)
        assert float(scores[r, s]) == pytest.approx(expected, rel=1e-3, abs=5e-5 * scale)


@pytest.mark.parametrize("ablation", ["counterfactual", "zero"])
def test_faithfulness_equals_the_unrolled_problem(ablation):
    """(Mean ablation is left out: the unrolled rows repeat prompts, so their mean differs.)"""
    model, problem = _case("planted")
    scores = get_method("eap")(model, problem, get_method("eap").config({}))
    curves = faithfulness_curves(model, problem, scores, spec=ablation, batch_size=3)
    unrolled = faithfulness_curves(model, unroll(problem), scores, spec=ablation, batch_size=5)
    for ordering, curve in curves.items():
        other = unrolled[ordering]
        assert curve.m_full == pytest.approx(other.m_full, abs=1e-5)
        assert curve.m_empty == pytest.approx(other.m_empty, abs=1e-5)
        for a, b in zip(curve.faithfulness, other.faithfulness, strict=True):
            assert a == pytest.approx(b, abs=1e-4)
    graph = scores.graph
    metrics = evaluate_circuits(model, problem, [Circuit.full(graph), Circuit.empty(graph)])
    if ablation != "counterfactual":
        return
    clean = problem.score(model.logits(problem.clean, positions=problem.positions)).mean()
    corrupt = problem.score(model.logits(problem.corrupted, positions=problem.positions)).mean()
    assert metrics.m_full == pytest.approx(float(clean), abs=1e-5)
    assert metrics.m_corrupted == pytest.approx(float(corrupt), abs=1e-5)
    assert metrics.m_empty == pytest.approx(float(corrupt), abs=1e-4)
    assert metrics.faithfulness == pytest.approx((1.0, 0.0), abs=1e-6)


def test_node_position_ablation_equals_the_unrolled_problem_and_the_pair_evaluator():
    from wildcircuits.explanation.pair_evaluator import PairEvaluator
    from wildcircuits.explanation.positions import LOSS, position_index
    from wildcircuits.results.explain import Pair

    model, problem = _case("planted")
    names, index = position_index(problem)
    # every valid loss position, and only those, is the LOSS group (REPEAT yields to it)
    assert bool(((index == names.index(LOSS)) == problem.metric_tokens()).all())
    engine = EdgeForward(model)
    evaluator = PairEvaluator(engine, problem, "counterfactual", batch_size=3)
    pairs = [Pair("L1.H0", LOSS), Pair("L0.H0", "other")]
    kept = evaluator.space.kept(pairs)
    mask = evaluator.space.mask(kept)  # (batch, pos, sender)
    fast = evaluator.row_metrics([pairs])[0]  # (batch,)
    values = engine.outputs(problem.corrupted)
    unrolled, rows = unroll(problem), unrolled_rows(problem)
    flat = engine.run(
        unrolled.clean, unrolled.positions, ablation=values[rows], node_ablated=mask[rows]
    )
    per_row = unrolled.score(flat.logits).reshape(problem.batch, -1).mean(1)
    torch.testing.assert_close(fast, per_row.double(), **TOL)
    m_full, m_empty = evaluator.metrics([None, []])
    assert m_full == pytest.approx(float(problem.score(
        model.logits(problem.clean, positions=problem.positions)).mean()), abs=1e-5)  # fmt: skip
    assert abs(float(fast.mean()) - m_empty) > 0.1  # keeping the induction pairs matters
