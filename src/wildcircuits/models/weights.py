"""Per-head weight views, for forwards in which every head reads its own input.

All views are expanded to query heads: under GQA, query head h uses the k / v rows of KV head
h // (n_heads // n_kv_heads), exactly as HF's `repeat_kv` pairs them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from wildcircuits.errors import UnsupportedArchitectureError
from wildcircuits.models.adapters import QKVLayout, get_module


@dataclass(frozen=True)
class HeadWeights:
    """W_q, W_k, W_v: (head, d_head, d_model); biases (head, d_head) or None; W_O (head, d_head,
    d_model); output bias (d_model,) or None."""

    w_q: torch.Tensor
    w_k: torch.Tensor
    w_v: torch.Tensor
    b_q: torch.Tensor | None
    b_k: torch.Tensor | None
    b_v: torch.Tensor | None
    w_o: torch.Tensor
    b_o: torch.Tensor | None

    @property
    def w_qkv(self) -> torch.Tensor:
        """(3 * head, d_head, d_model): q rows of every head, then k, then v."""
        return torch.cat([self.w_q, self.w_k, self.w_v])

    @property
    def b_qkv(self) -> torch.Tensor | None:
        if self.b_q is None and self.b_k is None and self.b_v is None:
            return None
        return torch.cat(
            [
                torch.zeros_like(self.w_q[..., 0]) if b is None else b
                for b in (self.b_q, self.b_k, self.b_v)
            ]
        )


def head_weights(model, layer: int) -> HeadWeights:
    """The layer's q, k, v, o weights split per (query) head."""
    adapter = model.adapter
    attn = get_module(model.layer_module(layer), adapter.attention)
    n_heads, n_kv, d_head, d_model = model.n_heads, model.n_kv_heads, model.d_head, model.d_model
    if adapter.qkv_layout is QKVLayout.SEPARATE:
        mods = [get_module(attn, name) for name in adapter.qkv]
        ws = [m.weight.reshape(-1, d_head, d_model) for m in mods]  # (heads, d_head, d_model)
        bs = [None if m.bias is None else m.bias.reshape(-1, d_head) for m in mods]
    elif adapter.qkv_layout is QKVLayout.FUSED_CONV1D:
        fused = get_module(attn, adapter.qkv[0])  # Conv1D: weight (d_model, 3 * d_model)
        ws = [w.T.reshape(n_heads, d_head, d_model) for w in fused.weight.split(d_model, dim=1)]
        bs = [b.reshape(n_heads, d_head) for b in fused.bias.split(d_model)]
    else:
        fused = get_module(attn, adapter.qkv[0])  # Linear, out features ordered (head, 3, d_head)
        weight = fused.weight.reshape(n_heads, 3, d_head, d_model)
        ws = [weight[:, i] for i in range(3)]
        bias = None if fused.bias is None else fused.bias.reshape(n_heads, 3, d_head)
        bs = [None if bias is None else bias[:, i] for i in range(3)]
    group = n_heads // n_kv
    if ws[1].shape[0] != n_heads:  # GQA: expand KV heads to the query heads that share them
        ws[1], ws[2] = (w.repeat_interleave(group, dim=0) for w in ws[1:])
        bs[1], bs[2] = (None if b is None else b.repeat_interleave(group, dim=0) for b in bs[1:])
    out_proj = get_module(attn, adapter.out_proj)
    return HeadWeights(*ws, *bs, model.out_weight(layer), out_proj.bias)


def project_heads(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """Per-head projection of per-head inputs.

    x: (batch, pos, head, d_model); weight: (head, d_head, d_model) -> (batch, pos, head, d_head).
    """
    out = torch.einsum("bphm,hdm->bphd", x, weight)
    return out if bias is None else out + bias


def rms_post_norm_factor(
    norm: nn.Module, total: torch.Tensor, weight_offset: float
) -> torch.Tensor:
    """Elementwise factor f with norm(total) = total * f, for an RMSNorm-type post-norm.

    f = rsqrt(mean(total^2) + eps) * (weight_offset + weight): (batch, pos, d_model). Applying
    the same f to each head's part of `total` splits the normed output into per-head parts that
    sum to it exactly (the scale is frozen from this run).
    """
    eps = getattr(norm, "eps", getattr(norm, "variance_epsilon", None))
    if eps is None or not hasattr(norm, "weight"):
        raise UnsupportedArchitectureError(
            f"cannot split the post-norm {type(norm).__name__} into per-head parts: "
            "only RMSNorm-type post-norms are supported"
        )
    scale = torch.rsqrt(total.float().pow(2).mean(-1, keepdim=True) + eps)
    return (scale * (weight_offset + norm.weight.float())).to(total.dtype)
