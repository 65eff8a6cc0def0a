"""A TransformerLens `TransformerBridge` (transformer-lens 4.x) around an already loaded HF model.

The bridge is an independent implementation of the same forward pass (it wraps the HF modules in its
own attention code and hook points), so agreement with it is a test oracle for our instrumentation.
Used by tests/test_oracle_transformer_lens.py; benchmarks may reuse it.

    from tests.tl_bridge import build_bridge
    hf_model, tokenizer, info = load_pretrained("smollm2-135m-instruct")
    bridge = build_bridge(hf_model, tokenizer)            # works offline
    logits, cache = bridge.run_with_cache(input_ids)      # pass token ids, never strings
    cache["blocks.3.attn.hook_pattern"]                   # (batch, head, q_pos, k_pos)
    cache["blocks.3.attn.hook_z"]                         # (batch, pos, head, d_head)
    cache["blocks.3.attn.hook_result"]                    # (batch, pos, head, d_model), no b_O

`boot_transformers` mutates the model and tokenizer it is given (it swaps submodules for bridge
components, forces eager attention, edits padding settings), so `build_bridge` hands it deep copies:
the caller's model, often a session-scoped test fixture, stays untouched.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

#: Hub name the bridge records for a model (the bridge loads nothing from it when given hf_model).
DEFAULT_HUB_NAME = "HuggingFaceTB/SmolLM2-135M-Instruct"


def bridge_tokenizer(tokenizer, hub_name: str):
    """A copy of `tokenizer` that the bridge accepts as-is, without reloading it from the hub.

    The bridge wants a tokenizer that prepends BOS; if `init_kwargs` does not say `add_bos_token`,
    it reloads one with `AutoTokenizer.from_pretrained(init_kwargs["name_or_path"], ...)`, which
    needs the hub. Recording both keys keeps our tokenizer. Its real behaviour is unchanged (the
    bridge then detects from an encoding whether it prepends BOS); callers pass token ids anyway.
    """
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.init_kwargs.setdefault("name_or_path", tokenizer.name_or_path or hub_name)
    tokenizer.init_kwargs["add_bos_token"] = True
    return tokenizer


def build_bridge(
    hf_model: nn.Module,
    tokenizer,
    hub_name: str = DEFAULT_HUB_NAME,
    device: str | torch.device | None = None,
    use_attn_result: bool = True,
):
    """A `TransformerBridge` over deep copies of `hf_model` and `tokenizer`, in raw-weight mode.

    No weight folding or centring (the bridge's default; not `enable_compatibility_mode`), so its
    activations are directly comparable with the HF model's. `use_attn_result=True` makes
    `blocks.{l}.attn.hook_result` fire with each head's output-projected contribution.
    """
    from transformer_lens.model_bridge import TransformerBridge

    if device is None:
        device = next(hf_model.parameters()).device
    bridge = TransformerBridge.boot_transformers(
        hub_name,
        hf_model=copy.deepcopy(hf_model),
        tokenizer=bridge_tokenizer(tokenizer, hub_name),
        device=device,
        dtype=next(hf_model.parameters()).dtype,
    )
    bridge.set_use_attn_result(use_attn_result)
    bridge.eval()
    return bridge


def hook_name(layer: int, what: str) -> str:
    """The bridge's cache key for an attention hook: `what` in pattern, z, result, attn_scores."""
    return f"blocks.{layer}.attn.hook_{what}"
