"""The instrumented model: the unmodified HF model, run by our own loop over its submodules.

The loop calls the HF modules (embeddings, norms, projections, rotary, MLPs) in exactly the order
the HF eager forward does, so with no intervention the logits equal HF eager logits. Because the
loop is ours, every intermediate value is a `Site` that can be captured or changed, and a forward
can start at any layer from a cached residual stream.

Nothing here registers hooks or mutates the HF model: interventions are arguments of one call.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers.masking_utils import create_causal_mask, create_sliding_window_causal_mask

from wildcircuits.errors import SiteError
from wildcircuits.models.adapters import ArchitectureAdapter, QKVLayout, adapter_for, get_module
from wildcircuits.models.info import ModelInfo
from wildcircuits.models.tokens import Tokens, tokenize
from wildcircuits.patching.hooks import (
    Intervention,
    apply_interventions,
    check_site,
    selection_index,
)
from wildcircuits.patching.sites import Component, Site, parse_site

Key = tuple[Component, int | None]


@dataclass(frozen=True)
class RunResult:
    """Logits of a run and the captured sites.

    logits: (batch, pos, vocab), or (batch, vocab) when the run read only chosen positions,
    or None when logits were not requested.
    """

    logits: torch.Tensor | None
    cache: dict[Site, torch.Tensor] = field(default_factory=dict)

    def __getitem__(self, site: Site | str) -> torch.Tensor:
        site = parse_site(site) if isinstance(site, str) else site
        if site not in self.cache:
            raise SiteError(f"site {site} was not captured in this run; pass it in capture=")
        return self.cache[site]


class _Pass:
    """Per-call bookkeeping: which sites to capture and which to change."""

    def __init__(self, capture: Sequence[Site], interventions: Sequence[Intervention]):
        self.captured: dict[Site, torch.Tensor] = {}
        self.captures: dict[Key, list[Site]] = {}
        for site in capture:
            self.captures.setdefault(site.key, []).append(site)
        self.capture_keys = set(self.captures)
        self.changes: dict[Key, list[Intervention]] = {}
        for intervention in interventions:
            self.changes.setdefault(intervention.site.key, []).append(intervention)
        self.active = self.capture_keys | set(self.changes)

    def wants(self, component: Component, layer: int | None) -> bool:
        return (component, layer) in self.active

    def visit(self, component: Component, layer: int | None, value: torch.Tensor) -> torch.Tensor:
        """Apply interventions at this site, then record requested captures."""
        key = (component, layer)
        if key not in self.active:
            return value
        if key in self.changes:
            value = apply_interventions(value, self.changes[key])
        for site in self.captures.get(key, ()):
            self.captured[site] = _select(site, value)
        return value

    def changes_at(self, component: Component, layer: int | None) -> bool:
        return (component, layer) in self.changes


def _select(site: Site, value: torch.Tensor) -> torch.Tensor:
    """The captured part of a value; the full tensor itself (so autograd can reach it) if all."""
    if site.head is None and site.position is None:
        return value
    return value[selection_index(site, value.ndim)]


class InstrumentedModel:
    """A Hugging Face causal LM whose every activation can be read or replaced exactly."""

    def __init__(self, hf_model: nn.Module, tokenizer, info: ModelInfo):
        self.hf_model = hf_model
        self.tokenizer = tokenizer
        self.info = info
        self.config = hf_model.config
        self.adapter: ArchitectureAdapter = adapter_for(self.config.model_type)
        a = self.adapter
        self._embed = get_module(hf_model, a.embed)
        self._pos_embed = get_module(hf_model, a.pos_embed) if a.pos_embed else None
        self._layers = list(get_module(hf_model, a.layers))
        self._final_norm = get_module(hf_model, a.final_norm)
        self._unembed = get_module(hf_model, a.unembed)
        self._rotary = get_module(hf_model, a.rotary) if a.rotary else None
        self._apply_rotary = None
        if self._rotary is not None:
            attn_module = get_module(self._layers[0], a.attention)
            self._apply_rotary = importlib.import_module(type(attn_module).__module__)
        self.layer_types: list[str] = list(
            getattr(self.config, "layer_types", None) or ["full_attention"] * self.n_layers
        )
        self.parallel_residual = bool(
            a.parallel_residual_flag and getattr(self.config, a.parallel_residual_flag, False)
        )
        softcap_flag = a.final_logit_softcap_flag
        self.final_logit_softcap = (
            getattr(self.config, softcap_flag, None) if softcap_flag else None
        )

    # shapes ---------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return self.info.n_layers

    @property
    def n_heads(self) -> int:
        return self.info.n_heads

    @property
    def n_kv_heads(self) -> int:
        return self.info.n_kv_heads

    @property
    def d_model(self) -> int:
        return self.info.d_model

    @property
    def d_head(self) -> int:
        return self.info.d_head

    @property
    def device(self) -> torch.device:
        return next(self.hf_model.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.hf_model.parameters()).dtype

    # tokens ---------------------------------------------------------------------------------
    def tokenize(self, prompts: Sequence[str] | str, prepend_bos: bool | None = None) -> Tokens:
        """Right-padded batch on the model's device (see `wildcircuits.models.tokens`)."""
        return tokenize(self.tokenizer, prompts, prepend_bos).to(self.device)

    def to_str_tokens(self, ids: torch.Tensor | Sequence[int]) -> list[str]:
        """Each token id as its string."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return [self.tokenizer.decode([i]) for i in ids]

    # running --------------------------------------------------------------------------------
    def logits(self, tokens: Tokens, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Logits with no intervention: (batch, pos, vocab), or (batch, vocab) at `positions`."""
        return self.run(tokens, positions=positions).logits

    def run(
        self,
        tokens: Tokens,
        capture: Iterable[Site | str] = (),
        interventions: Iterable[Intervention] = (),
        positions: torch.Tensor | None = None,
        return_logits: bool = True,
        grad: bool = False,
        start_layer: int = 0,
        start_resid: torch.Tensor | None = None,
    ) -> RunResult:
        """One forward pass with captures and interventions, scoped to this call.

        positions: (batch,) per-example positions at which to compute logits (the LM head runs
        only there). start_layer / start_resid: begin at `resid_pre` of that layer with the given
        (batch, pos, d_model) residual, skipping the earlier layers. grad: keep the autograd graph
        (the embedding output requires grad, so any captured site can be differentiated).
        """
        capture = [parse_site(s) if isinstance(s, str) else s for s in capture]
        interventions = list(interventions)
        self._check(tokens, capture, interventions, start_layer, start_resid)
        state = _Pass(capture, interventions)
        with torch.set_grad_enabled(grad):
            logits = self._forward(
                tokens, state, positions, return_logits, grad, start_layer, start_resid
            )
        return RunResult(logits, state.captured)

    def _check(self, tokens, capture, interventions, start_layer, start_resid) -> None:
        sites = [*capture, *(i.site for i in interventions)]
        for site in sites:
            check_site(site, self.n_layers, self.n_heads, self.n_kv_heads, tokens.seq_len)
            if site.component is Component.POS_EMBED and self._pos_embed is None:
                raise SiteError(f"{site}: {self.adapter.family} has no positional embedding")
            if site.component is Component.RESID_MID and self.parallel_residual:
                raise SiteError(f"{site}: parallel attention+MLP blocks have no resid_mid")
            before_start = site.layer is None or site.layer < start_layer
            after_layers = site.component in (Component.FINAL_RESID, Component.LOGITS)
            if start_layer > 0 and before_start and not after_layers:
                raise SiteError(f"{site} comes before start_layer={start_layer}")
        if not 0 <= start_layer < self.n_layers:
            raise SiteError(f"start_layer {start_layer} out of range 0..{self.n_layers - 1}")
        if (start_layer > 0) != (start_resid is not None):
            raise SiteError("start_layer > 0 needs start_resid (the resid_pre of that layer)")

    def _forward(self, tokens, state, positions, return_logits, grad, start_layer, start_resid):
        tokens = tokens.to(self.device)
        if start_resid is None:
            resid = self._embed_tokens(tokens, state)  # (batch, pos, d_model)
        else:
            resid = start_resid.to(self.device)
        if grad and not resid.requires_grad:
            resid = resid.detach().requires_grad_(True)
        masks = self.attention_masks(tokens, resid)
        rotary = self.rotary_embeddings(tokens, resid)
        last = self._last_layer_needed(state, return_logits)
        for layer in range(start_layer, last + 1):
            resid = self._block(layer, resid, masks, rotary, state)
        if not return_logits and not state.wants(Component.FINAL_RESID, None):
            return None
        resid = state.visit(Component.FINAL_RESID, None, resid)
        if not return_logits:
            return None
        if positions is not None:
            rows = torch.arange(resid.shape[0], device=resid.device)
            resid = resid[rows, positions.to(resid.device)]  # (batch, d_model)
        return state.visit(Component.LOGITS, None, self.unembed(resid))

    def _last_layer_needed(self, state: _Pass, return_logits: bool) -> int:
        if return_logits or any(k[1] is None and k[0] is not Component.EMBED for k in state.active):
            return self.n_layers - 1
        layers = [k[1] for k in state.capture_keys if k[1] is not None]
        return max(layers, default=-1)

    def unembed(self, resid: torch.Tensor) -> torch.Tensor:
        """Final norm, unembedding and (if the family has it) logit softcapping."""
        logits = self._unembed(self._final_norm(resid))
        if self.final_logit_softcap is not None:
            cap = self.final_logit_softcap
            logits = torch.tanh(logits / cap) * cap
        return logits

    def apply_rotary(self, q: torch.Tensor, k: torch.Tensor, cos_sin: tuple) -> tuple:
        """Rotary embedding of q (batch, pos, head, d_head) and k (batch, pos, any, d_head)."""
        cos, sin = cos_sin
        q, k = self._apply_rotary.apply_rotary_pos_emb(
            q.transpose(1, 2), k.transpose(1, 2), cos, sin
        )
        return q.transpose(1, 2), k.transpose(1, 2)  # (batch, pos, head, d_head)

    def embed(self, tokens: Tokens) -> torch.Tensor:
        """Token (+ positional) embedding: resid_pre of layer 0, (batch, pos, d_model)."""
        return self._embed_tokens(tokens, _Pass((), ()))

    def _embed_tokens(self, tokens: Tokens, state: _Pass) -> torch.Tensor:
        resid = state.visit(Component.EMBED, None, self._embed(tokens.input_ids))
        if self._pos_embed is not None:
            pos = state.visit(Component.POS_EMBED, None, self._pos_embed(tokens.position_ids))
            resid = resid + pos
        return resid

    def attention_masks(self, tokens: Tokens, resid: torch.Tensor) -> dict[str, torch.Tensor]:
        """Additive masks (batch, 1, pos, kv_pos) per layer type, built by HF's own code."""
        masks = {}
        for layer_type in set(self.layer_types):
            build = (
                create_sliding_window_causal_mask
                if layer_type == "sliding_attention"
                else create_causal_mask
            )
            mask = build(
                config=self.config,
                inputs_embeds=resid,
                attention_mask=tokens.attention_mask,
                cache=None,
                position_ids=tokens.position_ids,
            )
            masks[layer_type] = _additive(mask, resid, tokens)
        return masks

    def rotary_embeddings(self, tokens: Tokens, resid: torch.Tensor) -> dict[str, tuple]:
        """(cos, sin) per layer type; empty for models without rotary embeddings."""
        if self._rotary is None:
            return {}
        if self.adapter.rotary_takes_layer_type:
            return {t: self._rotary(resid, tokens.position_ids, t) for t in set(self.layer_types)}
        cos_sin = self._rotary(resid, position_ids=tokens.position_ids)
        return {t: cos_sin for t in set(self.layer_types)}

    # one block ------------------------------------------------------------------------------
    def _block(self, layer: int, resid: torch.Tensor, masks, rotary, state: _Pass) -> torch.Tensor:
        a = self.adapter
        block = self._layers[layer]
        resid = state.visit(Component.RESID_PRE, layer, resid)
        attn_in = state.visit(Component.ATTN_IN, layer, get_module(block, a.attn_norm)(resid))
        layer_type = self.layer_types[layer]
        attn_out = self._attention(layer, attn_in, masks[layer_type], rotary.get(layer_type), state)
        if self.parallel_residual:
            mlp_in = state.visit(Component.MLP_IN, layer, get_module(block, a.mlp_norm)(resid))
            mlp_out = state.visit(Component.MLP_OUT, layer, self._mlp(block, mlp_in))
            post = mlp_out + attn_out + resid
            return state.visit(Component.RESID_POST, layer, post)
        mid = state.visit(Component.RESID_MID, layer, resid + attn_out)
        mlp_in = state.visit(Component.MLP_IN, layer, get_module(block, a.mlp_norm)(mid))
        mlp_out = state.visit(Component.MLP_OUT, layer, self._mlp(block, mlp_in))
        return state.visit(Component.RESID_POST, layer, mid + mlp_out)

    def _mlp(self, block: nn.Module, mlp_in: torch.Tensor) -> torch.Tensor:
        out = get_module(block, self.adapter.mlp)(mlp_in)
        if self.adapter.post_mlp_norm:
            out = get_module(block, self.adapter.post_mlp_norm)(out)
        return out

    def _attention(self, layer, attn_in, mask, cos_sin, state: _Pass) -> torch.Tensor:
        """Eager attention on the layer's own weights; returns attn_out (batch, pos, d_model)."""
        block = self._layers[layer]
        attn = get_module(block, self.adapter.attention)
        q, k, v = self.project_qkv(attn, attn_in)  # (batch, pos, head|kv_head, d_head)
        if cos_sin is not None:
            q, k = self.apply_rotary(q, k, cos_sin)
        q = state.visit(Component.Q, layer, q)
        k = state.visit(Component.K, layer, k)
        v = state.visit(Component.V, layer, v)
        group = self.n_heads // self.n_kv_heads
        k_all = (
            k.repeat_interleave(group, dim=2) if group > 1 else k
        )  # (batch, kv_pos, head, d_head)
        v_all = v.repeat_interleave(group, dim=2) if group > 1 else v
        scores = torch.matmul(q.transpose(1, 2), k_all.permute(0, 2, 3, 1)) * attn.scaling
        scores = state.visit(
            Component.ATTN_SCORES, layer, scores + mask
        )  # (batch, head, pos, kv_pos)
        pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        pattern = state.visit(Component.PATTERN, layer, pattern)
        z = torch.matmul(pattern, v_all.transpose(1, 2)).transpose(
            1, 2
        )  # (batch, pos, head, d_head)
        z = state.visit(Component.Z, layer, z)
        out_proj = get_module(attn, self.adapter.out_proj)
        if state.changes_at(Component.RESULT, layer):
            # Changed per-head results: the output is their sum (plus the bias, once).
            result = state.visit(Component.RESULT, layer, self.head_results(layer, z))
            attn_out = result.sum(dim=2)
            if out_proj.bias is not None:
                attn_out = attn_out + out_proj.bias
        else:
            if state.wants(Component.RESULT, layer):  # captured only: keep the exact output
                state.visit(Component.RESULT, layer, self.head_results(layer, z))
            attn_out = out_proj(z.reshape(*z.shape[:2], -1))
        if self.adapter.post_attn_norm:
            attn_out = get_module(block, self.adapter.post_attn_norm)(attn_out)
        return state.visit(Component.ATTN_OUT, layer, attn_out)

    def project_qkv(self, attn: nn.Module, x: torch.Tensor):
        """q (batch, pos, head, d_head) and k, v (batch, pos, kv_head, d_head), before rotary."""
        a, d_head = self.adapter, self.d_head
        if a.qkv_layout is QKVLayout.SEPARATE:
            q, k, v = (get_module(attn, name)(x) for name in a.qkv)
        elif a.qkv_layout is QKVLayout.FUSED_CONV1D:
            q, k, v = get_module(attn, a.qkv[0])(x).split(self.d_model, dim=-1)
        else:
            fused = get_module(attn, a.qkv[0])(x).view(*x.shape[:2], self.n_heads, 3 * d_head)
            q, k, v = fused.chunk(3, dim=-1)  # (batch, pos, head, d_head) each
        q, k, v = (t.reshape(*x.shape[:2], -1, d_head) for t in (q, k, v))
        if a.qk_norm:
            q = get_module(attn, a.qk_norm[0])(q)
            k = get_module(attn, a.qk_norm[1])(k)
        return q, k, v

    def head_results(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """Each head's output-projected contribution: (batch, pos, head, d_model), no bias."""
        return torch.einsum("bphd,hdm->bphm", z, self.out_weight(layer))

    def out_weight(self, layer: int) -> torch.Tensor:
        """Per-head output projection W_O: (head, d_head, d_model)."""
        attn = get_module(self._layers[layer], self.adapter.attention)
        weight = get_module(attn, self.adapter.out_proj).weight
        if not self.adapter.out_proj_conv1d:
            weight = weight.T  # nn.Linear stores (d_model, head * d_head)
        return weight.reshape(self.n_heads, self.d_head, -1)

    def layer_module(self, layer: int) -> nn.Module:
        return self._layers[layer]


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
