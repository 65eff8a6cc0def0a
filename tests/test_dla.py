"""Direct logit attribution: the parts sum to the logit difference, on every family."""

from __future__ import annotations

import math

import pytest
import torch

from tests.tiny_models import FAMILIES, VOCAB, tiny_model, tiny_tokens
from wildcircuits.localise.dla import direct_logit_attribution, head_parts
from wildcircuits.localise.norms import freeze_norm
from wildcircuits.models import wrap_hf_model
from wildcircuits.models.adapters import get_module
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Component, Site
from wildcircuits.tasks.metrics import logit_diff, make_targets

TOL = dict(atol=2e-4, rtol=1e-4)


def tiny_problem(model, sets: bool = False) -> PatchingProblem:
    tokens = tiny_tokens()
    positions = tokens.last_index
    if sets:  # answer / distractor sets of different sizes
        answers, distractors = [[5, 6], [7], [8, 9, 10]], [[11], [12, 13], [14]]
    else:
        answers, distractors = [[5], [7], [9]], [[11], [12], [14]]
    return PatchingProblem(
        clean=tokens,
        corrupted=tokens,
        positions=positions,
        targets=make_targets(answers, distractors),
        named_positions={"END": positions},
        provenance={"model": model.info.model_id, "task": "tiny"},
    )


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("sets", [False, True])
def test_parts_sum_to_model_logit_diff(family: str, sets: bool) -> None:
    model = tiny_model(family)
    problem = tiny_problem(model, sets)
    result = direct_logit_attribution(model, problem, batch_size=2, progress=False)
    expected = problem.score(model.logits(problem.clean, positions=problem.positions))
    torch.testing.assert_close(result.total, expected, **TOL)
    torch.testing.assert_close(result.parts_sum(), expected, **TOL)
    torch.testing.assert_close(result.heads.sum(-1) + result.attn_bias, result.attn, **TOL)


@pytest.mark.parametrize("family", FAMILIES)
def test_single_component_matches_slow_reference(family: str) -> None:
    """Layer 1 MLP part by hand: its output through the frozen final norm, dot W_U[a] - W_U[d]."""
    model = tiny_model(family)
    problem = tiny_problem(model)
    result = direct_logit_attribution(model, problem, progress=False)
    run = model.run(
        problem.clean, capture=[Site(Component.MLP_OUT, 1), Site(Component.FINAL_RESID)]
    )
    final_norm = get_module(model.hf_model, model.adapter.final_norm)
    w_u = get_module(model.hf_model, model.adapter.unembed).weight
    for row in range(problem.batch):
        pos = int(problem.positions[row])
        resid = run[Site(Component.FINAL_RESID)][row, pos]
        part = run[Site(Component.MLP_OUT, 1)][row, pos]
        if isinstance(final_norm, torch.nn.LayerNorm):
            part = part - part.mean()
            scale = 1 / math.sqrt(resid.var(unbiased=False) + final_norm.eps)
        else:
            eps = getattr(final_norm, "variance_epsilon", getattr(final_norm, "eps", None))
            scale = 1 / math.sqrt(resid.pow(2).mean() + eps)
        weight = final_norm.weight + (1.0 if family == "gemma3_text" else 0.0)
        a, d = int(problem.targets.answers[row, 0]), int(problem.targets.distractors[row, 0])
        expected = (part * scale * weight) @ (w_u[a] - w_u[d])
        torch.testing.assert_close(result.mlp[row, 1], expected, **TOL)


def test_gemma3_post_norm_linearisation_matches_module() -> None:
    """Frozen post-attention norm: sum over heads of the normed parts = the module's output."""
    model = tiny_model("gemma3_text")
    tokens = tiny_tokens(padded=False)
    layer = 2
    run = model.run(tokens, capture=[Site(Component.Z, layer), Site(Component.ATTN_OUT, layer)])
    z = run[Site(Component.Z, layer)][:, -1]  # (batch, head, d_head)
    results, bias = head_parts(model, layer, z)
    torch.testing.assert_close(
        results.sum(1) + bias, run[Site(Component.ATTN_OUT, layer)][:, -1], **TOL
    )
    post_norm = get_module(model.layer_module(layer), model.adapter.post_attn_norm)
    raw = torch.einsum("bhd,hdm->bhm", z, model.out_weight(layer))
    # Not linear without freezing: normalising each head alone does not sum to the output.
    assert not torch.allclose(post_norm(raw).sum(1), results.sum(1), atol=1e-3)


def test_gemma3_softcap_attributes_pre_softcap_logits() -> None:
    base = tiny_model("gemma3_text")
    config = type(base.config).from_dict(base.config.to_dict())
    config.final_logit_softcapping = 3.0
    hf_model = type(base.hf_model)(config).eval()
    hf_model.load_state_dict(base.hf_model.state_dict())
    model = wrap_hf_model(hf_model, model_id="tiny-gemma3-softcap")
    assert model.final_logit_softcap == 3.0
    problem = tiny_problem(model)
    result = direct_logit_attribution(model, problem, progress=False)
    capped = model.logits(problem.clean, positions=problem.positions)
    uncapped = torch.atanh(capped / 3.0) * 3.0
    torch.testing.assert_close(result.total, logit_diff(uncapped, problem.targets), **TOL)
    torch.testing.assert_close(result.parts_sum(), result.total, **TOL)
    assert result.provenance["logits"] == "pre-softcap"


def test_freeze_norm_rejects_unknown_norm() -> None:
    from wildcircuits.errors import UnsupportedArchitectureError

    class OddNorm(torch.nn.Module):
        eps = 1e-6
        weight = torch.nn.Parameter(torch.ones(4))

        def forward(self, x):
            return x.tanh()

    with pytest.raises(UnsupportedArchitectureError, match="OddNorm"):
        freeze_norm(OddNorm(), torch.randn(2, 4))


def test_grids_and_save(tmp_path) -> None:
    model = tiny_model("llama")
    result = direct_logit_attribution(model, tiny_problem(model), progress=False)
    layers, heads = result.layer_grid(), result.head_grid()
    assert layers.values.shape == (3, 2) and heads.values.shape == (3, 4)
    assert heads.provenance["metric"] == "logit_diff" and heads.provenance["task"] == "tiny"
    torch.testing.assert_close(heads.values[1, 2], result.heads[:, 1, 2].mean())
    top = result.top_components(3)
    assert len(top) == 3 and all(".H" in name for name, _ in top)
    assert abs(top[0][1]) >= abs(top[1][1]) >= abs(top[2][1])
    result.save(tmp_path)
    for name in ("dla_layers.json", "dla_heads.png", "dla_summary.json", "dla_top.png"):
        assert (tmp_path / name).exists(), name
    assert VOCAB > 14  # the targets above are valid token ids
