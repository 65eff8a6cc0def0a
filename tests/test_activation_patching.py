"""Activation patching: the fast engine equals the one-forward-per-patch reference, and invariants.

Fast vs reference: every kind, both directions, tiny random models of five families (padded
batches: one row right-padded, one left-padded), and SmolLM2 on two IOI prompts. Tolerance:
atol 1e-5 on the raw metric and on the normalised effect (fp32; the fast path runs bigger batches,
so matmuls may round differently).
"""

from __future__ import annotations

import dataclasses
import functools

import pytest
import torch

from tests.tiny_models import FAMILIES, VOCAB, tiny_model, tiny_tokens
from wildcircuits.errors import WildcircuitsError
from wildcircuits.models import InstrumentedModel, tokens_from_ids
from wildcircuits.patching.activation import (
    Direction,
    PatchKind,
    PositionMode,
    activation_patching,
    columns_for,
)
from wildcircuits.patching.activation_plan import COMPONENT, plan
from wildcircuits.patching.activation_reference import (
    activation_patching_reference,
    reference_intervention,
)
from wildcircuits.patching.problem import PatchingProblem, problem_from_prompts
from wildcircuits.patching.sites import Component, Site
from wildcircuits.tasks.metrics import make_targets

TOL = dict(atol=1e-5, rtol=0)


def tiny_problem(corrupt_seed: int = 7, identical: bool = False) -> PatchingProblem:
    """3 rows (row 1 right-padded, row 2 left-padded); corrupted differs from position 3 on."""
    clean = tiny_tokens()
    ids = clean.input_ids.clone()
    if not identical:
        generator = torch.Generator().manual_seed(corrupt_seed)
        ids[:, 3:] = torch.randint(3, VOCAB, ids[:, 3:].shape, generator=generator)
    corrupted = tokens_from_ids(ids, clean.attention_mask)
    start = clean.attention_mask.argmax(-1)  # first real token of each row
    return PatchingProblem(
        clean=clean,
        corrupted=corrupted,
        positions=clean.last_index,
        targets=make_targets([[5], [6], [7]], [[8], [9], [10]]),
        named_positions={"A": start + 1, "B": start + 4, "END": clean.last_index},
        provenance={"task": "tiny", "seed": corrupt_seed},
    )


def assert_same(fast, reference) -> None:
    torch.testing.assert_close(fast.metric.values, reference.metric.values, **TOL)
    torch.testing.assert_close(fast.effect.values, reference.effect.values, **TOL)
    assert fast.metric.row_labels == reference.metric.row_labels
    assert fast.metric.col_labels == reference.metric.col_labels
    assert not torch.isnan(fast.metric.values).any()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", list(PatchKind))
def test_fast_equals_reference_tiny(family: str, kind: PatchKind) -> None:
    model, problem = tiny_model(family), tiny_problem()
    both = family in ("llama", "gemma3_text")  # noising everywhere would double the test time
    for direction in list(Direction) if both else [Direction.DENOISE]:
        args = dict(kind=kind, direction=direction, positions=PositionMode.NAMED, progress=False)
        fast = activation_patching(model, problem, max_rows=7, **args)  # 2 patches per forward
        reference = activation_patching_reference(model, problem, **args)
        assert_same(fast, reference)


@pytest.mark.parametrize("mode", [PositionMode.ABSOLUTE, PositionMode.ALL])
def test_fast_equals_reference_position_modes(mode: PositionMode) -> None:
    model, problem = tiny_model("llama"), tiny_problem()
    args = dict(kind=PatchKind.RESID, positions=mode, progress=False)
    assert_same(
        activation_patching(model, problem, **args),
        activation_patching_reference(model, problem, **args),
    )


def test_reference_full_logits_same_numbers() -> None:
    model, problem = tiny_model("gpt2"), tiny_problem()
    args = dict(kind=PatchKind.HEADS, progress=False)
    assert_same(
        activation_patching_reference(model, problem, full_logits=True, **args),
        activation_patching_reference(model, problem, **args),
    )


@pytest.mark.parametrize("family", ["gpt2", "gemma3_text"])
@pytest.mark.parametrize("kind", list(PatchKind))
def test_identical_runs_give_zero_change(family: str, kind: PatchKind) -> None:
    """Clean == corrupted: every patched metric equals the unpatched one; the effect is NaN."""
    model, problem = tiny_model(family), tiny_problem(identical=True)
    with pytest.warns(UserWarning, match="undefined"):
        result = activation_patching(model, problem, kind=kind, progress=False)
    expected = torch.full_like(result.metric.values, result.clean_metric)
    torch.testing.assert_close(result.metric.values, expected, atol=0, rtol=0)
    assert torch.isnan(result.effect.values).all()


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("direction", list(Direction))
def test_patching_the_whole_residual_gives_one(family: str, direction: Direction) -> None:
    """resid_pre at every position: the patched run is the source run, so the effect is 1
    (exactly at layer 0 when every column runs; to float rounding with the shared prefix, whose
    forwards have other shapes)."""
    model, problem = tiny_model(family), tiny_problem()
    every_column = functools.partial(activation_patching, share_prefix=False)
    for engine in (every_column, activation_patching, activation_patching_reference):
        result = engine(model, problem, "resid", direction, PositionMode.ALL, progress=False)
        assert result.effect.values.shape == (model.n_layers, 1)
        if engine is not activation_patching:
            assert float(result.effect.values[0, 0]) == 1.0  # layer 0: exactly the source run
        torch.testing.assert_close(
            result.effect.values, torch.ones_like(result.effect.values), **TOL
        )


