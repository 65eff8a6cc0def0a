"""Exactness on the two real pretrained models (SmolLM2-135M-Instruct, Gemma3-270M)."""

from __future__ import annotations

import pytest
import torch

from wildcircuits.models import InstrumentedModel
from wildcircuits.models.verify import verify_model
from wildcircuits.patching.hooks import replace
from wildcircuits.patching.sites import Component, Site

IOI = "When John and Mary went to the store, John gave a drink to"


@pytest.fixture(scope="module", params=["smollm2", "gemma3"])
def model(request) -> InstrumentedModel:
    return InstrumentedModel(*request.getfixturevalue(request.param))


def test_no_intervention_reproduces_hf_eager_logits(model):
    tokens = model.tokenize([IOI, "The capital of France is", "a"])  # padded batch
    with torch.no_grad():
        reference = model.hf_model(
            input_ids=tokens.input_ids,
            attention_mask=tokens.attention_mask,
            position_ids=tokens.position_ids,
        ).logits
    real = tokens.attention_mask.bool()
    assert (model.logits(tokens) - reference)[real].abs().max().item() <= 1e-5


def test_run_on_prompt_strings_equals_the_token_batch(model):
    prompts = [IOI, "The capital of France is"]
    tokens = model.tokenize(prompts)
    from_text = model.run(prompts, positions=tokens.last_index).logits
    from_tokens = model.run(tokens, positions=tokens.last_index).logits
    torch.testing.assert_close(from_text, from_tokens, atol=0, rtol=0)


def test_left_padded_batch_gives_the_unpadded_logits(model):
    from wildcircuits.models import tokens_from_ids

    single = model.tokenize([IOI])
    pad = model.tokenizer.pad_token_id
    ids = torch.cat([torch.full((1, 3), pad), single.input_ids.cpu()], dim=1)
    mask = torch.cat(
        [torch.zeros(1, 3, dtype=torch.long), torch.ones_like(single.input_ids.cpu())], 1
    )
    padded = tokens_from_ids(ids, mask)
    expected = model.logits(single)[0, -1]
    got = model.logits(padded)[0, -1]
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-5)


def test_ioi_logit_difference_matches_the_reference(model):
    tokens = model.tokenize([IOI])
    logits = model.logits(tokens, positions=tokens.last_index)[0]
    mary, john = (
        model.tokenizer.encode(w, add_special_tokens=False)[0] for w in (" Mary", " John")
    )
    expected = {"llama": 4.6, "gemma3_text": 5.8}[model.info.family]
    assert logits.argmax().item() == mary
    assert abs((logits[mary] - logits[john]).item() - expected) < 0.05


def test_verify_model_passes_every_check(model):
    report = verify_model(model)
    assert report.passed, [c for c in report.checks if not c.passed]
    assert report.max_abs_logit_diff <= 1e-5


def test_replacing_every_site_of_a_layer_by_itself_is_exact(model):
    tokens = model.tokenize([IOI])
    layer = model.n_layers - 2
    sites = [
        Site(c, layer)
        for c in (
            Component.Q,
            Component.K,
            Component.V,
            Component.PATTERN,
            Component.Z,
            Component.RESULT,
            Component.MLP_IN,
            Component.RESID_MID,
        )
    ]
    clean = model.run(tokens, capture=sites)
    patched = model.run(tokens, interventions=[replace(s, clean[s]) for s in sites])
    torch.testing.assert_close(patched.logits, clean.logits, atol=1e-4, rtol=1e-5)


def test_gqa_grouping_is_reported(model):
    tokens = model.tokenize([IOI])
    run = model.run(tokens, capture=[Site(Component.K, 0), Site(Component.Q, 0)])
    assert run[Site(Component.K, 0)].shape[2] == model.n_kv_heads
    assert run[Site(Component.Q, 0)].shape[2] == model.n_heads
    assert model.n_heads % model.n_kv_heads == 0


