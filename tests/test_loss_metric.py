"""A metric read at many positions per row (the loss): problem, model run, score and activation
patching, each against the unrolled one-position-per-row reference (tests/loss_fixtures.py)."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.loss_fixtures import loss_problem, unroll
from tests.planted_models import VOCAB as PLANTED_VOCAB
from tests.planted_models import planted_induction_model
from tests.tiny_models import VOCAB, tiny_model
from wildcircuits.errors import TaskError
from wildcircuits.patching.activation import activation_patching
from wildcircuits.patching.activation_reference import activation_patching_reference
from wildcircuits.patching.problem import loss_position_tensors
from wildcircuits.tasks.metrics import at_positions

TOL = dict(atol=1e-5, rtol=0)


def test_run_reads_k_positions_per_row_and_matches_hf_eager_logits():
    model = tiny_model("llama")
    problem = loss_problem(VOCAB)
    full = model.logits(problem.clean)  # (batch, pos, vocab)
    eager = model.hf_model(
        input_ids=problem.clean.input_ids, attention_mask=problem.clean.attention_mask
    ).logits
    real = problem.clean.attention_mask.bool()  # padding logits are not compared
    torch.testing.assert_close(full[real], eager[real], atol=1e-5, rtol=1e-5)
    at = model.logits(problem.clean, positions=problem.positions)  # (batch, k, vocab)
    assert at.shape == (*problem.positions.shape, full.shape[-1])
    rows = torch.arange(problem.batch)[:, None]
    torch.testing.assert_close(at, full[rows, problem.positions], **TOL)
    torch.testing.assert_close(at_positions(full, problem.positions), at, **TOL)


def test_score_is_the_mean_over_valid_positions_and_equals_the_unrolled_rows():
    model = planted_induction_model()
    problem = loss_problem(PLANTED_VOCAB)
    logits = model.logits(problem.clean, positions=problem.positions)
    scores = problem.score(logits)  # (batch,)
    full = model.logits(problem.clean).float().log_softmax(-1)
    for row in range(problem.batch):  # by hand: -log p(next token) at each kept position
        kept = problem.targets.loss_mask[row]
        at = problem.positions[row][kept]
        nll = -full[row, at, problem.clean.input_ids[row, at + 1]]
        torch.testing.assert_close(scores[row], nll.mean(), **TOL)
    unrolled = unroll(problem)
    flat = unrolled.score(model.logits(unrolled.clean, positions=unrolled.positions))
    torch.testing.assert_close(flat.reshape(problem.batch, -1).mean(1), scores, **TOL)
    assert not problem.higher_is_better
    # the induction model predicts the repeat: clean loss far below the corrupted one
    corrupted = problem.score(model.logits(problem.corrupted, positions=problem.positions))
    assert float(scores.mean()) + 0.5 < float(corrupted.mean())


def test_row_mean_masks_the_padding_entries():
    problem = loss_problem(PLANTED_VOCAB)
    values = torch.arange(problem.positions.numel(), dtype=torch.float).reshape(
        problem.positions.shape
    )
    expected = torch.stack(
        [values[r][problem.targets.loss_mask[r]].mean() for r in range(problem.batch)]
    )
    torch.testing.assert_close(problem.row_mean(values), expected)
    torch.testing.assert_close(problem.row_mean(values.expand(2, -1, -1))[1], expected)


def test_bad_loss_inputs_name_the_problem():
    with pytest.raises(TaskError, match="no loss positions"):
        loss_position_tensors([[3, 4], []], [[1, 2], []], "mytask")
    with pytest.raises(TaskError, match="one loss target per loss position"):
        loss_position_tensors([[3, 4]], [[1]], "mytask")
    problem = loss_problem(PLANTED_VOCAB)
    with pytest.raises(TaskError, match="reads the loss positions"):
        dataclasses.replace(problem, positions=problem.positions[:, 0])
    no_rows = dataclasses.replace(
        problem.targets, loss_mask=torch.zeros_like(problem.targets.loss_mask)
    )
    with pytest.raises(TaskError, match="have no loss positions"):
        dataclasses.replace(problem, targets=no_rows)


@pytest.mark.parametrize("kind", ["resid", "heads", "mlp_out", "heads_by_pos"])
@pytest.mark.parametrize("direction", ["denoise", "noise"])
def test_activation_patching_equals_reference_and_the_unrolled_problem(kind, direction):
    model = planted_induction_model()
    problem = loss_problem(PLANTED_VOCAB)
    args = dict(kind=kind, direction=direction, positions="all", progress=False)
    fast = activation_patching(model, problem, **args)
    reference = activation_patching_reference(model, problem, **args)
    torch.testing.assert_close(fast.metric.values, reference.metric.values, **TOL)
    unrolled = activation_patching(model, unroll(problem), **args)
    torch.testing.assert_close(fast.metric.values, unrolled.metric.values, **TOL)
    torch.testing.assert_close(fast.effect.values, unrolled.effect.values, **TOL)
    assert float(fast.metric.values.abs().max()) > 0.1  # patching moves the loss


def test_the_logit_lens_refuses_a_loss_problem_with_the_fix():
    from wildcircuits.errors import MetricError
    from wildcircuits.localise.logit_lens import logit_lens

    with pytest.raises(MetricError, match="reads many positions"):
        logit_lens(planted_induction_model(), loss_problem(PLANTED_VOCAB), progress=False)
