"""Ablations: zero / mean / resample values and the ablated metric, against plain loops."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_models import tiny_model, tiny_tokens
from wildcircuits.errors import InterventionError, SiteError, WildcircuitsError
from wildcircuits.models.tokens import tokens_from_ids
from wildcircuits.patching.ablation import (
    ablate,
    ablation_values,
    head_sites,
    mlp_sites,
    resample_rows,
)
from wildcircuits.patching.ablation_spec import AblationKind, AblationSpec
from wildcircuits.patching.hooks import Intervention, Mode
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Component, Site
from wildcircuits.tasks.metrics import make_targets

PROVENANCE = {"model": "tiny", "quantization": "none", "metric": "logit_diff", "task": "random"}


def tiny_problem(batch: int = 4, clean=None, corrupted=None) -> PatchingProblem:
    clean = clean if clean is not None else tiny_tokens(batch, 8, seed=1, padded=False)
    corrupted = corrupted if corrupted is not None else tiny_tokens(batch, 8, seed=2, padded=False)
    targets = make_targets([[5 + i] for i in range(batch)], [[40 + i] for i in range(batch)])
    return PatchingProblem(clean, corrupted, clean.last_index, targets, provenance=PROVENANCE)


def plain_metric(model, problem, interventions=()) -> float:
    logits = model.run(problem.clean, interventions=interventions, positions=problem.positions)
    return float(problem.score(logits.logits).mean())


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
def test_zero_ablation_equals_zero_interventions(family):
    model, problem = tiny_model(family), tiny_problem()
    sites = [
        *head_sites([(0, 1), (2, 3)]),
        *mlp_sites([1]),
        Site(Component.ATTN_OUT, 2, position=3),
    ]
    result = ablate(model, problem, sites, AblationSpec(AblationKind.ZERO))
    expected = plain_metric(model, problem, [Intervention(s, Mode.ZERO) for s in sites])
    assert result.ablated == pytest.approx(expected, abs=1e-6)
    assert result.clean == pytest.approx(plain_metric(model, problem), abs=1e-6)
    assert result.effect == pytest.approx(result.ablated - result.clean)
    assert result.provenance["ablation"] == "zero"
    assert result.sites == ("z.L0.H1", "z.L2.H3", "mlp_out.L1", "attn_out.L2@3")


def test_zero_z_equals_zero_result():
    """A head's result is its z times its W_O slice: zeroing either gives the same run."""
    model, problem = tiny_model("llama"), tiny_problem()
    by_z = ablate(model, problem, head_sites([(1, 2)]), "zero")
    by_result = ablate(model, problem, head_sites([(1, 2)], Component.RESULT), "zero")
    assert by_z.ablated == pytest.approx(by_result.ablated, abs=1e-5)


def test_mean_values_per_position_and_per_group_against_loops():
    model = tiny_model("qwen2")
    reference = tiny_tokens(6, 8, seed=3, padded=False)
    site = Site(Component.Z, 1, head=2)
    z = model.run(reference, capture=[Site(Component.Z, 1)])[Site(Component.Z, 1)][:, :, 2]
    overall = ablation_values(model, reference, [site], "mean")[site]
    torch.testing.assert_close(overall, z.mean(0, keepdim=True))
    flat = ablation_values(model, reference, [site], "mean:pooled")[site]
    torch.testing.assert_close(flat, z.mean(dim=(0, 1), keepdim=True))
    groups = ["a", "b", "a", "b", "b", "c"]
    grouped = ablation_values(model, reference, [site], "mean", groups=groups)[site]
    for row, label in enumerate(groups):
        members = [i for i, g in enumerate(groups) if g == label]
        torch.testing.assert_close(grouped[row], z[members].mean(0))


