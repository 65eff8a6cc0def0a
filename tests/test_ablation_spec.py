"""The one ablation spec: parse / format round trips, provenance, and errors that name choices."""

from __future__ import annotations

import pytest
import torch

from wildcircuits.errors import WildcircuitsError
from wildcircuits.patching.ablation_spec import (
    EDGE_ABLATIONS,
    AblationKind,
    AblationSpec,
    Distribution,
    masked_mean,
    masked_totals,
    mean_over_tokens,
)
from wildcircuits.patching.edge_ablation import edge_alternatives

CANONICAL = [
    ("counterfactual", AblationSpec()),
    ("zero", AblationSpec(AblationKind.ZERO)),
    ("mean", AblationSpec(AblationKind.MEAN)),
    ("mean:clean", AblationSpec(AblationKind.MEAN, Distribution.CLEAN)),
    ("mean:pooled", AblationSpec(AblationKind.MEAN, per_position=False)),
    ("mean:clean:pooled", AblationSpec(AblationKind.MEAN, Distribution.CLEAN, False)),
    ("resample", AblationSpec(AblationKind.RESAMPLE)),
    ("resample:clean:seed=3", AblationSpec(AblationKind.RESAMPLE, Distribution.CLEAN, seed=3)),
]


@pytest.mark.parametrize(("text", "spec"), CANONICAL)
def test_parse_and_format_round_trip(text, spec):
    assert AblationSpec.parse(text) == spec
    assert spec.format() == text == str(spec)
    assert AblationSpec.parse(spec.format()) == spec
    assert AblationSpec.coerce(text) == spec and AblationSpec.coerce(spec) is spec


def test_defaults_may_be_spelled_out_and_are_left_out_when_formatted():
    assert AblationSpec.parse(" mean : corrupted : per-position ").format() == "mean"
    assert AblationSpec.parse("resample:seed=0").format() == "resample"
    assert AblationSpec.coerce(None) == AblationSpec.parse("counterfactual")
    assert AblationSpec("mean") == AblationSpec(AblationKind.MEAN)  # a bare kind string


def test_parse_takes_a_default_resample_seed_that_the_text_overrides():
    assert AblationSpec.parse("resample", seed=5).seed == 5
    assert AblationSpec.parse("resample:seed=2", seed=5).seed == 2
    assert AblationSpec.parse("mean", seed=5).seed == 0  # only a resample has a seed


def test_describe_says_what_runs():
    assert AblationSpec().describe() == {"ablation": "counterfactual"}
    assert AblationSpec.parse("mean:clean").describe() == {
        "ablation": "mean:clean",
        "mean_reference": "clean",
        "mean_per_position": True,
    }
    assert AblationSpec.parse("resample:seed=4").describe() == {
        "ablation": "resample:seed=4",
        "resample_reference": "corrupted",
        "resample_seed": 4,
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("median", "unknown ablation 'median'; choose one of counterfactual, resample, mean, zero"),
        ("mean:train", "unknown option 'train'; options are corrupted, clean"),
        ("zero:pooled", "zero ablation takes no pooled"),
        ("counterfactual:clean", "takes no distribution 'clean'"),
        ("mean:seed=2", "mean ablation takes no seed 2"),
        ("resample:seed=x", "unknown option 'seed=x'"),
    ],
)
def test_bad_specs_raise_naming_the_choices(text, message):
    with pytest.raises(WildcircuitsError, match=message):
        AblationSpec.parse(text)


def test_require_names_the_user_and_its_choices():
    spec = AblationSpec.parse("resample")
    assert AblationSpec.parse("mean").require(EDGE_ABLATIONS, "x").kind is AblationKind.MEAN
    with pytest.raises(WildcircuitsError, match="'acdc' does not support 'resample'.*"
                       "counterfactual, mean, zero"):  # fmt: skip
        spec.require(EDGE_ABLATIONS, "'acdc'")


def test_edge_alternatives_are_the_other_edge_kinds():
    got = [s.format() for s in edge_alternatives(AblationSpec.parse("mean:clean"))]
    assert got == ["counterfactual", "zero"]


def test_masked_means_count_real_tokens_only_and_add_over_chunks():
    value = torch.arange(24.0).reshape(3, 4, 2)  # (rows, pos, d)
    mask = torch.tensor([[1, 1, 1, 1], [0, 1, 1, 1], [0, 0, 1, 1]])
    per_position = mean_over_tokens(value, mask)  # (1, pos, d)
    torch.testing.assert_close(per_position[0, 0], value[0, 0])
    torch.testing.assert_close(per_position[0, 1], value[:2, 1].mean(0))
    pooled = mean_over_tokens(value, mask, per_position=False)  # (1, 1, d)
    torch.testing.assert_close(pooled[0, 0], value[mask.bool()].mean(0))
    first, second = masked_totals(value[:2], mask[:2]), masked_totals(value[2:], mask[2:])
    chunked = masked_mean(first[0] + second[0], first[1] + second[1])
    torch.testing.assert_close(chunked, per_position)
