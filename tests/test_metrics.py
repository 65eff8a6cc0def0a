"""Every metric against a hand computation on tiny logits."""

from __future__ import annotations

import math

import pytest
import torch
from torch.testing import assert_close

from wildcircuits.errors import MetricError
from wildcircuits.tasks import metrics
from wildcircuits.tasks.spec import MetricKind

LOGITS = torch.tensor([[2.0, 0.0, 1.0, -1.0], [0.0, 3.0, 0.0, 1.0]])  # (batch=2, vocab=4)
TARGETS = metrics.make_targets([[0], [2]], [[2], [1]])


def softmax_row(row: list[float]) -> list[float]:
    exps = [math.exp(x) for x in row]
    return [e / sum(exps) for e in exps]


def test_logit_diff() -> None:
    assert_close(metrics.logit_diff(LOGITS, TARGETS), torch.tensor([1.0, -3.0]))


def test_logit_diff_over_sets_is_mean_logit() -> None:
    targets = metrics.make_targets([[0, 2], [1]], [[3], [0, 2]])
    assert_close(metrics.logit_diff(LOGITS, targets), torch.tensor([2.5, 3.0]))


def test_prob_diff_over_sets() -> None:
    targets = metrics.make_targets([[0, 2], [1]], [[3], [0, 2]])
    p0, p1 = softmax_row([2, 0, 1, -1]), softmax_row([0, 3, 0, 1])
    expected = torch.tensor([p0[0] + p0[2] - p0[3], p1[1] - p1[0] - p1[2]])
    assert_close(metrics.prob_diff(LOGITS, targets), expected)


def test_logit_diff_best_wrong_answer_prob_accuracy() -> None:
    assert_close(metrics.logit_diff_best_wrong(LOGITS, TARGETS), torch.tensor([1.0, -3.0]))
    p0, p1 = softmax_row([2, 0, 1, -1]), softmax_row([0, 3, 0, 1])
    assert_close(metrics.answer_prob(LOGITS, TARGETS), torch.tensor([p0[0], p1[2]]))
    assert_close(metrics.accuracy(LOGITS, TARGETS), torch.tensor([1.0, 0.0]))


def test_kl_is_summed_over_vocab() -> None:
    other = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.0, 3.0, 0.0, 1.0]])
    p, q = softmax_row([2, 0, 1, -1]), [0.25] * 4
    expected = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q, strict=True))
    assert_close(metrics.kl_to_clean(other, LOGITS), torch.tensor([expected, 0.0]))


def test_loss_on_chosen_positions() -> None:
    logits = torch.zeros(1, 3, 4)  # (batch, pos, vocab)
    logits[0, 0, 1] = 2.0
    logits[0, 2, 3] = 1.0
    targets = metrics.make_targets([[0]], [[1]], loss_positions=[[0, 2]], loss_targets=[[1, 3]])
    nll_0 = -math.log(softmax_row([0, 2, 0, 0])[1])
    nll_2 = -math.log(softmax_row([0, 0, 0, 1])[3])
    assert_close(metrics.loss(logits, targets), torch.tensor([(nll_0 + nll_2) / 2]))
    assert_close(metrics.loss_accuracy(logits, targets), torch.tensor([1.0]))


def test_ragged_loss_positions_are_masked() -> None:
    logits = torch.zeros(2, 3, 4)
    targets = metrics.make_targets(
        [[0], [0]], [[1], [1]], loss_positions=[[0, 1], [0]], loss_targets=[[1, 2], [3]]
    )
    assert_close(metrics.loss(logits, targets), torch.full((2,), math.log(4)))


def test_compute_at_position_and_gradients() -> None:
    logits = torch.randn(2, 5, 4, requires_grad=True)
    positions = torch.tensor([4, 1])
    value = metrics.compute(MetricKind.LOGIT_DIFF, logits, TARGETS, positions=positions)
    expected = metrics.logit_diff(logits[[0, 1], [4, 1]], TARGETS)
    assert_close(value, expected)
    value.sum().backward()
    assert (
        logits.grad is not None
        and logits.grad[0, 4, 0] == 1.0
        and logits.grad[0, 0].abs().sum() == 0
    )


def test_normalize_clean_one_corrupted_zero() -> None:
    assert metrics.normalize(4.0, clean=4.0, corrupted=1.0) == 1.0
    assert metrics.normalize(1.0, clean=4.0, corrupted=1.0) == 0.0
    assert metrics.normalize(2.5, clean=4.0, corrupted=1.0) == 0.5
    assert metrics.normalize(0.5, clean=0.0, corrupted=2.0) == 0.75  # lower-is-better metric
    with pytest.raises(MetricError, match="agree"):
        metrics.normalize(1.0, clean=1.0, corrupted=1.0)


def test_bad_shapes_raise() -> None:
    with pytest.raises(MetricError, match="at_positions"):
        metrics.logit_diff(torch.zeros(2, 3, 4), TARGETS)
    with pytest.raises(MetricError, match="loss positions"):
        metrics.loss(torch.zeros(2, 3, 4), TARGETS)
    with pytest.raises(MetricError, match="clean run"):
        metrics.compute(MetricKind.KL_TO_CLEAN, LOGITS, TARGETS)


@pytest.mark.parametrize("kind", list(MetricKind))
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_logits_are_an_error_for_every_metric(kind: MetricKind, bad: float) -> None:
    targets = metrics.make_targets([[1], [2]], [[3], [0]])
    logits = torch.randn(2, 5, 6) if kind is MetricKind.LOSS else torch.randn(2, 6)
    logits[1, 0] = bad
    clean = torch.randn(2, 6)
    if kind is MetricKind.LOSS:
        targets = metrics.make_targets([[1], [2]], [[3], [0]], [[1, 2], [3, 4]], [[2, 3], [4, 5]])
    with pytest.raises(MetricError, match="non-finite logits"):
        metrics.compute(kind, logits, targets, clean_logits=clean)


def test_a_model_gone_non_finite_after_loading_fails_every_measurement() -> None:
    """Weights that turn NaN after `load_model`'s check (a bad intervention, an overflow) make
    activation patching and circuit evaluation raise, instead of reporting `nan`."""
    from tests.discovery_fixtures import tiny_problem
    from tests.tiny_models import tiny_model
    from wildcircuits.evaluation.faithfulness import evaluate_circuits
    from wildcircuits.graph.circuit import Circuit
    from wildcircuits.patching.activation import activation_patching

    model = tiny_model("llama")  # shared by other tests: the weight is put back below
    problem = tiny_problem(model)
    weight = model.hf_model.lm_head.weight
    kept = float(weight[3, 0])
    try:
        with torch.no_grad():
            weight[3, 0] = float("nan")
        with pytest.raises(MetricError, match="non-finite logits"):
            activation_patching(model, problem, "heads", progress=False)
        with pytest.raises(MetricError, match="non-finite logits"):
            evaluate_circuits(model, problem, [Circuit.empty(model_graph(model))])
    finally:
        with torch.no_grad():
            weight[3, 0] = kept


def model_graph(model):
    from wildcircuits.graph.graph import Graph

    return Graph.for_model(model)
