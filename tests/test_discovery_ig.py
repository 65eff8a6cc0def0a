"""EAP-IG on inputs and on activations: slow references, limits and integrated-gradient facts.

The slow references differentiate the loss of exact edge patching runs (`EdgeForward.run`) by
finite differences in float64, at every interpolation point separately.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.discovery_fixtures import double_model, patched_loss, tiny_problem
from tests.tiny_models import tiny_model
from wildcircuits.discovery import (
    EAPConfig,
    EAPIGActivationsConfig,
    EAPIGConfig,
    Riemann,
    eap,
    eap_ig_activations,
    eap_ig_inputs,
)
from wildcircuits.discovery.common import loss_value
from wildcircuits.discovery.eap_ig import alphas
from wildcircuits.discovery.eap_ig_activations import sender_groups
from wildcircuits.patching.edges import EdgeForward


def _swapped(problem):
    return replace(problem, clean=problem.corrupted, corrupted=problem.clean)


def test_riemann_points_are_pinned():
    assert alphas(4, Riemann.LEFT) == [0.0, 0.25, 0.5, 0.75]
    assert alphas(4, Riemann.RIGHT) == [0.25, 0.5, 0.75, 1.0]


# EAP-IG inputs ------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3_text"])
def test_one_step_limits_are_eap_at_either_end(family):
    """m = 1 right is EAP (gradient at clean); m = 1 left takes the gradient at the corrupted
    run, which is minus EAP of the swapped problem."""
    model = tiny_model(family)
    problem = tiny_problem(model)
    plain = eap(model, problem, EAPConfig()).scores
    swapped = eap(model, _swapped(problem), EAPConfig()).scores
    right = eap_ig_inputs(model, problem, EAPIGConfig(steps=1, riemann=Riemann.RIGHT)).scores
    left = eap_ig_inputs(model, problem, EAPIGConfig(steps=1, riemann=Riemann.LEFT)).scores
    torch.testing.assert_close(right, plain, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(left, -swapped, atol=1e-6, rtol=1e-5)


def _interpolated_outputs(engine, problem, alpha):
    """(input embeddings, sender outputs) of the run at clean fraction `alpha`."""
    model = engine.model
    clean, corrupted = model.embed(problem.clean), model.embed(problem.corrupted)
    embeds = corrupted + alpha * (clean - corrupted)
    return embeds, engine.outputs(problem.clean, input_embeds=embeds)


@pytest.mark.parametrize("family", ["gpt2", "gemma3_text"])
def test_eap_ig_inputs_equals_finite_differences_at_each_step(family):
    model = double_model(family)
    problem = tiny_problem(model)
    config = EAPIGConfig(steps=3, batch_size=2)
    scores = eap_ig_inputs(model, problem, config).scores
    engine = EdgeForward(model)
    graph = engine.graph
    clean = engine.outputs(problem.clean)
    diff = engine.outputs(problem.corrupted) - clean
    runs = [_interpolated_outputs(engine, problem, a) for a in alphas(3, Riemann.LEFT)]
    top = scores.abs().flatten().topk(6).indices.tolist()
    picked = [[i // graph.n_senders, i % graph.n_senders] for i in top]
    picked += [[graph.mlp_receiver(1), 0], [graph.attention_receivers(2).start + 1, 3]]
    scale = float(scores.abs().max())
    for r, s in picked:
        ablated = torch.zeros_like(graph.valid)
        ablated[r, s] = True
        steps = [
            _finite_difference_at(engine, problem, ablated, outputs, diff, input_embeds=embeds)
            for embeds, outputs in runs
        ]
        expected = sum(steps) / len(steps)
        assert float(scores[r, s]) == pytest.approx(expected, rel=1e-3, abs=5e-5 * scale)


def _finite_difference_at(engine, problem, ablated, outputs, diff, h=2e-2, **run):
    """d/dt of the loss of the run (`run`: input_embeds or override) with `ablated` edges
    reading outputs + t diff; Richardson-extrapolated central differences."""

    def loss(t):
        result = engine.run(
            problem.clean, problem.positions, ablated=ablated, ablation=outputs + t * diff, **run
        )
        return float(loss_value(problem, result.logits))

    def central(step):
        return (loss(step) - loss(-step)) / (2 * step)

    return (4 * central(h / 2) - central(h)) / 3


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_input_scores_approach_the_total_effect_as_steps_grow(family):
    """Integrated-gradients completeness on the input node: its outgoing scores sum to
    L(corrupted) - L(clean) in the limit. Left and right sums differ by exactly
    (g(0) - g(1)) / m; their mean (the trapezoid rule) converges ~ 1/m^2."""
    model = tiny_model(family)
    problem = tiny_problem(model)
    clean = loss_value(problem, model.logits(problem.clean, positions=problem.positions))
    corrupted = loss_value(problem, model.logits(problem.corrupted, positions=problem.positions))
    total = float(corrupted - clean)

    def scores(steps, riemann):
        return eap_ig_inputs(model, problem, EAPIGConfig(steps, riemann)).scores

    ends = scores(1, Riemann.LEFT) - scores(1, Riemann.RIGHT)
    errors = []
    for steps in (8, 32):
        left, right = scores(steps, Riemann.LEFT), scores(steps, Riemann.RIGHT)
        torch.testing.assert_close((left - right) * steps, ends, atol=1e-5, rtol=1e-4)
        errors.append(abs(float((left + right)[:, 0].sum()) / 2 - total))
    assert errors[1] < 0.01 * abs(total)
    assert errors[1] < errors[0] / 4


# EAP-IG activations ---------------------------------------------------------------------------
def test_sender_groups_cover_every_sender_once():
    model = tiny_model("llama")
    graph = EdgeForward(model).graph
    groups = sender_groups(graph)
    assert len(groups) == 2 * graph.n_layers + 1
    assert sorted(s for g in groups for s in g) == list(range(graph.n_senders))


@pytest.mark.parametrize("family", ["gpt_neox", "gemma3_text"])
def test_activations_method_limits(family):
    """m = 1 right is EAP; the input group's scores are EAP-IG-inputs' input column."""
    model = tiny_model(family)
    problem = tiny_problem(model)
    right = EAPIGActivationsConfig(steps=1, riemann=Riemann.RIGHT)
    torch.testing.assert_close(
        eap_ig_activations(model, problem, right).scores,
        eap(model, problem, EAPConfig()).scores,
        atol=1e-6,
        rtol=1e-5,
    )
    activations = eap_ig_activations(model, problem, EAPIGActivationsConfig(steps=3)).scores
    inputs = eap_ig_inputs(model, problem, EAPIGConfig(steps=3)).scores
    torch.testing.assert_close(activations[:, 0], inputs[:, 0], atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("family", ["gpt2", "gemma3_text"])
def test_eap_ig_activations_equals_finite_differences_with_the_group_interpolated(family):
    model = double_model(family)
    problem = tiny_problem(model)
    scores = eap_ig_activations(model, problem, EAPIGActivationsConfig(steps=2)).scores
    engine = EdgeForward(model)
    graph = engine.graph
    clean = engine.outputs(problem.clean)
    diff = engine.outputs(problem.corrupted) - clean
    scale = float(scores.abs().max())
    groups = sender_groups(graph)
    for group, (r, s) in [
        (groups[1], (graph.attention_receivers(1).start + 2, groups[1][2])),
        (groups[2], (graph.logits_receiver, groups[2][0])),
        (groups[3], (graph.mlp_receiver(1), groups[3][1])),
    ]:
        ablated = torch.zeros_like(graph.valid)
        ablated[r, s] = True
        steps = []
        for alpha in alphas(2, Riemann.LEFT):
            override = {u: clean[:, :, u] + (1 - alpha) * diff[:, :, u] for u in group}
            outputs = engine.run(
                problem.clean, problem.positions, keep_outputs=True, override=override
            ).outputs
            steps.append(
                _finite_difference_at(engine, problem, ablated, outputs, diff, override=override)
            )
        expected = sum(steps) / len(steps)
        assert float(scores[r, s]) == pytest.approx(expected, rel=1e-3, abs=5e-5 * scale)


def test_group_scores_approach_patching_the_group_as_steps_grow():
    """Completeness per group: the summed scores of a group's out-edges tend to
    L(group patched to corrupted) - L(clean)."""
    model = tiny_model("qwen2")
    problem = tiny_problem(model)
    engine = EdgeForward(model)
    graph = engine.graph
    corrupted = engine.outputs(problem.corrupted)
    clean_loss = loss_value(problem, model.logits(problem.clean, positions=problem.positions))
    group = sender_groups(graph)[3]  # layer 1's heads
    ablated = torch.zeros_like(graph.valid)
    ablated[:, group] = graph.valid[:, group]
    total = patched_loss(engine, problem, ablated, corrupted) - float(clean_loss)
    errors = []
    for steps in (2, 24):
        scores = eap_ig_activations(model, problem, EAPIGActivationsConfig(steps=steps)).scores
        errors.append(abs(float(scores[:, group].sum()) - total))
    assert errors[1] < 0.05 * abs(total)
    assert errors[1] < errors[0] / 4
