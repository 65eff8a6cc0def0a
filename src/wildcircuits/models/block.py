"""One transformer block, step by step: the single home of each family's block forward.

`Block` holds one decoder layer's HF modules, found once through the family's adapter, and runs
them in the order the HF eager forward does: attention norm, q / k / v projections, q / k norms
(Gemma3), rotary, scaled scores plus the mask, softmax, the value mix, the output projection,
the post-attention norm (Gemma3), then the MLP with its norms, on a sequential or parallel
(GPT-NeoX) residual stream. Every adapter-specific piece appears here and nowhere else.

`Block.forward` calls a `Visitor` at its visit points. The base `Visitor` runs the plain forward;
the instrumented model's visitor reads and replaces sites there (`models.instrumented`), and the
edge engine's gives each q / k / v and MLP receiver its own residual input, projects shared
inputs once, splits the attention output per head and reads / replaces sender outputs
(`patching.edge_state`).
"""

from __future__ import annotations

import importlib

import torch
from torch import nn
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from wildcircuits.models.adapters import ArchitectureAdapter, QKVLayout, get_module
from wildcircuits.models.info import ModelInfo
from wildcircuits.models.tokens import Tokens
from wildcircuits.models.weights import rms_post_norm_factor
from wildcircuits.patching.sites import Component


