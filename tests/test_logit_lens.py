"""Logit lens: the last stage is the model's output; the first is the unembedded embeddings."""

from __future__ import annotations

import pytest
import torch

from tests.test_dla import tiny_problem
from tests.tiny_models import FAMILIES, tiny_model
from wildcircuits.localise.logit_lens import answer_rank, lens_logits, logit_lens
from wildcircuits.tasks.metrics import make_targets


@pytest.mark.parametrize("family", FAMILIES)
def test_last_stage_is_the_model_output(family: str) -> None:
    model = tiny_model(family)
    problem = tiny_problem(model, sets=True)
    logits = lens_logits(model, problem.clean, problem.positions)
    assert logits.shape == (problem.batch, model.n_layers + 1, model.info.d_vocab)
    expected = model.logits(problem.clean, positions=problem.positions)
    torch.testing.assert_close(logits[:, -1], expected, atol=1e-6, rtol=0)
    lens = logit_lens(model, problem, batch_size=2, progress=False)
    torch.testing.assert_close(lens.metric[:, -1], problem.score(expected), atol=1e-5, rtol=0)


def test_first_stage_is_the_embedding() -> None:
    model = tiny_model("llama")
    problem = tiny_problem(model)
    logits = lens_logits(model, problem.clean, problem.positions)
    rows = torch.arange(problem.batch)
    embedded = model.embed(problem.clean)[rows, problem.positions]
    torch.testing.assert_close(logits[:, 0], model.unembed(embedded), atol=1e-6, rtol=0)


def test_answer_rank_best_of_set() -> None:
    logits = torch.tensor([[0.0, 5.0, 3.0, 4.0], [9.0, 1.0, 2.0, 3.0]])
    targets = make_targets([[2, 3], [1]], [[0], [0]])
    torch.testing.assert_close(answer_rank(logits, targets), torch.tensor([1.0, 3.0]))


def test_grid_and_save(tmp_path) -> None:
    model = tiny_model("gpt2")
    problem = tiny_problem(model)
    lens = logit_lens(model, problem, progress=False)
    grid = lens.grid()
    assert grid.row_labels[0] == "resid_pre.L0" and grid.row_labels[-1] == "final_resid"
    assert grid.values.shape == (model.n_layers + 1, 3)
    assert ((grid.values[:, 2] >= 0) & (grid.values[:, 2] <= 1)).all()
    lens.save(tmp_path)
    for name in ("logit_lens.json", "logit_lens_metric.png", "logit_lens_rank.html"):
        assert (tmp_path / name).exists(), name
