"""Parity and invariant checks a user runs on any model before trusting the instrumentation.

`verify_model` compares the instrumented forward with the HF eager forward and checks the
invariants every later method relies on. Each check reports a number and pass / fail.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from wildcircuits.errors import WildcircuitsError
from wildcircuits.models.adapters import get_module
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.models.tokens import Tokens, tokens_from_ids
from wildcircuits.patching.hooks import replace
from wildcircuits.patching.sites import Component, Site

TOLERANCE = 1e-5

DEFAULT_PROMPTS = (
    "When John and Mary went to the store, John gave a drink to",
    "The war lasted from the year 1732 to the year 17",
    "Hello",
)


@dataclass(frozen=True)
class Check:
    """One check: its measured value, the bound it must meet, and whether it did."""

    name: str
    value: float
    bound: float
    passed: bool
    detail: str


@dataclass(frozen=True)
class VerifyReport:
    model: dict[str, Any]
    max_abs_logit_diff: float
    checks: list[Check] = field(default_factory=list)
    inputs: str = "prompts"

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "passed": self.passed,
            "max_abs_logit_diff": self.max_abs_logit_diff,
            "tolerance": TOLERANCE,
            "inputs": self.inputs,
            "checks": [asdict(c) for c in self.checks],
        }


def verify_model(model: InstrumentedModel, prompts: tuple[str, ...] | None = None) -> VerifyReport:
    """Run every parity / invariant check on `model` with `prompts` (a padded batch).

    Without `prompts` a model with a tokenizer uses `DEFAULT_PROMPTS`; a model without one (e.g.
    a local folder holding only weights) uses `synthetic_tokens`: the checks need token ids, not
    text.
    """
    if model.tokenizer is None:
        if prompts is not None:
            raise WildcircuitsError(
                f"model {model.info.model_id!r} has no tokenizer, so prompts cannot be checked; "
                "drop the prompts (synthetic token ids are used) or add a tokenizer to the model "
                "folder (tokenizer.save_pretrained(folder))"
            )
        tokens, inputs = synthetic_tokens(model.info.d_vocab), "synthetic token ids (no tokenizer)"
        unpadded = tokens.select([0])  # row 0 has no padding
    else:
        prompts = DEFAULT_PROMPTS if prompts is None else prompts
        tokens, inputs = model.tokenize(list(prompts)), "prompts"
        unpadded = model.tokenize([DEFAULT_PROMPTS[0]])
    tokens, unpadded = tokens.to(model.device), unpadded.to(model.device)
    checks = [
        _logit_parity(model, tokens),
        _positions_parity(model, tokens),
        _identity(model, tokens),
        _head_sum(model, tokens),
        _causality(model, unpadded),
        _untouched(model, tokens),
    ]
    return VerifyReport(model.info.to_dict(), checks[0].value, checks, inputs)


def synthetic_tokens(d_vocab: int, batch: int = 3, length: int = 12, seed: int = 0) -> Tokens:
    """Seeded random ids: row 1 right-padded, row 2 left-padded (both padding sides checked)."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, d_vocab, (batch, length), generator=generator)  # (batch, pos)
    mask = torch.ones_like(ids)
    mask[1, length - 4 :] = 0
    mask[2, :3] = 0
    return tokens_from_ids(ids, mask)


def _check(name: str, value: float, detail: str, bound: float = TOLERANCE) -> Check:
    return Check(name, float(value), bound, bool(value <= bound), detail)


def _hf_logits(model: InstrumentedModel, tokens) -> torch.Tensor:
    with torch.no_grad():
        return model.hf_model(
            input_ids=tokens.input_ids,
            attention_mask=tokens.attention_mask,
            position_ids=tokens.position_ids,
        ).logits


def _logit_parity(model: InstrumentedModel, tokens) -> Check:
    real = tokens.attention_mask.bool()
    diff = (model.logits(tokens) - _hf_logits(model, tokens))[real].abs().max().item()
    return _check("logits_equal_hf_eager", diff, "padded batch, every real position")


