"""Attribution patching: exact on linear parts, and correlated with exact activation patching.

The exact reference is a slow loop of plain `model.run` calls, one patched forward per head /
MLP / residual site. Correlations measured (see docs/localise.md):
- tiny random models (4 prompts): heads 0.89-1.00; MLP / resid positions vary from 0.19 to 1.00
  (random weights make single positions strongly non-linear), so for those the test is exactness of
  the first-order term itself, against finite differences;
- SmolLM2-135M IOI (ABC corruption, 4 prompts): heads 0.85 noising, 0.99 denoising.
"""

from __future__ import annotations

import pytest
import torch

from tests.tiny_models import tiny_model, tiny_tokens
from wildcircuits.patching.attribution import AttributionTarget, attribution_patch
from wildcircuits.patching.hooks import Intervention, Mode
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Component, Site
from wildcircuits.tasks.metrics import make_targets

PROVENANCE = {"model": "tiny", "quantization": "none", "metric": "logit_diff", "task": "random"}


def tiny_problem(batch: int = 4, same: bool = False) -> PatchingProblem:
    clean = tiny_tokens(batch, 9, seed=1, padded=False)
    corrupted = clean if same else tiny_tokens(batch, 9, seed=2, padded=False)
    targets = make_targets([[5 + i] for i in range(batch)], [[40 + i] for i in range(batch)])
    return PatchingProblem(clean, corrupted, clean.last_index, targets, provenance=PROVENANCE)


def exact_patching(model, problem, target: AttributionTarget, direction: str) -> torch.Tensor:
    """Slow reference: one plain patched forward per site, normalized like attribution."""
    base, source = (
        (problem.clean, problem.corrupted)
        if direction == "noise"
        else (problem.corrupted, problem.clean)
    )
    component = {"heads": Component.Z, "mlp": Component.MLP_OUT, "resid": Component.RESID_PRE}[
        target.value
    ]
    layers = [Site(component, layer) for layer in range(model.n_layers)]
    cache = model.run(source, capture=layers).cache

    def metric(tokens, interventions=()):
        logits = model.run(tokens, interventions=interventions, positions=problem.positions).logits
        return float(problem.score(logits).mean())

    m_base = metric(base)
    gap = metric(problem.clean) - metric(problem.corrupted)
    width = model.n_heads if target is AttributionTarget.HEADS else problem.clean.seq_len
    out = torch.zeros(model.n_layers, width)
    for layer in range(model.n_layers):
        for index in range(width):
            if target is AttributionTarget.HEADS:
                site = Site(component, layer, head=index)
                value = cache[layers[layer]][:, :, index]
            else:
                site = Site(component, layer, position=index)
                value = cache[layers[layer]][:, index]
            patched = metric(base, [Intervention(site, Mode.REPLACE, value)])
            change = patched - m_base
            out[layer, index] = (change if direction == "denoise" else -change) / gap
    return out


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.flatten().double(), b.flatten().double()
    return float(torch.corrcoef(torch.stack([a, b]))[0, 1])


def finite_difference(model, problem, target: AttributionTarget, eps: float = 1e-3):
    """Slow reference for the gradient itself: move each site eps of the way to the corrupted
    value (noising) and divide the metric change by eps; the first-order term, site by site."""
    component = {"heads": Component.Z, "mlp": Component.MLP_OUT, "resid": Component.RESID_PRE}[
        target.value
    ]
    layers = [Site(component, layer) for layer in range(model.n_layers)]
    corrupt = model.run(problem.corrupted, capture=layers).cache
    clean = model.run(problem.clean, capture=layers).cache

    def metric(interventions=()):
        logits = model.run(problem.clean, interventions=interventions, positions=problem.positions)
        return float(problem.score(logits.logits).double().mean())

    m_clean = metric()
    width = model.n_heads if target is AttributionTarget.HEADS else problem.clean.seq_len
    out = torch.zeros(model.n_layers, width)
    for layer, full in enumerate(layers):
        for index in range(width):
            at = (
                (slice(None), slice(None), index)
                if component is Component.Z
                else (slice(None), index)
            )
            head, position = (index, None) if component is Component.Z else (None, index)
            site = Site(component, layer, head=head, position=position)
            value = clean[full][at] + eps * (corrupt[full][at] - clean[full][at])
            out[layer, index] = (metric([Intervention(site, Mode.REPLACE, value)]) - m_clean) / eps
    return out


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt_neox"])
@pytest.mark.parametrize("target", list(AttributionTarget))
def test_estimate_equals_finite_difference(family, target):
    model, problem = tiny_model(family), tiny_problem()
    grid = attribution_patch(model, problem, target, "noise", normalize=False)
    reference = finite_difference(model, problem, target)
    scale = float(reference.abs().max())
    # float32 finite differences: ~1e-4 noise on values of ~1e-2; a wrong gradient is off by O(1).
    torch.testing.assert_close(grid.values, reference, atol=0.02 * scale, rtol=0)


