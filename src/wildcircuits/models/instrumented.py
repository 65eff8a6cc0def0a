"""The instrumented model: the unmodified HF model, run by our own loop over its submodules.

The loop calls the HF modules (embeddings, norms, projections, rotary, MLPs) in exactly the order
the HF eager forward does, so with no intervention the logits equal HF eager logits. Because the
loop is ours, every intermediate value is a `Site` that can be captured or changed, and a forward
can start at any layer from a cached residual stream.

Nothing here registers hooks or mutates the HF model: interventions are arguments of one call.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from wildcircuits.errors import SiteError, WildcircuitsError
from wildcircuits.models.adapters import ArchitectureAdapter, adapter_for, get_module
from wildcircuits.models.block import Block, Visitor, attention_masks
from wildcircuits.models.info import ModelInfo
from wildcircuits.models.tokens import Batch, Tokens, as_tokens, tokenize
from wildcircuits.patching.hooks import (
    Intervention,
    apply_interventions,
    check_site,
    selection_index,
)
from wildcircuits.patching.sites import Component, Site, parse_site
from wildcircuits.tasks.metrics import at_positions

Key = tuple[Component, int | None]


@dataclass(frozen=True)
class RunResult:
    """Logits of a run and the captured sites.

    logits: (batch, pos, vocab), or (batch, vocab) / (batch, k, vocab) when the run read only
    chosen positions ((batch,) / (batch, k)), or None when logits were not requested.
    """

    logits: torch.Tensor | None
    cache: dict[Site, torch.Tensor] = field(default_factory=dict)

    def __getitem__(self, site: Site | str) -> torch.Tensor:
        site = parse_site(site) if isinstance(site, str) else site
        if site not in self.cache:
            raise SiteError(f"site {site} was not captured in this run; pass it in capture=")
        return self.cache[site]


@dataclass(frozen=True)
class _Request:
    """What one `InstrumentedModel.run` computes (its arguments, checked, tokens tokenized)."""

    tokens: Tokens
    positions: torch.Tensor | None = None
    return_logits: bool = True
    grad: bool = False
    start_layer: int = 0
    start_resid: torch.Tensor | None = None
    prefix: Any = None  # patching.edge_prefix.Prefix: columns before `tokens`, already run


class _Pass(Visitor):
    """Per-call bookkeeping: which sites to capture and which to change (the block's visitor)."""

    def __init__(
        self, capture: Sequence[Site], interventions: Sequence[Intervention], prefix: Any = None
    ):
        self.captured: dict[Site, torch.Tensor] = {}
        self.captures: dict[Key, list[Site]] = {}
        for site in capture:
            self.captures.setdefault(site.key, []).append(site)
        self.capture_keys = set(self.captures)
        self.edits: dict[Key, list[Intervention]] = {}
        for intervention in interventions:
            self.edits.setdefault(intervention.site.key, []).append(intervention)
        self.active = self.capture_keys | set(self.edits)
        self.prefix = prefix

    def wants(self, component: Component, layer: int | None) -> bool:
        return (component, layer) in self.active

    def site(self, component: Component, layer: int | None, value: torch.Tensor) -> torch.Tensor:
        """Apply interventions at this site, then record requested captures."""
        key = (component, layer)
        if key not in self.active:
            return value
        if key in self.edits:
            value = apply_interventions(value, self.edits[key])
        for site in self.captures.get(key, ()):
            self.captured[site] = _select(site, value)
        return value

    def changes(self, component: Component, layer: int | None) -> bool:
        return (component, layer) in self.edits


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
        self.layer_types: list[str] = list(
            getattr(self.config, "layer_types", None) or ["full_attention"] * self.n_layers
        )
        self.parallel_residual = bool(
            a.parallel_residual_flag and getattr(self.config, a.parallel_residual_flag, False)
        )
        self.blocks = [
            Block(module, a, info, layer=layer, layer_type=self.layer_types[layer],
                  parallel=self.parallel_residual)
            for layer, module in enumerate(self._layers)
        ]  # fmt: skip
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
        if self.tokenizer is None:
            raise WildcircuitsError(
                f"{self.info.model_id} has no tokenizer, so prompt strings cannot be run; pass "
                "token ids instead (wildcircuits.models.tokens_from_ids)"
            )
        return tokenize(self.tokenizer, prompts, prepend_bos).to(self.device)

    def as_tokens(self, batch: Batch) -> Tokens:
        """`Tokens`, token ids or prompt strings as `Tokens` (see `models.tokens.as_tokens`)."""
        return as_tokens(batch, self.tokenize)

    def to_str_tokens(self, ids: torch.Tensor | Sequence[int]) -> list[str]:
        """Each token id as its string."""
        ids = ids.tolist() if isinstance(ids, torch.Tensor) else list(ids)
        return [self.tokenizer.decode([i]) for i in ids]

    # running --------------------------------------------------------------------------------
    def logits(self, tokens: Batch, positions: torch.Tensor | None = None) -> torch.Tensor:
        """Logits with no intervention: (batch, pos, vocab), or at `positions` (batch,) /
        (batch, k): (batch, vocab) / (batch, k, vocab)."""
        return self.run(tokens, positions=positions).logits

    def run(
        self,
        tokens: Batch,
        capture: Iterable[Site | str] = (),
        interventions: Iterable[Intervention] = (),
        positions: torch.Tensor | None = None,
        return_logits: bool = True,
        grad: bool = False,
        start_layer: int = 0,
        start_resid: torch.Tensor | None = None,
        prefix=None,
    ) -> RunResult:
        """One forward pass with captures and interventions, scoped to this call.

        tokens: a `Tokens` batch, token ids, or prompt strings (see `as_tokens`).
        positions: (batch,) per-example positions at which to compute logits (the LM head runs
        only there), or (batch, k) for a metric read at k positions per row (logits (batch, k,
        vocab)). start_layer / start_resid: begin at `resid_pre` of that layer with the given
        (batch, pos, d_model) residual, skipping the earlier layers. grad: keep the autograd graph
        (the embedding output requires grad, so any captured site can be differentiated).
        prefix: a `patching.edge_prefix.Prefix` of this batch's first columns, which no
        intervention here changes: `tokens` (stacked copies of `prefix.tokens` allowed),
        `start_resid`, `positions` and every intervention's values are then the later columns'
        only, and attention also reads the prefix's keys and values.
        """
        request = _Request(
            self.as_tokens(tokens), positions=positions, return_logits=return_logits, grad=grad,
            start_layer=start_layer, start_resid=start_resid, prefix=prefix,
        )  # fmt: skip
        capture = [parse_site(s) if isinstance(s, str) else s for s in capture]
        interventions = list(interventions)
        self._check(request, [*capture, *(i.site for i in interventions)])
        state = _Pass(capture, interventions, prefix)
        with torch.set_grad_enabled(grad):
            logits = self._forward(request, state)
        return RunResult(logits, state.captured)

    def _check(self, request: _Request, sites: list[Site]) -> None:
        start_layer, seq_len = request.start_layer, request.tokens.seq_len
        for site in sites:
            check_site(site, self.n_layers, self.n_heads, self.n_kv_heads, seq_len)
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
        if (start_layer > 0) != (request.start_resid is not None):
            raise SiteError("start_layer > 0 needs start_resid (the resid_pre of that layer)")
        if request.prefix is not None:
            positioned = [s for s in sites if s.position is not None]
            if positioned or any(s.component is Component.PATTERN for s in sites):
                raise SiteError(
                    f"{(positioned or sites)[0]}: with a shared prefix, sites cannot name a "
                    "position or the attention pattern (their columns are not the run's); "
                    "pass prefix=None"
                )

    def _forward(self, request: _Request, state: _Pass) -> torch.Tensor | None:
        tokens, return_logits = request.tokens.to(self.device), request.return_logits
        if request.start_resid is None:
            resid = self._embed_tokens(tokens, state)  # (batch, pos, d_model)
        else:
            resid = request.start_resid.to(self.device)
        if request.grad and not resid.requires_grad:
            resid = resid.detach().requires_grad_(True)
        if request.prefix is None:
            masks = self.attention_masks(tokens, resid)
        else:
            masks = request.prefix.masks_for(tokens.batch)
        rotary = self.rotary_embeddings(tokens, resid)
        last = self._last_layer_needed(state, return_logits)
        for block in self.blocks[request.start_layer : last + 1]:
            resid = block.forward(
                resid, masks[block.layer_type], rotary.get(block.layer_type), state
            )
        if not return_logits and not state.wants(Component.FINAL_RESID, None):
            return None
        resid = state.site(Component.FINAL_RESID, None, resid)
        if not return_logits:
            return None
        if request.positions is not None:
            resid = at_positions(resid, request.positions)  # (batch, [k,] d_model)
        return state.site(Component.LOGITS, None, self.unembed(resid))

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
        return self.blocks[0].apply_rotary(q, k, cos_sin)

    def embed(self, tokens: Tokens) -> torch.Tensor:
        """Token (+ positional) embedding: resid_pre of layer 0, (batch, pos, d_model)."""
        return self._embed_tokens(tokens, _Pass((), ()))

    def _embed_tokens(self, tokens: Tokens, state: _Pass) -> torch.Tensor:
        resid = state.site(Component.EMBED, None, self._embed(tokens.input_ids))
        if self._pos_embed is not None:
            pos = state.site(Component.POS_EMBED, None, self._pos_embed(tokens.position_ids))
            resid = resid + pos
        return resid

    def attention_masks(self, tokens: Tokens, resid: torch.Tensor) -> dict[str, torch.Tensor]:
        """Additive masks (batch, 1, pos, kv_pos) per layer type, built by HF's own code."""
        return attention_masks(self.config, self.layer_types, tokens, resid)

    def rotary_embeddings(self, tokens: Tokens, resid: torch.Tensor) -> dict[str, tuple]:
        """(cos, sin) per layer type; empty for models without rotary embeddings."""
        if self._rotary is None:
            return {}
        if self.adapter.rotary_takes_layer_type:
            return {t: self._rotary(resid, tokens.position_ids, t) for t in set(self.layer_types)}
        cos_sin = self._rotary(resid, position_ids=tokens.position_ids)
        return {t: cos_sin for t in set(self.layer_types)}

    # per-layer views (the block itself lives in `models.block`) -------------------------------
    def project_qkv(self, attn: nn.Module, x: torch.Tensor):
        """q (batch, pos, head, d_head) and k, v (batch, pos, kv_head, d_head) of the attention
        module `attn` from x (batch, pos, d_model), q / k norms applied, before rotary."""
        block = next((b for b in self.blocks if b.attn is attn), None)
        if block is None:
            raise WildcircuitsError(
                f"{type(attn).__name__} is not an attention module of this model"
            )
        q, k, v = block.project(x)
        return (*block.norm_qk(q, k), v)

    def head_results(self, layer: int, z: torch.Tensor) -> torch.Tensor:
        """Each head's output-projected contribution: (batch, pos, head, d_model), no bias."""
        return self.blocks[layer].head_results(z)

    def out_weight(self, layer: int) -> torch.Tensor:
        """Per-head output projection W_O: (head, d_head, d_model)."""
        return self.blocks[layer].out_weight

    def layer_module(self, layer: int) -> nn.Module:
        return self._layers[layer]