def test_edge_engine_full_and_empty_circuits_on_the_real_model(model):
    """The exact edge engine on the real model: nothing ablated = the clean run, every edge
    ablated = the corrupted run, and a small circuit (kept edges from a few senders: the
    complement path) matches ablating the same edges one sender group at a time."""
    from wildcircuits.patching.edges import EdgeForward

    engine = EdgeForward(model)
    graph = engine.graph
    clean = model.tokenize([IOI, "When Tom and Anna went to the park, Tom gave a ball to"])
    corrupted = model.tokenize(
        [
            "When John and Mary went to the store, Paul gave a drink to",
            "When Tom and Anna went to the park, Mark gave a ball to",
        ]
    )
    assert clean.input_ids.shape == corrupted.input_ids.shape
    at = clean.last_index
    ablation = engine.outputs(corrupted)
    none = torch.zeros_like(graph.valid)
    full = engine.run(clean, at, ablated=none, ablation=ablation).logits
    empty = engine.run(clean, at, ablated=graph.valid, ablation=ablation).logits
    with torch.no_grad():
        assert (full - model.logits(clean, positions=at)).abs().max().item() <= 1e-4
        assert (empty - model.logits(corrupted, positions=at)).abs().max().item() <= 1e-3
    # a small circuit (edges out of the embeddings and layers 0-2 kept):
    # the engine sums "all senders minus the kept ones"; the slow reference sums each receiver
    # input sender by sender
    from tests.edge_reference import edge_patching_reference

    kept = torch.zeros_like(graph.valid)
    kept[:, : 1 + 3 * (model.n_heads + 1)] = True  # input and every node of layers 0-2
    ablated = graph.valid & ~kept
    small = engine.run(clean, at, ablated=ablated, ablation=ablation).logits
    with torch.no_grad():
        slow = edge_patching_reference(model, graph, clean, ablated, ablation, at)
    error, effect = (small - slow).abs().max().item(), (small - empty).abs().max().item()
    print(f"{model.info.family}: fast vs slow {error:.2e}, small vs empty {effect:.3f}")
    assert error <= 1e-4
    assert effect > 100 * max(error, 1e-5)  # the kept edges matter, well above rounding


def _receiver_effect(run, graph, name, direction):
    """The first-order change of the objective when `direction` is added to the edge's input."""
    r, _ = graph.edge_cell(name)
    return (run.receiver_grads[:, :, r] * direction).sum()


def test_edge_engine_receiver_gradients_match_finite_differences_on_the_real_model(model):
    """Gradient runs share one attention input per layer and recover each receiver's gradient
    from its own projection: check q, k and v receivers against central differences."""
    from wildcircuits.patching.edges import EdgeForward

    engine = EdgeForward(model)
    graph = engine.graph
    tokens = model.tokenize([IOI])
    at = tokens.last_index
    mary, john = (
        model.tokenizer.encode(w, add_special_tokens=False)[0] for w in (" Mary", " John")
    )

    def objective(logits):
        return (logits[:, mary] - logits[:, john]).sum()

    run = engine.receiver_gradients(tokens, at, objective, keep_outputs=True)
    outputs = run.outputs
    generator = torch.Generator().manual_seed(0)
    direction = torch.randn(outputs.shape[:2] + (model.d_model,), generator=generator)
    middle = model.n_layers // 2
    for slot in ("q", "k", "v"):
        # The middle layer's head whose receiver this direction moves most: a fixed head's effect
        # can sit at float32 noise (h1<k> on SmolLM2 moved the logit diff by 1.1e-5, and central
        # differences of the two patched runs then differ from it by 3.8e-6 on some CPUs).
        names = [f"m1->a{middle}.h{h}<{slot}>" for h in range(model.n_heads)]
        name = max(names, key=lambda n: abs(float(_receiver_effect(run, graph, n, direction))))
        r, s = graph.edge_cell(name)
        mask = torch.zeros_like(graph.valid)
        mask[r, s] = True
        scale = 1e-2 * float(outputs[:, :, s].norm()) / float(direction.norm())

        def shifted(eps, s=s, mask=mask, scale=scale):
            ablation = outputs.clone()
            ablation[:, :, s] += eps * scale * direction
            return float(objective(engine.run(tokens, at, mask, ablation).logits))

        numeric = (shifted(1.0) - shifted(-1.0)) / 2
        analytic = float((run.receiver_grads[:, :, r] * scale * direction).sum())
        assert abs(analytic) > 1e-4  # a real effect, far above float32 noise (~4e-6 seen)
        assert abs(numeric - analytic) <= 0.1 * abs(analytic) + 2e-6, (name, numeric, analytic)