@pytest.mark.parametrize("family", ["llama", "gpt2", "gemma3_text", "gpt_neox", "qwen2"])
def test_heads_correlate_with_exact_patching_on_tiny_models(family):
    """Measured on these random models: 0.89 (gemma3, denoise) to 1.00."""
    model, problem = tiny_model(family), tiny_problem()
    for direction in ("noise", "denoise"):
        grid = attribution_patch(model, problem, AttributionTarget.HEADS, direction)
        exact = exact_patching(model, problem, AttributionTarget.HEADS, direction)
        assert grid.values.shape == exact.shape
        assert pearson(grid.values, exact) > 0.85, (family, direction)


@pytest.mark.parametrize("target", list(AttributionTarget))
def test_identical_inputs_give_zero(target):
    model, problem = tiny_model("llama"), tiny_problem(same=True)
    grid = attribution_patch(model, problem, target, "noise", normalize=False)
    assert grid.values.abs().max() == 0
    assert grid.provenance["normalization"].startswith("none")


def test_resid_at_layer_zero_all_positions_is_exact_for_the_first_order_term():
    """Summed over positions, resid_pre at layer 0 is the whole input: the estimate equals
    grad . (source - base) of the embeddings, which is the sum of the per-position estimates."""
    model, problem = tiny_model("qwen2"), tiny_problem()
    per_pos = attribution_patch(model, problem, AttributionTarget.RESID)
    summed = attribution_patch(model, problem, AttributionTarget.RESID, per_position=False)
    torch.testing.assert_close(per_pos.values.sum(1, keepdim=True), summed.values)


def test_chunked_equals_whole_batch():
    model, problem = tiny_model("gpt_neox"), tiny_problem(batch=5)
    whole = attribution_patch(model, problem, AttributionTarget.MLP, batch_size=16)
    chunked = attribution_patch(model, problem, AttributionTarget.MLP, batch_size=2)
    torch.testing.assert_close(whole.values, chunked.values, atol=1e-6, rtol=1e-5)


def test_grid_labels_and_provenance():
    model, problem = tiny_model("llama"), tiny_problem()
    grid = attribution_patch(model, problem, "mlp", "noise")
    assert grid.values.shape == (model.n_layers, problem.clean.seq_len)
    assert len(grid.col_labels) == problem.clean.seq_len
    assert grid.provenance["direction"] == "noise"
    assert grid.provenance["target"] == "mlp"
    assert grid.provenance["model"] == "tiny"
    with pytest.raises(ValueError):
        attribution_patch(model, problem, "neurons")


def test_smollm2_ioi_heads_correlation(smollm2):
    """SmolLM2-135M IOI (ABC corruption, 4 prompts of one length), heads of layers 15-29, noising.

    Measured against exact patching of each head's z: Pearson 0.85 over all 270 heads and 0.86
    over layers 15-29 (noise), 0.99 (denoise). The test covers layers 15-29, where every head with
    a sizeable effect lives, to keep the exact loop ~4x cheaper; threshold 0.75 leaves room for
    float noise but fails on any gradient / sign / index bug.
    """
    from wildcircuits.models.instrumented import InstrumentedModel
    from wildcircuits.patching.problem import problem_from_dataset
    from wildcircuits.tasks import load_task

    model = InstrumentedModel(*smollm2)
    dataset = load_task("ioi").build(model.tokenizer, n=8, seed=0)
    rows = [i for i, e in enumerate(dataset.examples) if e.template.endswith("went")][:4]
    problem = problem_from_dataset(model, dataset.subset(rows))
    grid = attribution_patch(model, problem, AttributionTarget.HEADS, "noise")
    exact = exact_heads_fast_start(model, problem, first_layer=15)
    assert pearson(grid.values[15:], exact[15:]) > 0.75


def exact_heads_fast_start(model, problem, first_layer: int = 0) -> torch.Tensor:
    """Exact noising of each head's z, one forward per head started at the head's layer."""
    resid = [Site(Component.RESID_PRE, layer) for layer in range(model.n_layers)]
    z = [Site(Component.Z, layer) for layer in range(model.n_layers)]
    clean = model.run(problem.clean, capture=resid, positions=problem.positions)
    corrupt = model.run(problem.corrupted, capture=z, positions=problem.positions)
    m_clean = float(problem.score(clean.logits).mean())
    gap = m_clean - float(problem.score(corrupt.logits).mean())
    out = torch.zeros(model.n_layers, model.n_heads)
    for layer in range(first_layer, model.n_layers):
        for head in range(model.n_heads):
            patch = Intervention(
                Site(Component.Z, layer, head), Mode.REPLACE, corrupt[z[layer]][:, :, head]
            )
            run = model.run(
                problem.clean,
                interventions=[patch],
                positions=problem.positions,
                start_layer=layer,
                start_resid=clean[resid[layer]] if layer else None,
            )
            out[layer, head] = (m_clean - float(problem.score(run.logits).mean())) / gap
    return out
