"""Independent oracle: our SmolLM2-135M activations equal TransformerLens' TransformerBridge's.

The bridge (transformer-lens 4.x, the `oracle` extra) runs its own attention code over a deep copy
of the same HF model; we feed both the same token ids (SmolLM2's tokenizer adds no BOS, and strings
would let the bridge re-tokenize) and compare the attention pattern, per-head z and per-head result
of every layer, and the final logits.

Tolerances (fp32, CPU):
- pattern: atol 1e-5, rtol 0 (probabilities in [0, 1]);
- z, result: atol 1e-4 x max|value| of that tensor, rtol 1e-4 (relative to the tensor's magnitude);
- logits: atol 1e-4, rtol 1e-5 (logits of magnitude ~20).
Measured maxima are in docs/design.md ("Independent oracle").
"""

from __future__ import annotations

import pytest
import torch

from wildcircuits.models import InstrumentedModel
from wildcircuits.patching.sites import Component, Site

pytest.importorskip(
    "transformer_lens",
    reason="transformer-lens is not installed: pip install -e '.[oracle]' (see QUARANTINES.md)",
)

from tests.tl_bridge import build_bridge, hook_name  # noqa: E402

IOI = "When John and Mary went to the store, John gave a drink to"
HOOKS = {Component.PATTERN: "pattern", Component.Z: "z", Component.RESULT: "result"}


def _module_types(hf_model: torch.nn.Module) -> list[str]:
    return [type(module).__name__ for module in hf_model.modules()]


@pytest.fixture(scope="module")
def runs(smollm2):
    """(ours, theirs, our logits, bridge logits, layers); ours/theirs: {(component, layer): x}."""
    model = InstrumentedModel(*smollm2)
    layers = tuple(range(model.n_layers))
    tokens = model.tokenize([IOI])
    assert bool(tokens.attention_mask.all()), "one unpadded prompt: no mask to reconcile"
    types_before = _module_types(model.hf_model)
    bridge = build_bridge(model.hf_model, model.tokenizer)
    assert _module_types(model.hf_model) == types_before, "the bridge must wrap a copy"
    sites = [Site(component, layer) for component in HOOKS for layer in layers]
    with torch.no_grad():
        result = model.run(tokens, capture=sites)
        names = [hook_name(site.layer, HOOKS[site.component]) for site in sites]
        bridge_logits, cache = bridge.run_with_cache(tokens.input_ids, names_filter=names)
    ours = {site.key: result[site] for site in sites}
    theirs = {site.key: cache[name] for site, name in zip(sites, names, strict=True)}
    return ours, theirs, result.logits, bridge_logits, layers


def _assert_matches(ours: torch.Tensor, theirs: torch.Tensor, component: Component) -> None:
    assert ours.shape == theirs.shape
    if component is Component.PATTERN:
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    else:
        scale = theirs.abs().max().item()
        torch.testing.assert_close(ours, theirs, atol=1e-4 * scale, rtol=1e-4)


@pytest.mark.parametrize("component", list(HOOKS), ids=str)
def test_per_head_activations_equal_the_bridge(runs, component):
    ours, theirs, _, _, layers = runs
    for layer in layers:
        _assert_matches(ours[component, layer], theirs[component, layer], component)


def test_final_logits_equal_the_bridge(runs):
    _, _, logits, bridge_logits, _ = runs
    torch.testing.assert_close(logits, bridge_logits, atol=1e-4, rtol=1e-5)


def test_the_comparison_tells_layers_apart(runs):
    """Sanity: the tolerances are tight enough that a different layer's values would fail."""
    ours, theirs, _, _, layers = runs
    for component in HOOKS:
        with pytest.raises(AssertionError):
            _assert_matches(ours[component, 0], theirs[component, len(layers) // 2], component)