@pytest.mark.parametrize("kind", list(PatchKind))
def test_patch_at_layer_never_changes_earlier_layers(kind: PatchKind) -> None:
    """A patch at layer l leaves every value of layers < l (and l's input) bit-identical."""
    model, problem = tiny_model("qwen2"), tiny_problem()
    columns = columns_for(model, problem, kind, PositionMode.NAMED)
    sites = [Site(COMPONENT[kind], layer) for layer in range(model.n_layers)]
    source = model.run(problem.clean, capture=sites)
    watched = [
        Site(component, layer)
        for layer in range(model.n_layers)
        for component in (Component.RESID_PRE, Component.ATTN_OUT, Component.RESID_POST)
    ]
    unpatched = model.run(problem.corrupted, capture=watched)
    for items in plan(model, kind, columns):
        item = items[-1]
        intervention = reference_intervention(item, sites[item.layer], source, columns)
        patched = model.run(problem.corrupted, capture=watched, interventions=[intervention])
        for site in watched:
            is_input = site.layer == item.layer and site.component is Component.RESID_PRE
            if site.layer < item.layer or (is_input and kind is not PatchKind.RESID):
                assert torch.equal(patched[site], unpatched[site]), (item, site)
        last = Site(Component.RESID_POST, model.n_layers - 1)
        assert not torch.equal(patched[last], unpatched[last]), f"{item} changed nothing"


def test_layer_subset_fills_only_those_rows() -> None:
    model, problem = tiny_model("llama"), tiny_problem()
    full = activation_patching(model, problem, kind="heads", progress=False)
    part = activation_patching(model, problem, kind="heads", layers=[2], progress=False)
    assert torch.isnan(part.metric.values[:2]).all()
    torch.testing.assert_close(part.metric.values[2], full.metric.values[2], **TOL)
    with pytest.raises(WildcircuitsError, match="out of range"):
        activation_patching(model, problem, kind="heads", layers=[3], progress=False)


def test_kv_kinds_patch_kv_heads() -> None:
    model, problem = tiny_model("llama"), tiny_problem()
    result = activation_patching(model, problem, kind="v", progress=False)
    assert result.effect.col_labels == ["KV0", "KV1"]
    assert "shared" in result.effect.provenance["gqa"]


def test_provenance_and_normalisation_recorded() -> None:
    model, problem = tiny_model("gpt2"), tiny_problem()
    result = activation_patching(model, problem, kind="mlp_out", direction="noise", progress=False)
    provenance = result.effect.provenance
    assert provenance["direction"] == "noise"
    assert provenance["normalisation"].startswith("(m_clean - m_patched)")
    assert provenance["task"] == "tiny" and provenance["site"] == "mlp_out"
    gap = result.clean_metric - result.corrupted_metric
    expected = (result.clean_metric - result.metric.values.double()) / gap
    torch.testing.assert_close(result.effect.values.double(), expected, atol=1e-6, rtol=0)


def test_named_columns_follow_each_row() -> None:
    model, problem = tiny_model("llama"), tiny_problem()
    columns = columns_for(model, problem, PatchKind.RESID, PositionMode.NAMED)
    assert [label.split(":")[0] for label in columns.labels] == ["A", "B", "END"]
    assert columns.index[0].tolist() == (problem.named_positions["A"]).tolist()
    auto = columns_for(model, problem, PatchKind.RESID, PositionMode.AUTO)
    assert auto.mode is PositionMode.NAMED  # rows differ in length
    absolute = columns_for(model, problem, PatchKind.RESID, PositionMode.ABSOLUTE)
    assert len(absolute.labels) == 6  # shortest row: 9 - 3 real tokens
    assert absolute.index[0].tolist() == [0, 0, 2]  # row 2 is left-padded by 2


def test_named_mode_without_names_raises() -> None:
    model = tiny_model("gpt2")
    problem = dataclasses.replace(tiny_problem(), named_positions={})
    with pytest.raises(WildcircuitsError, match="named positions"):
        activation_patching(model, problem, kind="resid", positions="named", progress=False)


def test_unknown_kind_raises() -> None:
    with pytest.raises(ValueError):
        activation_patching(tiny_model("gpt2"), tiny_problem(), kind="neurons")


IOI_CLEAN = [
    "When John and Mary went to the store, John gave a drink to",
    "When Tom and Anna went to the park, Tom gave a ball to",
]
IOI_CORRUPT = [
    "When Paul and Lisa went to the store, Mark gave a drink to",
    "When Mark and Kate went to the park, Paul gave a ball to",
]


@pytest.mark.parametrize("kind", [PatchKind.HEADS, PatchKind.K])
def test_fast_equals_reference_smollm2(smollm2, kind: PatchKind) -> None:
    model = InstrumentedModel(*smollm2)
    problem = problem_from_prompts(
        model, IOI_CLEAN, IOI_CORRUPT, [" Mary", " Anna"], [" John", " Tom"]
    )
    # Three layers (first, middle, last) keep this under a minute; the tiny-model tests above
    # cover every layer of every family.
    layers = [0, 15, 29]
    fast = activation_patching(model, problem, kind=kind, layers=layers, progress=False)
    reference = activation_patching_reference(model, problem, kind=kind, layers=layers,
                                              progress=False)  # fmt: skip
    rows = layers if kind is not PatchKind.HEADS_BY_POS else None
    for grid in ("metric", "effect"):
        got, want = getattr(fast, grid).values[rows], getattr(reference, grid).values[rows]
        torch.testing.assert_close(got, want, **TOL)
        assert not torch.isnan(got).any()
    assert fast.clean_metric - fast.corrupted_metric > 1.0  # a real IOI effect
