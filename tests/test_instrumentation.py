"""Instrumentation on tiny random models of every family: parity, invariants, bad input."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_models import FAMILIES, CharTokenizer, tiny_model, tiny_tokens
from wildcircuits.errors import InterventionError, SiteError, WildcircuitsError
from wildcircuits.models.adapters import get_module
from wildcircuits.patching.hooks import Intervention, Mode, replace
from wildcircuits.patching.sites import Component, Site, format_site, parse_site

PER_LAYER = [
    c
    for c in Component
    if c not in (Component.EMBED, Component.POS_EMBED, Component.FINAL_RESID, Component.LOGITS)
]


def _hf_logits(model, tokens):
    with torch.no_grad():
        return model.hf_model(
            input_ids=tokens.input_ids,
            attention_mask=tokens.attention_mask,
            position_ids=tokens.position_ids,
        ).logits


def _layer_sites(model, layer):
    sites = []
    for component in PER_LAYER:
        if component is Component.RESID_MID and model.parallel_residual:
            continue
        sites.append(Site(component, layer))
    return sites


@pytest.mark.parametrize("family", FAMILIES)
def test_parity_with_hf_eager_on_padded_batch(family):
    model = tiny_model(family)
    tokens = tiny_tokens()
    real = tokens.attention_mask.bool()
    diff = (model.logits(tokens) - _hf_logits(model, tokens))[real].abs().max().item()
    assert diff <= 1e-5


@pytest.mark.parametrize("family", FAMILIES)
def test_logits_at_positions_match_full_logits(family):
    model = tiny_model(family)
    tokens = tiny_tokens()
    full = model.logits(tokens)
    at_last = model.logits(tokens, positions=tokens.last_index)
    rows = torch.arange(tokens.batch)
    torch.testing.assert_close(at_last, full[rows, tokens.last_index])


@pytest.mark.parametrize("family", FAMILIES)
def test_head_results_sum_to_attention_output(family):
    model = tiny_model(family)
    tokens = tiny_tokens()
    layer = 1
    run = model.run(
        tokens, capture=[Site(Component.RESULT, layer), Site(Component.ATTN_OUT, layer)]
    )
    attn = get_module(model.layer_module(layer), model.adapter.attention)
    summed = run[Site(Component.RESULT, layer)].sum(dim=2)
    bias = get_module(attn, model.adapter.out_proj).bias
    if bias is not None:
        summed = summed + bias
    if model.adapter.post_attn_norm:  # Gemma3: attn_out is the post-attention-normed sum
        summed = get_module(model.layer_module(layer), model.adapter.post_attn_norm)(summed)
    torch.testing.assert_close(summed, run[Site(Component.ATTN_OUT, layer)], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_later_tokens_never_change_earlier_positions(family):
    model = tiny_model(family)
    tokens = tiny_tokens(padded=False)
    changed_ids = tokens.input_ids.clone()
    changed_ids[:, 6] = (changed_ids[:, 6] + 1) % 90 + 3
    from wildcircuits.models import tokens_from_ids

    changed = tokens_from_ids(changed_ids)
    sites = [Site(Component.RESID_POST, layer) for layer in range(model.n_layers)]
    sites += [Site(Component.PATTERN, layer) for layer in range(model.n_layers)]
    a = model.run(tokens, capture=sites)
    b = model.run(changed, capture=sites)
    for site in sites:
        axis = 2 if site.component is Component.PATTERN else 1
        early_a = a[site].narrow(axis, 0, 6)
        early_b = b[site].narrow(axis, 0, 6)
        torch.testing.assert_close(early_a, early_b, atol=0, rtol=0)
        assert not torch.equal(a[site].narrow(axis, 6, 1), b[site].narrow(axis, 6, 1))


@pytest.mark.parametrize("family", FAMILIES)
def test_replacing_every_site_by_its_own_value_changes_nothing(family):
    model = tiny_model(family)
    tokens = tiny_tokens()
    sites = [Site(Component.EMBED), Site(Component.FINAL_RESID)]
    for layer in range(model.n_layers):
        sites += _layer_sites(model, layer)
    clean = model.run(tokens, capture=sites)
    patched = model.run(tokens, interventions=[replace(s, clean[s]) for s in sites])
    torch.testing.assert_close(patched.logits, clean.logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FAMILIES)
def test_intervention_at_layer_never_changes_earlier_layers(family):
    model = tiny_model(family)
    tokens = tiny_tokens()
    sites = [Site(Component.RESID_PRE, layer) for layer in range(model.n_layers)]
    clean = model.run(tokens, capture=sites)
    zeroed = model.run(
        tokens, capture=sites, interventions=[Intervention(Site(Component.Z, 1, head=2), Mode.ZERO)]
    )
    for layer in (0, 1):
        torch.testing.assert_close(zeroed[sites[layer]], clean[sites[layer]], atol=0, rtol=0)
    assert not torch.allclose(zeroed[sites[2]], clean[sites[2]])


def test_exception_inside_intervention_leaves_no_trace():
    model = tiny_model("llama")
    tokens = tiny_tokens()
    before = model.logits(tokens)
    state = {k: v.clone() for k, v in model.hf_model.state_dict().items()}

    def explode(value):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run(tokens, interventions=[replace(Site(Component.Z, 1), explode)])
    torch.testing.assert_close(model.logits(tokens), before, atol=0, rtol=0)
    for module in model.hf_model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    for key, value in model.hf_model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_interventions_do_not_change_weights_or_config():
    model = tiny_model("gemma3_text")
    tokens = tiny_tokens()
    state = {k: v.clone() for k, v in model.hf_model.state_dict().items()}
    config = model.hf_model.config.to_dict()
    model.run(
        tokens,
        interventions=[
            Intervention(Site(Component.RESID_PRE, 0), Mode.SCALE, 2.0),
            Intervention(Site(Component.PATTERN, 1, head=0), Mode.ZERO),
            Intervention(Site(Component.MLP_OUT, 2, position=-1), Mode.ADD, 1.0),
        ],
    )
    assert model.hf_model.config.to_dict() == config
    for key, value in model.hf_model.state_dict().items():
        assert torch.equal(value, state[key]), key


@pytest.mark.parametrize("family", FAMILIES)
def test_starting_at_a_layer_from_cached_residual_matches_full_run(family):
    model = tiny_model(family)
    tokens = tiny_tokens()
    site = Site(Component.RESID_PRE, 2)
    clean = model.run(tokens, capture=[site])
    resumed = model.run(tokens, start_layer=2, start_resid=clean[site])
    torch.testing.assert_close(resumed.logits, clean.logits, atol=1e-6, rtol=1e-6)


def test_head_and_position_selection_of_interventions():
    model = tiny_model("llama")
    tokens = tiny_tokens(padded=False)
    site = Site(Component.Z, 1)
    clean = model.run(tokens, capture=[site])[site]
    one = Site(Component.Z, 1, head=3, position=4)
    out = model.run(tokens, capture=[site], interventions=[Intervention(one, Mode.ZERO)])[site]
    expected = clean.clone()
    expected[:, 4, 3] = 0
    torch.testing.assert_close(out, expected, atol=0, rtol=0)


def test_several_interventions_in_one_forward_compose_in_order():
    model = tiny_model("llama")
    tokens = tiny_tokens()
    site = Site(Component.MLP_OUT, 0)
    clean = model.run(tokens, capture=[site])[site]
    out = model.run(
        tokens,
        capture=[site],
        interventions=[Intervention(site, Mode.SCALE, 3.0), Intervention(site, Mode.ADD, 1.0)],
    )[site]
    torch.testing.assert_close(out, clean * 3.0 + 1.0)


def test_function_interventions_receive_the_selected_slice():
    model = tiny_model("qwen2")
    tokens = tiny_tokens()
    seen = {}

    def record(value):
        seen["shape"] = tuple(value.shape)
        return value * 0.5

    model.run(tokens, interventions=[replace(Site(Component.Q, 0, head=1), record)])
    assert seen["shape"] == (tokens.batch, tokens.seq_len, model.d_head)


def test_shapes_of_captured_sites_follow_the_declared_vocabulary():
    model = tiny_model("llama")  # 4 heads, 2 KV heads (GQA)
    tokens = tiny_tokens()
    b, p = tokens.batch, tokens.seq_len
    run = model.run(tokens, capture=_layer_sites(model, 0))
    expect = {
        Component.Q: (b, p, 4, model.d_head),
        Component.K: (b, p, 2, model.d_head),
        Component.V: (b, p, 2, model.d_head),
        Component.PATTERN: (b, 4, p, p),
        Component.Z: (b, p, 4, model.d_head),
        Component.RESULT: (b, p, 4, model.d_model),
        Component.MLP_OUT: (b, p, model.d_model),
    }
    for component, shape in expect.items():
        assert tuple(run[Site(component, 0)].shape) == shape
    pattern = run[Site(Component.PATTERN, 0)]
    torch.testing.assert_close(pattern.sum(-1), torch.ones(b, 4, p))


def test_gradients_reach_captured_sites():
    model = tiny_model("gemma3_text")
    tokens = tiny_tokens()
    site = Site(Component.RESID_MID, 1)
    run = model.run(tokens, capture=[site], positions=tokens.last_index, grad=True)
    (grad,) = torch.autograd.grad(run.logits[:, 5].sum(), run[site])
    assert grad.shape == run[site].shape
    assert grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("site", "message"),
    [
        (Site(Component.RESID_PRE, 3), "layer 3 out of range; valid layers 0..2"),
        (Site(Component.Z, 0, head=4), "head 4 out of range; valid heads 0..3"),
        (Site(Component.K, 0, head=2), "valid KV heads 0..1"),
        (Site(Component.RESID_POST, 0, position=9), "position 9 past the sequence"),
    ],
)
def test_out_of_range_sites_raise_with_valid_range(site, message):
    model = tiny_model("llama")
    with pytest.raises(SiteError, match=message):
        model.run(tiny_tokens(), capture=[site])


def test_wrong_shape_replacement_is_an_error_naming_the_expected_shape():
    model = tiny_model("llama")
    tokens = tiny_tokens()
    bad = torch.zeros(tokens.batch, tokens.seq_len + 1, model.d_model)
    with pytest.raises(InterventionError, match=r"expected \(3, 9, 32\)"):
        model.run(tokens, interventions=[replace(Site(Component.RESID_PRE, 0), bad)])


def test_sites_that_do_not_exist_for_a_family_raise():
    with pytest.raises(SiteError, match="no resid_mid"):
        tiny_model("gpt_neox").run(tiny_tokens(), capture=[Site(Component.RESID_MID, 0)])
    with pytest.raises(SiteError, match="no positional embedding"):
        tiny_model("llama").run(tiny_tokens(), capture=[Site(Component.POS_EMBED)])
    with pytest.raises(SiteError, match="per layer"):
        Site(Component.Z)
    with pytest.raises(SiteError, match="unknown site component 'zz'"):
        parse_site("zz.L1")


def test_site_strings_round_trip():
    sites = [Site(Component.EMBED), Site(Component.LOGITS, position=-1)]
    for component in PER_LAYER:
        sites.append(Site(component, 2))
        sites.append(Site(component, 11, position=-3))
    sites += [Site(Component.Z, 3, head=7, position=5), Site(Component.K, 0, head=1)]
    for site in sites:
        assert parse_site(format_site(site)) == site
    with pytest.raises(SiteError, match="cannot parse site"):
        parse_site("blocks.3.attn.hook_z")


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_run_on_prompt_strings_equals_the_token_batch(family):
    model = tiny_model(family)
    model.tokenizer = CharTokenizer()
    prompts = ["When Mary and John", "a b"]
    tokens = model.tokenize(prompts)
    site = Site(Component.RESID_POST, 1)
    from_text = model.run(prompts, capture=[site], positions=tokens.last_index)
    from_tokens = model.run(tokens, capture=[site], positions=tokens.last_index)
    torch.testing.assert_close(from_text.logits, from_tokens.logits, atol=0, rtol=0)
    torch.testing.assert_close(from_text[site], from_tokens[site], atol=0, rtol=0)
    one = model.tokenize("a b")
    torch.testing.assert_close(model.logits("a b"), model.logits(one), atol=0, rtol=0)
    ids = model.run(one.input_ids[0]).logits  # (pos,) token ids: one unpadded row
    torch.testing.assert_close(ids, model.logits(one), atol=0, rtol=0)


def test_prompt_strings_without_a_tokenizer_are_a_clear_error():
    model = tiny_model("gpt2")
    assert model.tokenizer is None
    with pytest.raises(WildcircuitsError, match="has no tokenizer"):
        model.run("a b")
    with pytest.raises(WildcircuitsError, match="expected Tokens, token ids or prompt strings"):
        model.run(3)
