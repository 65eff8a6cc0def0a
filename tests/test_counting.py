"""`models.counting`: forward passes counted from the model's own MLP modules, exactly, and no
hook left behind."""

from __future__ import annotations

import pytest
import torch

from tests.planted_models import planted_induction_model
from wildcircuits.models.counting import count_forwards


def _hooks(model) -> int:
    return sum(len(m._forward_hooks) for m in model.hf_model.modules())


def test_one_forward_counts_its_prompts_and_tokens():
    model = planted_induction_model()
    ids = torch.zeros(3, 5, dtype=torch.long)
    with count_forwards(model) as count:
        model.hf_model(input_ids=ids)
    assert count.prompt_forwards == 3 and count.token_forwards == 15
    with count_forwards(model) as again:
        model.hf_model(input_ids=ids[:, :2])
        model.hf_model(input_ids=ids[:1])
    assert again.prompt_forwards == 4 and again.token_forwards == 3 * 2 + 5
    assert count.token_forwards == 15  # a finished count no longer changes


def test_the_hooks_are_gone_after_an_exception():
    model = planted_induction_model()
    before = _hooks(model)
    with pytest.raises(RuntimeError, match="boom"), count_forwards(model) as count:
        assert _hooks(model) == before + model.n_layers
        raise RuntimeError("boom")
    assert _hooks(model) == before
    model.hf_model(input_ids=torch.zeros(1, 4, dtype=torch.long))
    assert count.rows == 0


def test_the_edge_engine_counts_like_a_plain_forward():
    """The patching engines run the model's own MLP modules: one edge-engine run of a batch is
    that batch's prompt-forwards, every layer and position included."""
    from tests.planted_models import induction_problem
    from wildcircuits.patching.edges import EdgeForward

    model, problem = planted_induction_model(), induction_problem(n=4, length=10)
    engine = EdgeForward(model)
    with count_forwards(model) as count:
        engine.run(problem.clean, problem.positions)
    n_tokens = problem.clean.input_ids.numel()
    assert count.prompt_forwards == problem.batch and count.token_forwards == n_tokens