def _positions_parity(model: InstrumentedModel, tokens) -> Check:
    full = model.logits(tokens)
    rows = torch.arange(tokens.batch, device=full.device)
    at = model.logits(tokens, positions=tokens.last_index)
    diff = (at - full[rows, tokens.last_index]).abs().max().item()
    # A (batch, d_model) LM-head matmul sums in another order than a (batch, pos, d_model) one;
    # HF's own `logits_to_keep` differs from its full logits by ~3e-5 on SmolLM2. Bound relative.
    bound = TOLERANCE * max(1.0, full.abs().max().item())
    detail = "LM head run only at the last token; bound 1e-5 x max |logit| (float32 order)"
    return _check("logits_at_positions_equal_full", diff, detail, bound)


def _identity(model: InstrumentedModel, tokens) -> Check:
    layers = sorted({0, model.n_layers // 2, model.n_layers - 1})
    components = [
        Component.RESID_PRE,
        Component.Q,
        Component.K,
        Component.V,
        Component.PATTERN,
        Component.Z,
        Component.RESULT,
        Component.ATTN_OUT,
        Component.MLP_OUT,
        Component.RESID_POST,
    ]
    sites = [Site(c, layer) for layer in layers for c in components]
    clean = model.run(tokens, capture=sites)
    patched = model.run(tokens, interventions=[replace(s, clean[s]) for s in sites])
    diff = (patched.logits - clean.logits).abs().max().item()
    return _check("clean_into_clean_changes_nothing", diff, f"every site of layers {layers}")


def _head_sum(model: InstrumentedModel, tokens) -> Check:
    """Per-head results + output bias equal the output projection of z (before any post-norm).

    Both sides are float32 sums in different orders, so the bound is relative to their size.
    """
    layer = model.n_layers // 2
    z_site, result_site = Site(Component.Z, layer), Site(Component.RESULT, layer)
    z = model.run(tokens, capture=[z_site])[z_site]
    result = model.run(tokens, capture=[result_site])[result_site]
    out_proj = get_module(
        get_module(model.layer_module(layer), model.adapter.attention), model.adapter.out_proj
    )
    with torch.no_grad():
        projected = out_proj(z.reshape(*z.shape[:2], -1))  # (batch, pos, d_model)
    summed = result.sum(dim=2) + (out_proj.bias if out_proj.bias is not None else 0.0)
    diff = (summed - projected).abs().max().item()
    bound = TOLERANCE * max(1.0, projected.abs().max().item())
    detail = f"sum of per-head results + bias = output projection of z, layer {layer}"
    if model.adapter.post_attn_norm:
        detail += "; attn_out is post_attention_norm of this sum (not linear in heads)"
    return _check("head_results_sum_to_attn_out", diff, detail, bound)


def _causality(model: InstrumentedModel, tokens: Tokens) -> Check:
    """Change the second-to-last token of an unpadded row: no earlier position may move."""
    changed_ids = tokens.input_ids.clone()
    cut = tokens.seq_len - 2
    changed_ids[0, cut] = (changed_ids[0, cut] + 1) % model.info.d_vocab
    changed = tokens_from_ids(changed_ids)
    sites = [Site(Component.RESID_POST, layer) for layer in range(model.n_layers)]
    a, b = model.run(tokens, capture=sites), model.run(changed, capture=sites)
    diff = max((a[s][:, :cut] - b[s][:, :cut]).abs().max().item() for s in sites)
    return _check(
        "later_tokens_never_change_earlier_positions",
        diff,
        f"token {cut} changed; resid_post of every layer at positions < {cut}",
        0.0,
    )


def _untouched(model: InstrumentedModel, tokens) -> Check:
    hooks = sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.hf_model.modules())
    return _check("no_hooks_left_on_hf_model", hooks, "forward and pre-forward hooks", 0.0)