def test_mean_skips_padding_positions():
    model = tiny_model("llama")
    ids = torch.randint(3, 90, (3, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    mask[0, 4:] = 0  # row 0 is right-padded: its last two positions are not tokens
    reference = tokens_from_ids(ids, mask)
    site = Site(Component.MLP_OUT, 0)
    out = model.run(reference, capture=[site])[site]
    mean = ablation_values(model, reference, [site], "mean")[site]
    torch.testing.assert_close(mean[0, :4], out[:, :4].mean(0))
    torch.testing.assert_close(mean[0, 4:], out[1:, 4:].mean(0))


def test_mean_of_identical_rows_changes_nothing():
    """Means over copies of the clean prompt equal the clean activation: zero effect."""
    model = tiny_model("gemma3_text")
    clean = tiny_tokens(1, 8, seed=1, padded=False).select([0, 0, 0])
    problem = tiny_problem(3, clean=clean, corrupted=tiny_tokens(3, 8, seed=2, padded=False))
    result = ablate(model, problem, head_sites([(0, 0), (1, 3)]), "mean", reference=clean)
    assert result.effect == pytest.approx(0.0, abs=1e-5)
    assert result.provenance["reference"] == "custom"


def test_resample_rows_is_a_seeded_derangement_within_groups():
    ids = torch.tensor([0, 0, 1, 1, 1, 0, 2])
    source = resample_rows(ids, seed=3)
    assert torch.equal(source, resample_rows(ids, seed=3))
    for row, src in enumerate(source.tolist()):
        assert ids[src] == ids[row]
        assert src != row or int((ids == ids[row]).sum()) == 1
    assert sorted(source.tolist()) == list(range(len(ids)))  # a permutation


def test_resample_values_come_from_other_reference_rows():
    model = tiny_model("llama")
    reference = tiny_tokens(4, 8, seed=5, padded=False)
    site = Site(Component.MLP_OUT, 2)
    out = model.run(reference, capture=[site])[site]
    values = ablation_values(model, reference, [site], "resample:seed=7")[site]
    source = resample_rows(torch.zeros(4, dtype=torch.long), seed=7)
    torch.testing.assert_close(values, out[source])
    problem = tiny_problem()
    result = ablate(model, problem, [site], AblationSpec(AblationKind.RESAMPLE, seed=7))
    assert result.provenance["resample_seed"] == 7


def test_mean_ablation_with_groups_equals_plain_run():
    model, problem = tiny_model("gpt_neox"), tiny_problem()
    sites = [*head_sites([(1, 0)]), *mlp_sites([0])]
    groups = [0, 1, 0, 1]
    result = ablate(model, problem, sites, "mean", groups=groups)
    values = ablation_values(model, problem.corrupted, sites, "mean", groups=groups)
    expected = plain_metric(
        model, problem, [Intervention(s, Mode.REPLACE, values[s]) for s in sites]
    )
    assert result.ablated == pytest.approx(expected, abs=1e-6)
    assert result.provenance["grouped_means"] is True
    assert result.normalized == pytest.approx(
        (result.ablated - result.corrupted) / (result.clean - result.corrupted)
    )


def test_bad_input_raises():
    model, problem = tiny_model("llama"), tiny_problem()
    with pytest.raises(SiteError, match="no sites"):
        ablate(model, problem, [], "zero")
    with pytest.raises(SiteError, match="pattern"):
        ablate(model, problem, ["pattern.L1.H0"], "mean")
    with pytest.raises(WildcircuitsError, match="median.*counterfactual, resample, mean, zero"):
        ablate(model, problem, ["z.L1.H0"], "median")
    short = tiny_tokens(4, 5, seed=3, padded=False)
    with pytest.raises(InterventionError, match="length"):
        ablate(model, problem, ["z.L1.H0"], "mean", reference=short)
    with pytest.raises(InterventionError, match="group labels"):
        ablate(model, problem, ["z.L1.H0"], "mean", groups=[0, 1])
    with pytest.raises(SiteError, match="out of range"):
        ablate(model, problem, ["z.L9.H0"], "zero")


def test_cli_head_and_layer_parsing():
    from wildcircuits.cli.ablate import parse_heads, parse_layers
    from wildcircuits.cli.main import build_parser

    assert parse_heads("L12.H3, L14.H0") == [(12, 3), (14, 0)]
    assert parse_layers("5,6") == [5, 6] and parse_heads("") == []
    with pytest.raises(SiteError, match="L<layer>.H<head>"):
        parse_heads("12.3")
    with pytest.raises(SiteError, match="MLP layers"):
        parse_layers("L5")
    args = build_parser().parse_args(
        ["ablate", "ioi", "--heads", "L1.H2", "--ablation", "resample", "--out", "x"]
    )
    assert args.ablation == "resample" and args.heads == "L1.H2"
    args = build_parser().parse_args(["path-patch", "ioi", "--receivers", "L3.H1:q", "--out", "x"])
    assert args.receivers == "L3.H1:q"


def test_counterfactual_site_ablation_is_noising_activation_patching():
    """Counterfactual values are the reference rows themselves: the corrupted activations."""
    model, problem = tiny_model("llama"), tiny_problem()
    site = Site(Component.MLP_OUT, 1)
    corrupted = model.run(problem.corrupted, capture=[site])[site]
    values = ablation_values(model, problem.corrupted, [site], "counterfactual")[site]
    torch.testing.assert_close(values, corrupted)
    result = ablate(model, problem, [site], "counterfactual")
    expected = plain_metric(model, problem, [Intervention(site, Mode.REPLACE, corrupted)])
    assert result.ablated == pytest.approx(expected, abs=1e-6)
    assert result.provenance["ablation"] == "counterfactual"


def test_mean_over_the_clean_prompts_is_named_in_the_provenance():
    model, problem = tiny_model("llama"), tiny_problem()
    site = Site(Component.MLP_OUT, 0)
    result = ablate(model, problem, [site], "mean:clean:pooled")
    by_reference = ablate(model, problem, [site], "mean:pooled", reference=problem.clean)
    assert result.ablated == pytest.approx(by_reference.ablated, abs=1e-6)
    assert result.provenance["ablation"] == "mean:clean:pooled"
    assert result.provenance["reference"] == "clean"
    assert result.provenance["mean_per_position"] is False
