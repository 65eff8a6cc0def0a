"""Path patching: the fast batched implementation against a slow, obvious three-run loop."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_models import tiny_model, tiny_tokens
from wildcircuits.errors import SiteError
from wildcircuits.names import (
    LOGITS,
    Receiver,
    Slot,
    head_node,
    parse_display_receiver,
    split_names,
)
from wildcircuits.patching.hooks import Intervention, Mode
from wildcircuits.patching.path import path_patch, path_patch_heads, receiver_site
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Component, Site
from wildcircuits.tasks.metrics import make_targets

PROVENANCE = {"model": "tiny", "quantization": "none", "metric": "logit_diff", "task": "random"}


def tiny_problem(batch: int = 3, same: bool = False) -> PatchingProblem:
    clean = tiny_tokens(batch, 8, seed=1, padded=False)
    corrupted = clean if same else tiny_tokens(batch, 8, seed=2, padded=False)
    targets = make_targets([[5 + i] for i in range(batch)], [[40 + i] for i in range(batch)])
    return PatchingProblem(clean, corrupted, clean.last_index, targets, provenance=PROVENANCE)


def metric(model, problem, interventions=()) -> float:
    logits = model.run(problem.clean, interventions=interventions, positions=problem.positions)
    return float(problem.score(logits.logits).mean())


def slow_step2(model, problem, senders) -> list[Intervention]:
    """Steps 1-2 with nothing cached or batched: every head's z set by its own intervention
    (the senders' corrupted, the rest clean), the sender MLPs' outputs corrupted."""
    z_sites = [Site(Component.Z, layer) for layer in range(model.n_layers)]
    mlp_sites = [Site(Component.MLP_OUT, layer) for layer in range(model.n_layers)]
    corrupt = model.run(problem.corrupted, capture=z_sites + mlp_sites)
    clean = model.run(problem.clean, capture=z_sites)
    step2 = []
    for layer in range(model.n_layers):
        for head in range(model.n_heads):
            site = Site(Component.Z, layer, head)
            source = corrupt if site in senders else clean
            step2.append(Intervention(site, Mode.REPLACE, source[z_sites[layer]][:, :, head]))
    for sender in senders:
        if sender.component is Component.MLP_OUT:
            step2.append(Intervention(sender, Mode.REPLACE, corrupt[sender]))
    return step2


def slow_path_patch(model, problem, senders, receivers) -> float:
    """Three full forwards, one intervention per head, nothing cached or batched."""
    step2 = slow_step2(model, problem, senders)
    if receivers[0].node == LOGITS:
        return metric(model, problem, step2)
    sites = [receiver_site(r) for r in receivers]
    run2 = model.run(problem.clean, capture=sites, interventions=step2)
    return metric(model, problem, [Intervention(s, Mode.REPLACE, run2[s]) for s in sites])


def normalized(model, problem, patched: float) -> float:
    m_clean = metric(model, problem)
    m_corr = float(
        problem.score(model.logits(problem.corrupted, positions=problem.positions)).mean()
    )
    return (m_clean - patched) / (m_clean - m_corr)


RECEIVER_SETS = [
    "logits",
    "L2.H1:q",
    "L2.H0:k,L1.H0:v",
    "L1.mlp",
    "L2.H3:q,L1.mlp,L2.H0:v",
]


CASES = [
    *(("llama", r) for r in RECEIVER_SETS),
    *(("gemma3_text", r) for r in RECEIVER_SETS),
    ("gpt_neox", "L1.mlp"),  # parallel blocks: heads of layer 1 do not reach MLP 1
    ("gpt_neox", "L2.H3:q,L1.mlp,L2.H0:v"),
    ("gpt2", "logits"),
]


@pytest.mark.parametrize(("family", "receivers"), CASES)
def test_heads_map_equals_slow_loop(family, receivers):
    model, problem = tiny_model(family), tiny_problem()
    receivers = [parse_display_receiver(name) for name in split_names(receivers)]
    grid = path_patch_heads(model, problem, receivers, max_rows=7, progress=False)
    for layer in range(model.n_layers):
        for head in range(model.n_heads):
            value = float(grid.values[layer, head])
            if torch.isnan(torch.tensor(value)):
                assert all(r.node != LOGITS and r.node.layer <= layer for r in receivers)
                continue
            slow = slow_path_patch(model, problem, [Site(Component.Z, layer, head)], receivers)
            expected = normalized(model, problem, slow)
            assert value == pytest.approx(expected, abs=1e-5), (layer, head)


def test_batching_does_not_change_the_map():
    model, problem = tiny_model("qwen2"), tiny_problem()
    one = path_patch_heads(model, problem, ["L2.H1:q"], max_rows=1, progress=False)
    many = path_patch_heads(model, problem, ["L2.H1:q"], max_rows=1000, progress=False)
    torch.testing.assert_close(one.values, many.values, equal_nan=True, atol=1e-6, rtol=0)


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_sender_sets_with_mlps_equal_slow_loop(family):
    model, problem = tiny_model(family), tiny_problem()
    senders = [Site(Component.Z, 0, 1), Site(Component.MLP_OUT, 0), Site(Component.Z, 1, 3)]
    for receivers in (["logits"], ["L2.H2:q", "L2.mlp"]):
        fast = path_patch(model, problem, senders, receivers)
        slow = slow_path_patch(
            model, problem, senders, [parse_display_receiver(r) for r in receivers]
        )
        assert fast.patched == pytest.approx(slow, abs=1e-5)
        assert fast.score == pytest.approx(normalized(model, problem, slow), abs=1e-5)


@pytest.mark.parametrize("family", ["llama", "gpt2"])
def test_last_layer_head_to_logits_equals_activation_patching(family):
    """Nothing downstream of the last layer is frozen: the definitions coincide."""
    model, problem = tiny_model(family), tiny_problem()
    last = model.n_layers - 1
    corrupt_z = model.run(problem.corrupted, capture=[Site(Component.Z, last)])[
        Site(Component.Z, last)
    ]
    grid = path_patch_heads(model, problem, ["logits"], progress=False)
    for head in range(model.n_heads):
        patch = Intervention(Site(Component.Z, last, head), Mode.REPLACE, corrupt_z[:, :, head])
        expected = normalized(model, problem, metric(model, problem, [patch]))
        assert float(grid.values[last, head]) == pytest.approx(expected, abs=1e-5)


def test_all_heads_as_senders_equal_activation_patching_of_every_head():
    """With every head a sender nothing is frozen: path patching = patching every z."""
    model, problem = tiny_model("gemma3_text"), tiny_problem()
    z_sites = [Site(Component.Z, layer) for layer in range(model.n_layers)]
    corrupt = model.run(problem.corrupted, capture=z_sites)
    patches = [Intervention(s, Mode.REPLACE, corrupt[s]) for s in z_sites]
    heads = [(layer, head) for layer in range(model.n_layers) for head in range(model.n_heads)]
    senders = [Site(Component.Z, layer, head) for layer, head in heads]
    result = path_patch(model, problem, senders, ["logits"])
    assert result.patched == pytest.approx(metric(model, problem, patches), abs=1e-5)


def test_identical_clean_and_corrupted_give_zero():
    model, problem = tiny_model("llama"), tiny_problem(same=True)
    result = path_patch(model, problem, [Site(Component.Z, 0, 2)], ["L2.H1:q"])
    assert result.patched == result.clean
    assert result.score != result.score  # 0 / 0 normalization is NaN, not a fake number
    grid = path_patch_heads(model, problem, ["L2.H0:q"], progress=False, normalize=False)
    values = grid.values[:2]
    assert values.numel() == 2 * model.n_heads
    # Exact up to float reassociation: the batched forward repeats the batch.
    assert float(values.abs().max()) < 1e-6
    grid = path_patch_heads(model, problem, ["logits"], progress=False, normalize=False)
    assert float(grid.values.abs().max()) < 1e-6


def test_grid_shape_nan_and_provenance():
    model, problem = tiny_model("llama"), tiny_problem()
    grid = path_patch_heads(model, problem, ["L1.H2:q"], progress=False)
    assert grid.values.shape == (model.n_layers, model.n_heads)
    assert torch.isnan(grid.values[1:]).all() and not torch.isnan(grid.values[0]).any()
    assert grid.provenance["receivers"] == ["L1.H2:q"]
    assert "frozen" in grid.provenance["freezing"]
    assert grid.provenance["model"] == "tiny"


def test_receiver_parsing_round_trip_and_errors():
    for text in ("logits", "L3.H2:q", "L0.H1:k", "L5.H0:v", "L7.mlp"):
        assert parse_display_receiver(text).display == text
    assert parse_display_receiver("L3.H2:q") == Receiver(head_node(3, 2), Slot.Q)
    for bad in ("L3:q", "L3.H1:mlp", "H3:q", "L3.H1:z", "logit", "L7:mlp", "input"):
        with pytest.raises(SiteError):
            parse_display_receiver(bad)
    model, problem = tiny_model("llama"), tiny_problem()
    with pytest.raises(SiteError, match="KV heads 0..1"):
        path_patch_heads(model, problem, ["L2.H3:k"], progress=False)
    with pytest.raises(SiteError, match="alone"):
        path_patch_heads(model, problem, ["logits", "L2.H1:q"], progress=False)
    with pytest.raises(SiteError, match="senders are heads"):
        path_patch(model, problem, [Site(Component.ATTN_OUT, 1)], ["logits"])
