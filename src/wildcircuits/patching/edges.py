"""Exact edge patching in one forward pass, and receiver gradients for edge attribution.

Every receiver (a head's q / k / v slot, an MLP, the logits) reads its own copy of the residual
stream: the sum of its senders' outputs. Ablating the edges outside a circuit adds, for each
receiver v, sum over its ablated in-edges (u -> v) of (a_u - z_u), where z_u is u's output in
this (patched) run and a_u the ablation value (corrupted run, mean or zero). Upstream changes
propagate, so evaluating any circuit costs one patched forward once the ablation outputs exist.

Sender outputs are what each node writes into the residual stream: the embeddings for `input`,
each head's output-projected result, each MLP's output. Gemma3 normalises the attention sum and
the MLP output before adding them (post-norms): a head's output is then its result times the
post-norm factor of *this run's* sum (scale frozen from the run), so head outputs still sum to
the block's real contribution. The same convention holds in every run, so the full circuit gives
the clean run and the empty circuit the corrupted run exactly (up to float rounding).

Cost: for each receiver group the engine sums whichever side of its in-edges is smaller (ablated
or kept; the rest comes from running prefix sums), and a layer no ablated edge touches, like every
layer of a gradient run, normalises and projects its shared input once (`edge_parts`).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from wildcircuits.errors import WildcircuitsError
from wildcircuits.graph.graph import Graph
from wildcircuits.models.adapters import get_module
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.models.tokens import Tokens
from wildcircuits.models.weights import head_weights, project_heads, rms_post_norm_factor
from wildcircuits.patching.edge_parts import (
    EdgeRun,
    GradLeaf,
    Resume,
    shared_projection,
    shared_qkv,
)
from wildcircuits.patching.edge_senders import SenderOutputs

__all__ = ["EdgeForward", "EdgeRun", "Resume"]


class EdgeForward:
    """Forward passes of `model` over the edge graph (see the module docstring)."""

    def __init__(self, model: InstrumentedModel, graph: Graph | None = None):
        self.model = model
        self.graph = graph or Graph.for_model(model)
        if (self.graph.n_layers, self.graph.n_heads) != (model.n_layers, model.n_heads):
            raise WildcircuitsError(
                f"graph ({self.graph.describe()}) does not match {model.info.model_id} "
                f"({model.n_layers} layers x {model.n_heads} heads)"
            )
        self._weights = [head_weights(model, layer) for layer in range(model.n_layers)]
        # q, k, v of every head in one (3 * head, d_head, d_model) stack: one einsum per layer.
        self._qkv = [(w.w_qkv, w.b_qkv) for w in self._weights]
        # the same from one shared input: q of every head, k and v once per KV head (GQA)
        self._qkv_shared = [shared_projection(w, model.n_heads // model.n_kv_heads)
                            for w in self._weights]  # fmt: skip
        post = model.adapter.post_attn_norm
        if post and any(w.b_o is not None for w in self._weights):
            raise WildcircuitsError("a post-attention norm with an output bias is not supported")

    # public -------------------------------------------------------------------------------------
    def run(
        self,
        tokens: Tokens,
        positions: torch.Tensor,
        ablated: torch.Tensor | None = None,
        ablation: torch.Tensor | None = None,
        keep_outputs: bool = False,
        input_embeds: torch.Tensor | None = None,
        override: Mapping[int, torch.Tensor] | None = None,
    ) -> EdgeRun:
        """One forward with the edges marked in `ablated` (receiver, sender) ablated to
        `ablation` (batch or 1, pos, sender, d_model) sender outputs. No gradients."""
        ablated = self._prepare(ablated, ablation)
        with torch.no_grad():
            state = _State(self, tokens, ablated, ablation, None, input_embeds, override)
            logits = state.forward(positions, keep_outputs or ablated is not None)
        return EdgeRun(logits, state.outputs if keep_outputs else None)

    def receiver_gradients(
        self,
        tokens: Tokens,
        positions: torch.Tensor,
        objective,
        input_embeds: torch.Tensor | None = None,
        override: Mapping[int, torch.Tensor] | None = None,
        keep_outputs: bool = False,
        start: Resume | None = None,
        accumulate: torch.Tensor | None = None,
    ) -> EdgeRun:
        """d objective(logits) / d (each receiver's input), one backward for all receivers.

        objective: (batch, vocab) logits at `positions` -> scalar. With `start` (a `state_at`
        of the same unpatched run), the forward resumes there: receivers before `start.layer`
        get zero gradients, which is exact when `override` only replaces senders at or after
        that layer (nothing before it can then reach the objective differently). With
        `accumulate` ((batch, pos, receiver, d_model)), the gradients are added into it in place
        (no new (batch, pos, receiver, d_model) tensor; integrated gradients sum over steps) and
        it is returned as `receiver_grads`.
        """
        state = _State(self, tokens, None, None, True, input_embeds, override)
        with torch.enable_grad():
            logits = state.forward(positions, keep_outputs, start=start)
            leaves = [leaf.tensor for leaf in state.leaves]
            # materialize: receivers whose only path runs through an override get zeros
            grads = torch.autograd.grad(objective(logits), leaves, materialize_grads=True)
        batch, pos = tokens.input_ids.shape
        grads = [
            leaf.receiver_grads(g).reshape(batch, pos, -1, self.model.d_model)
            for leaf, g in zip(state.leaves, grads, strict=True)
        ]
        skipped = self.graph.first_receiver(start.layer) if start is not None else 0
        if accumulate is not None:
            row = skipped
            for part in grads:
                accumulate[:, :, row : row + part.shape[2]] += part
                row += part.shape[2]
            grads = accumulate
        else:
            if skipped:
                grads.insert(0, grads[0].new_zeros(batch, pos, skipped, self.model.d_model))
            grads = torch.cat(grads, dim=2)
        return EdgeRun(logits.detach(), state.outputs if keep_outputs else None, grads)

    def outputs(self, tokens: Tokens, input_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Sender outputs of an unpatched run: (batch, pos, sender, d_model)."""
        positions = tokens.last_index
        return self.run(tokens, positions, keep_outputs=True, input_embeds=input_embeds).outputs

    def state_at(
        self,
        tokens: Tokens,
        layer: int,
        ablated: torch.Tensor | None = None,
        ablation: torch.Tensor | None = None,
    ) -> Resume:
        """The state of a (patched) run at the start of `layer` (no gradients); `layer` may be
        n_layers: the state the logits receiver reads."""
        mask = self._prepare(ablated, ablation)
        with torch.no_grad():
            state = _State(self, tokens, mask, ablation, None, None, None)
            state.forward(tokens.last_index, True, stop=layer)
        return state.resume

    def run_from(
        self,
        start: Resume,
        tokens: Tokens,
        positions: torch.Tensor,
        ablated: torch.Tensor | None = None,
        ablation: torch.Tensor | None = None,
        extra: Mapping[int, torch.Tensor] | None = None,
        copies: int = 1,
    ) -> torch.Tensor:
        """Logits (copies * batch, vocab) of a run resumed from `start`, with the edges in
        `ablated` ablated and `extra[receiver row]` ((copies * batch, pos, d_model)) added to
        those receivers' inputs. Valid when `ablated` agrees with the run that made `start` on
        every receiver before `start.layer`. `start`, `tokens`, `positions` and `ablation` are
        for one batch; with `copies` > 1 the run stacks that many copies of it (copy-major),
        which differ only through `extra`. `start` is read, never written."""
        mask = self._prepare(ablated, ablation)
        with torch.no_grad():
            state = _State(self, tokens, mask, ablation, None, None, None, extra)
            return state.forward(positions, True, start=start, copies=copies)

    def _prepare(self, ablated, ablation):
        if (ablated is None) != (ablation is None):
            raise WildcircuitsError("pass both `ablated` (edge mask) and `ablation` (values)")
        if ablated is None:
            return None
        self._check_mask(ablated)
        return (ablated & self.graph.valid.to(ablated.device)).to(self.model.dtype)

    def _check_mask(self, ablated: torch.Tensor) -> None:
        shape = (self.graph.n_receivers, self.graph.n_senders)
        if tuple(ablated.shape) != shape or ablated.dtype != torch.bool:
            raise WildcircuitsError(
                f"edge mask must be a bool tensor of shape {shape} (receiver, sender); got "
                f"{ablated.dtype} {tuple(ablated.shape)}"
            )


class _State:
    """One edge forward: running residual, sender outputs so far, receiver leaves."""

    def __init__(
        self,
        engine: EdgeForward,
        tokens,
        ablated,
        ablation,
        grad,
        input_embeds,
        override,
        extra=None,
    ):
        self.engine, self.model, self.graph = engine, engine.model, engine.graph
        self.tokens = tokens.to(self.model.device)
        self.ablated, self.ablation = ablated, ablation
        self.grad = bool(grad)
        self.input_embeds = input_embeds
        self.override = dict(override or {})
        self.extra = dict(extra or {})
        self.leaves: list[GradLeaf] = []
        self.senders: SenderOutputs | None = None
        self.resume: Resume | None = None

    @property
    def outputs(self) -> torch.Tensor | None:
        """(rows, pos, sender, d_model) sender outputs of this run, if kept."""
        return None if self.senders is None else self.senders.full()

    def forward(
        self,
        positions: torch.Tensor,
        keep_outputs: bool,
        start: Resume | None = None,
        stop: int | None = None,
        copies: int = 1,
    ) -> torch.Tensor | None:
        """Logits (batch, vocab) at `positions`; with `stop`, record `self.resume` at the start
        of that layer and return None; with `start`, resume from a recorded state (`copies`
        stacked copies of it, see `EdgeForward.run_from`)."""
        model, graph = self.model, self.graph
        if start is None:
            resid = self.input_embeds if self.input_embeds is not None else model.embed(self.tokens)
            resid = self._override(0, resid)
            first = 0
            if keep_outputs:
                self.senders = SenderOutputs.fresh(
                    resid, graph.n_senders, self.ablated, self.ablation
                )
                self._store(0, resid)
        else:
            resid, first = start.resid, start.layer
            if copies > 1:
                resid = resid.repeat(copies, 1, 1)
                self.tokens = self.tokens.repeat(copies)
                positions = positions.repeat(copies)
            if keep_outputs:
                self.senders = SenderOutputs.resumed(
                    start.outputs, graph.first_sender(first), copies, self.ablated, self.ablation
                )
        batch = resid.shape[0]
        masks = model.attention_masks(self.tokens, resid)
        rotary = model.rotary_embeddings(self.tokens, resid)
        for layer in range(first, model.n_layers):
            if layer == stop:
                self.resume = Resume(layer, resid, self.outputs)
                return None
            layer_type = model.layer_types[layer]
            resid = self._block(layer, resid, masks[layer_type], rotary.get(layer_type))
        if stop == model.n_layers:  # the state the logits receiver reads from
            self.resume = Resume(stop, resid, self.outputs)
            return None
        resid = self._receive(resid, graph.logits_receiver, graph.n_senders)
        rows = torch.arange(batch, device=resid.device)
        return model.unembed(resid[rows, positions.to(resid.device)])  # (batch, vocab)

    # receivers --------------------------------------------------------------------------------
    def _receive(self, x: torch.Tensor, rows: slice | int, n_up: int) -> torch.Tensor:
        """x: the receivers' shared input (batch, pos, [1,] d_model) plus their own deltas."""
        if self.ablated is not None:
            delta = self.senders.delta(rows, n_up)
            if delta is not None:
                x = x + delta
        if self.extra:
            x = self._add_extra(x, rows)
        if self.grad:
            leaf = torch.zeros_like(x, requires_grad=True)
            self.leaves.append(GradLeaf(leaf))
            x = x + leaf
        return x

    def _untouched(self, rows: slice, n_up: int) -> bool:
        """True when no receiver in `rows` has an ablated in-edge or an extra input."""
        if self.ablated is not None and bool(self.ablated[rows, :n_up].any()):
            return False
        return not any(rows.start <= row < rows.stop for row in self.extra)

    def _add_extra(self, x: torch.Tensor, rows: slice | int) -> torch.Tensor:
        """Add `extra[row]` to the inputs of the receivers in `rows` that have one."""
        if isinstance(rows, int):
            return x + self.extra[rows] if rows in self.extra else x
        hits = [
            (row - rows.start, v) for row, v in self.extra.items() if rows.start <= row < rows.stop
        ]
        if not hits:
            return x
        add = torch.zeros_like(x)  # (batch, pos, receivers, d_model)
        for index, value in hits:
            add[:, :, index] += value
        return x + add

    def _override(self, sender: int, value: torch.Tensor) -> torch.Tensor:
        return self.override.get(sender, value)

    def _store(self, senders: slice | int, value: torch.Tensor) -> None:
        if self.senders is not None:
            self.senders.store(senders, value.detach() if self.grad else value)

    # one block --------------------------------------------------------------------------------
    def _block(self, layer: int, resid: torch.Tensor, mask, cos_sin) -> torch.Tensor:
        model, graph = self.model, self.graph
        block = model.layer_module(layer)
        n_heads = model.n_heads
        rows = graph.attention_receivers(layer)
        attn_norm = get_module(block, model.adapter.attn_norm)
        n_up = graph.first_sender(layer)
        if self._untouched(rows, n_up):
            # every q / k / v receiver reads `resid` itself: one shared norm (in gradient runs
            # the per-receiver gradients come from the projection leaves, see GradLeaf)
            normed = attn_norm(resid)  # (batch, pos, d_model)
        else:
            shared = resid[:, :, None, :].expand(-1, -1, 3 * n_heads, -1)  # (b, pos, 3*head, d)
            x = self._receive(shared, rows, n_up)
            normed = attn_norm(x)  # (batch, pos, 3 * head, d_model)
        contributions, attn_out = self._attention(
            layer, block, normed, mask, cos_sin, norm=(attn_norm, resid)
        )
        self._store(graph.head_senders(layer), contributions)
        mid = resid + attn_out
        mlp_row = graph.mlp_receiver(layer)
        mlp_in = resid if model.parallel_residual else mid
        mlp_in = self._receive(mlp_in, mlp_row, graph.n_upstream(graph.receivers[mlp_row]))
        mlp_out = get_module(block, model.adapter.mlp)(
            get_module(block, model.adapter.mlp_norm)(mlp_in)
        )
        if model.adapter.post_mlp_norm:
            mlp_out = get_module(block, model.adapter.post_mlp_norm)(mlp_out)
        mlp_out = self._override(graph.mlp_sender(layer), mlp_out)
        self._store(graph.mlp_sender(layer), mlp_out)
        return mid + mlp_out

    def _attention(self, layer, block, normed, mask, cos_sin, norm):
        """Heads reading their own q / k / v inputs -> (per-head outputs, summed output).

        normed: (batch, pos, 3 * head, d_model), each receiver's own normed input, or (batch,
        pos, d_model) shared by all (gradient runs; `norm` = (module, its input) then)."""
        model, w = self.model, self.engine._weights[layer]
        n_heads = model.n_heads
        attn = get_module(block, model.adapter.attention)
        weight, bias = self.engine._qkv[layer]
        if normed.dim() == 3:
            qkv = shared_qkv(normed, self.engine._qkv_shared[layer], n_heads, weight.shape[1])
            if self.grad:
                leaf = torch.zeros_like(qkv, requires_grad=True)
                self.leaves.append(GradLeaf(leaf, weight, *norm))
                qkv = qkv + leaf
        else:
            qkv = project_heads(normed, weight, bias)  # (batch, pos, 3 * head, d_head)
        q, k, v = qkv.split(n_heads, dim=2)  # (batch, pos, head, d_head) each
        if model.adapter.qk_norm:
            q = get_module(attn, model.adapter.qk_norm[0])(q)
            k = get_module(attn, model.adapter.qk_norm[1])(k)
        if cos_sin is not None:
            q, k = model.apply_rotary(q, k, cos_sin)
        scores = torch.matmul(q.transpose(1, 2), k.permute(0, 2, 3, 1)) * attn.scaling + mask
        pattern = torch.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
        z = torch.matmul(pattern, v.transpose(1, 2)).transpose(1, 2)  # (batch, pos, head, d_head)
        result = torch.einsum("bphd,hdm->bphm", z, w.w_o)  # (batch, pos, head, d_model)
        post = model.adapter.post_attn_norm
        if post:
            total = result.sum(dim=2)
            norm = get_module(block, post)
            factor = rms_post_norm_factor(norm, total, model.adapter.post_norm_weight_offset)
            result = result * factor[:, :, None, :]
        result = self._override_heads(layer, result)
        attn_out = result.sum(dim=2)
        if w.b_o is not None:
            attn_out = attn_out + w.b_o
        return result, attn_out

    def _override_heads(self, layer: int, result: torch.Tensor) -> torch.Tensor:
        senders = range(*self.graph.head_senders(layer).indices(self.graph.n_senders))
        replaced = [(h, self.override[s]) for h, s in enumerate(senders) if s in self.override]
        if not replaced:
            return result
        heads = list(result.unbind(dim=2))
        for head, value in replaced:
            heads[head] = value
        return torch.stack(heads, dim=2)
