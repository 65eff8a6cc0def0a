"""One declarative adapter per architecture family: canonical parts -> Hugging Face module paths.

The instrumented forward (instrumented.py) reads only these maps; adding a family means adding
one `ArchitectureAdapter` value here and a parity test, not another if/elif in the forward.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from torch import nn

from wildcircuits.errors import UnsupportedArchitectureError


class QKVLayout(StrEnum):
    """How the q, k, v projections are stored."""

    SEPARATE = "separate"  # three nn.Linear: q_proj, k_proj, v_proj
    FUSED_CONV1D = "fused_conv1d"  # GPT-2 c_attn: Conv1D, output [q | k | v] each (head, d_head)
    FUSED_PER_HEAD = "fused_per_head"  # GPT-NeoX query_key_value: output (head, [q | k | v])


@dataclass(frozen=True)
class ArchitectureAdapter:
    """Where each canonical part lives in one family's HF model.

    Paths are dotted attribute paths: top-level ones from the `*ForCausalLM` module, per-layer
    ones from a decoder layer, attention ones from the layer's attention module.
    """

    family: str
    # top level
    embed: str
    layers: str
    final_norm: str
    unembed: str
    pos_embed: str | None = None
    rotary: str | None = None
    rotary_takes_layer_type: bool = False
    # per layer
    attention: str = "self_attn"
    mlp: str = "mlp"
    attn_norm: str = "input_layernorm"
    mlp_norm: str = "post_attention_layernorm"
    post_attn_norm: str | None = None
    post_mlp_norm: str | None = None
    parallel_residual_flag: str | None = None  # config attribute that switches it on
    # attention
    qkv_layout: QKVLayout = QKVLayout.SEPARATE
    qkv: tuple[str, ...] = ("q_proj", "k_proj", "v_proj")
    out_proj: str = "o_proj"
    out_proj_conv1d: bool = False
    qk_norm: tuple[str, str] | None = None
    final_logit_softcap_flag: str | None = None  # config attribute holding the softcap
    post_norm_weight_offset: float = 0.0  # RMSNorm scale is (offset + weight); Gemma uses 1


_LLAMA_LIKE = dict(
    embed="model.embed_tokens",
    layers="model.layers",
    final_norm="model.norm",
    unembed="lm_head",
    rotary="model.rotary_emb",
)

ADAPTERS: dict[str, ArchitectureAdapter] = {
    "gpt2": ArchitectureAdapter(
        family="gpt2",
        embed="transformer.wte",
        pos_embed="transformer.wpe",
        layers="transformer.h",
        final_norm="transformer.ln_f",
        unembed="lm_head",
        attention="attn",
        attn_norm="ln_1",
        mlp_norm="ln_2",
        qkv_layout=QKVLayout.FUSED_CONV1D,
        qkv=("c_attn",),
        out_proj="c_proj",
        out_proj_conv1d=True,
    ),
    "gpt_neox": ArchitectureAdapter(
        family="gpt_neox",
        embed="gpt_neox.embed_in",
        layers="gpt_neox.layers",
        final_norm="gpt_neox.final_layer_norm",
        unembed="lm_head",
        rotary="gpt_neox.rotary_emb",
        attention="attention",
        parallel_residual_flag="use_parallel_residual",
        qkv_layout=QKVLayout.FUSED_PER_HEAD,
        qkv=("query_key_value",),
        out_proj="dense",
    ),
    "llama": ArchitectureAdapter(family="llama", **_LLAMA_LIKE),
    "qwen2": ArchitectureAdapter(family="qwen2", **_LLAMA_LIKE),
    "gemma3_text": ArchitectureAdapter(
        family="gemma3_text",
        **{**_LLAMA_LIKE, "rotary": "model.rotary_emb"},
        rotary_takes_layer_type=True,
        mlp_norm="pre_feedforward_layernorm",
        post_attn_norm="post_attention_layernorm",
        post_mlp_norm="post_feedforward_layernorm",
        qk_norm=("q_norm", "k_norm"),
        final_logit_softcap_flag="final_logit_softcapping",
        post_norm_weight_offset=1.0,
    ),
}
ADAPTERS["gemma3"] = ADAPTERS["gemma3_text"]


def adapter_for(model_type: str) -> ArchitectureAdapter:
    """The adapter of a family (`config.model_type`); unsupported families raise."""
    if model_type not in ADAPTERS:
        supported = ", ".join(sorted(k for k in ADAPTERS if k != "gemma3"))
        raise UnsupportedArchitectureError(
            f"architecture family {model_type!r} is not supported; supported families: {supported}"
        )
    return ADAPTERS[model_type]


def get_module(root: nn.Module, path: str) -> nn.Module:
    """Follow a dotted path; a wrong path raises instead of silently returning nothing."""
    module = root
    for part in path.split("."):
        if not hasattr(module, part):
            raise UnsupportedArchitectureError(
                f"{type(root).__name__} has no module {path!r} (missing {part!r}); "
                "the adapter does not match this model's layout"
            )
        module = getattr(module, part)
    return module