class Visitor:
    """The visit points of `Block.forward`. This base changes nothing: the plain forward."""

    def site(self, component: Component, layer: int, value: torch.Tensor) -> torch.Tensor:
        """Read or replace the value of site (component, layer); returns the value to use."""
        return value

    def wants(self, component: Component, layer: int) -> bool:
        """Whether `site` will look at (component, layer) (skips computing it otherwise)."""
        return False

    def changes(self, component: Component, layer: int) -> bool:
        """Whether `site` may replace the value at (component, layer)."""
        return False

    def qkv(self, block: Block, resid: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q (batch, pos, head, d_head) and k, v (batch, pos, head or kv_head, d_head), before
        the q / k norms and rotary, from the residual stream entering the block."""
        return block.project(self.site(Component.ATTN_IN, block.layer, block.attn_norm(resid)))

    def attention_out(self, block: Block, z: torch.Tensor) -> torch.Tensor:
        """The attention's output (batch, pos, d_model) from z (batch, pos, head, d_head)."""
        return block.attention_out(z, self)

    def mlp_input(self, block: Block, x: torch.Tensor) -> torch.Tensor:
        """The residual stream the MLP reads (batch, pos, d_model), before its norm."""
        return x

    #: The batch's first columns, already run (`patching.edge_prefix.Prefix`), or None.
    prefix = None

    def keys_values(self, block: Block, k: torch.Tensor, v: torch.Tensor) -> tuple:
        """The keys and values attention reads, from this run's k, v (batch, pos, kv_head,
        d_head): these themselves, or with the prefix's cached ones before them."""
        return (k, v) if self.prefix is None else self.prefix.keys_values(block.layer, k, v)


def project_qkv(adapter: ArchitectureAdapter, info: ModelInfo, attn: nn.Module, x: torch.Tensor):
    """q (batch, pos, head, d_head) and k, v (batch, pos, kv_head, d_head) from the attention
    module's own projections of x (batch, pos, d_model); no q / k norm, no rotary."""
    d_head = info.d_head
    if adapter.qkv_layout is QKVLayout.SEPARATE:
        q, k, v = (get_module(attn, name)(x) for name in adapter.qkv)
    elif adapter.qkv_layout is QKVLayout.FUSED_CONV1D:
        q, k, v = get_module(attn, adapter.qkv[0])(x).split(info.d_model, dim=-1)
    else:
        fused = get_module(attn, adapter.qkv[0])(x).view(*x.shape[:2], info.n_heads, 3 * d_head)
        q, k, v = fused.chunk(3, dim=-1)  # (batch, pos, head, d_head) each
    return tuple(t.reshape(*x.shape[:2], -1, d_head) for t in (q, k, v))


def attention_masks(config, layer_types, tokens: Tokens, resid: torch.Tensor) -> dict:
    """Additive masks (batch, 1, pos, kv_pos) per layer type ("full_attention" or
    "sliding_attention"), built by HF's own code from the batch's padding and positions."""
    masks = {}
    for layer_type in set(layer_types):
        sliding = layer_type == "sliding_attention"
        build = create_sliding_window_causal_mask if sliding else create_causal_mask
        mask = build(
            config=config,
            inputs_embeds=resid,
            attention_mask=tokens.attention_mask,
            cache=None,
            position_ids=tokens.position_ids,
        )
        masks[layer_type] = _additive(mask, resid, tokens)
    return masks


def _additive(mask, resid: torch.Tensor, tokens: Tokens) -> torch.Tensor:
    """HF returns an additive float mask for eager attention; normalise other forms to it."""
    if mask is None:  # HF skipped it: plain causal, no padding
        n = tokens.seq_len
        allowed = torch.ones(n, n, dtype=torch.bool, device=resid.device).tril()
        mask = allowed[None, None]
    if mask.dtype == torch.bool:
        zero = torch.zeros((), dtype=resid.dtype, device=resid.device)
        neg = torch.tensor(torch.finfo(resid.dtype).min, dtype=resid.dtype, device=resid.device)
        mask = torch.where(mask, zero, neg)
    return mask


def _optional(module: nn.Module, path: str | None) -> nn.Module | None:
    return get_module(module, path) if path else None


class Block:
    """Decoder layer `layer` of one model (see the module docstring).

    module: the HF decoder layer; info: the model's shapes; parallel: attention and MLP both
    read the block's input (GPT-NeoX) instead of the MLP reading resid_mid.
    """

    def __init__(
        self,
        module: nn.Module,
        adapter: ArchitectureAdapter,
        info: ModelInfo,
        layer: int,
        layer_type: str = "full_attention",
        parallel: bool = False,
    ):
        self.module, self.adapter, self.info = module, adapter, info
        self.layer, self.layer_type, self.parallel = layer, layer_type, parallel
        self.attn = get_module(module, adapter.attention)
        self.attn_norm = get_module(module, adapter.attn_norm)
        self.mlp_norm = get_module(module, adapter.mlp_norm)
        self.mlp = get_module(module, adapter.mlp)
        self.out_proj = get_module(self.attn, adapter.out_proj)
        self.post_attn = _optional(module, adapter.post_attn_norm)
        self.post_mlp = _optional(module, adapter.post_mlp_norm)
        self.qk_norm = tuple(get_module(self.attn, p) for p in adapter.qk_norm or ())
        get_module(self.attn, adapter.qkv[0])  # a wrong path raises now, not mid-forward
        self._rotary = None
        if adapter.rotary:
            self._rotary = importlib.import_module(type(self.attn).__module__)

    # attention ----------------------------------------------------------------------------------
    def project(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """q (batch, pos, head, d_head), k, v (batch, pos, kv_head, d_head) of the normed input
        x (batch, pos, d_model): the model's own projection modules, before q / k norms."""
        return project_qkv(self.adapter, self.info, self.attn, x)

    def norm_qk(self, q: torch.Tensor, k: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-head q / k norms (Gemma3); the identity for families without them."""
        if not self.qk_norm:
            return q, k
        return self.qk_norm[0](q), self.qk_norm[1](k)

    def apply_rotary(self, q: torch.Tensor, k: torch.Tensor, cos_sin) -> tuple:
        """Rotary embedding of q (batch, pos, head, d_head) and k (batch, pos, any, d_head)."""
        if cos_sin is None:
            return q, k
        cos, sin = cos_sin
        q, k = self._rotary.apply_rotary_pos_emb(q.transpose(1, 2), k.transpose(1, 2), cos, sin)
        return q.transpose(1, 2), k.transpose(1, 2)  # (batch, pos, head, d_head)

    def attend(self, q, k, v, mask: torch.Tensor, visitor: Visitor) -> torch.Tensor:
        """z (batch, pos, head, d_head) from q (batch, pos, head, d_head), k and v (batch,
        kv_pos, head or kv_head, d_head, repeated to the query heads under GQA) and the additive
        mask (batch, 1, pos, kv_pos); visits the scores and the pattern."""
        group = q.shape[2] // k.shape[2]
        if group > 1:
            k, v = (t.repeat_interleave(group, dim=2) for t in (k, v))  # (b, kv_pos, head, d)
        scores = torch.matmul(q.transpose(1, 2), k.permute(0, 2, 3, 1)) * self.attn.scaling
        scores = visitor.site(Component.ATTN_SCORES, self.layer, scores + mask)
        pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        pattern = visitor.site(Component.PATTERN, self.layer, pattern)  # (b, head, pos, kv_pos)
        return torch.matmul(pattern, v.transpose(1, 2)).transpose(1, 2)  # (b, pos, head, d)

    @property
    def out_weight(self) -> torch.Tensor:
        """Per-head output projection W_O: (head, d_head, d_model)."""
        weight = self.out_proj.weight
        if not self.adapter.out_proj_conv1d:
            weight = weight.T  # nn.Linear stores (d_model, head * d_head)
        return weight.reshape(self.info.n_heads, self.info.d_head, -1)

    def head_results(self, z: torch.Tensor) -> torch.Tensor:
        """Each head's output-projected contribution: (batch, pos, head, d_model), no bias."""
        return torch.einsum("bphd,hdm->bphm", z, self.out_weight)

    def attention_out(self, z: torch.Tensor, visitor: Visitor) -> torch.Tensor:
        """The exact HF output projection of z (plus the post-norm), visiting the per-head
        results; when they may change, the output is their sum (plus the bias, once)."""
        if visitor.changes(Component.RESULT, self.layer):
            result = visitor.site(Component.RESULT, self.layer, self.head_results(z))
            out = result.sum(dim=2)
            if self.out_proj.bias is not None:
                out = out + self.out_proj.bias
        else:
            if visitor.wants(Component.RESULT, self.layer):  # read only: keep the exact output
                visitor.site(Component.RESULT, self.layer, self.head_results(z))
            out = self.out_proj(z.reshape(*z.shape[:2], -1))
        return self.post_attn(out) if self.post_attn is not None else out

    def split_post_attn_norm(self, result: torch.Tensor) -> torch.Tensor:
        """Per-head results (batch, pos, head, d_model) times the post-norm factor of their sum
        (scale frozen from this run), so they sum to the normed output; the identity without a
        post-attention norm."""
        if self.post_attn is None:
            return result
        offset = self.adapter.post_norm_weight_offset
        factor = rms_post_norm_factor(self.post_attn, result.sum(dim=2), offset)
        return result * factor[:, :, None, :]

    # MLP and the residual stream ----------------------------------------------------------------
    def feed_forward(self, mlp_in: torch.Tensor) -> torch.Tensor:
        """MLP output (batch, pos, d_model) of its normed input, post-normed where the family
        does (Gemma3)."""
        out = self.mlp(mlp_in)
        return self.post_mlp(out) if self.post_mlp is not None else out

    def _mlp(self, x: torch.Tensor, visitor: Visitor) -> torch.Tensor:
        x = visitor.mlp_input(self, x)
        mlp_in = visitor.site(Component.MLP_IN, self.layer, self.mlp_norm(x))
        return visitor.site(Component.MLP_OUT, self.layer, self.feed_forward(mlp_in))

    def forward(self, resid: torch.Tensor, mask, cos_sin, visitor: Visitor) -> torch.Tensor:
        """resid_post (batch, pos, d_model) of resid_pre; mask (batch, 1, pos, kv_pos) and
        cos_sin (rotary, or None) are this layer type's."""
        layer, site = self.layer, visitor.site
        resid = site(Component.RESID_PRE, layer, resid)
        q, k, v = visitor.qkv(self, resid)
        q, k = self.apply_rotary(*self.norm_qk(q, k), cos_sin)
        q, k = site(Component.Q, layer, q), site(Component.K, layer, k)
        v = site(Component.V, layer, v)
        k, v = visitor.keys_values(self, k, v)
        z = site(Component.Z, layer, self.attend(q, k, v, mask, visitor))
        attn_out = site(Component.ATTN_OUT, layer, visitor.attention_out(self, z))
        if self.parallel:
            mlp_out = self._mlp(resid, visitor)
            return site(Component.RESID_POST, layer, mlp_out + attn_out + resid)
        mid = site(Component.RESID_MID, layer, resid + attn_out)
        return site(Component.RESID_POST, layer, mid + self._mlp(mid, visitor))
