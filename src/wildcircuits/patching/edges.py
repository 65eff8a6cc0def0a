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

Each layer runs the model's own `Block.forward` (`models.block`, where every family-specific
piece lives) with an `EdgePass` (`edge_state`) as its visitor; `EdgeSpec` names what one forward
does.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from wildcircuits.errors import WildcircuitsError
from wildcircuits.graph.graph import Graph
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.models.tokens import Tokens
from wildcircuits.models.weights import head_weights
from wildcircuits.patching.edge_parts import EdgeRun, Resume, shared_projection
from wildcircuits.patching.edge_prefix import Prefix
from wildcircuits.patching.edge_state import EdgePass, EdgeSpec

__all__ = ["EdgeForward", "EdgeRun", "EdgeSpec", "Resume"]


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
        weights = [head_weights(model, layer) for layer in range(model.n_layers)]
        # q, k, v of every head in one (3 * head, d_head, d_model) stack: one einsum per layer.
        self.qkv_stacks = [(w.w_qkv, w.b_qkv) for w in weights]
        # the same from one shared input: q of every head, k and v once per KV head (GQA)
        group = model.n_heads // model.n_kv_heads
        self.shared_projections = [shared_projection(w, group) for w in weights]
        post = model.adapter.post_attn_norm
        if post and any(w.b_o is not None for w in weights):
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
        node_ablated: torch.Tensor | None = None,
        copies: int = 1,
        extra: Mapping[int, torch.Tensor] | None = None,
        prefix: Prefix | None = None,
        start: Resume | None = None,
        record: bool = False,
    ) -> EdgeRun:
        """One forward with the edges marked in `ablated` (receiver, sender) ablated to
        `ablation` (batch or 1, pos, sender, d_model) sender outputs. No gradients.

        extra: receiver row -> (copies * batch, pos, d_model) added to that receiver's input,
        token by token, after the ablation deltas (causal scrubbing feeds a second source of
        sender values, at some tokens only, through it).

        node_ablated: (copies * batch, pos, sender) bool, node-position ablation: a sender's
        output at a marked token is replaced by its ablation value for every receiver (all its
        out-edges ablated at that token only). With `copies` > 1 the run stacks that many
        copies of the batch (copy-major), which differ only through `node_ablated`; logits
        come back as (copies * batch, vocab). Outputs kept are the replaced ones.

        prefix: the clean run of `tokens` at its first columns (`edge_prefix`), valid only when
        no ablation can change them (counterfactual values from the same batch's corrupted
        prompts, which agree there); the run computes the other columns only, with `ablation`,
        `node_ablated` and `input_embeds` given for every column as usual; kept outputs are the
        later columns' only.

        start: resume from that state of a run of the same batch (and prefix) that agrees with
        this one on everything before `start.layer` (then `input_embeds` is not read); one
        batch's state, stacked for `copies`. record: keep the residual stream entering each
        layer run (`EdgeRun.states`; `Resume(layer, states[layer], None)` resumes a
        node-position run there)."""
        if start is not None and start.outputs is None and (keep_outputs or ablated is not None):
            raise WildcircuitsError(
                "this resume state has no sender outputs (a node-position run's): it cannot "
                "resume a run that keeps outputs or ablates edges"
            )
        if prefix is not None:
            if override or extra:
                raise WildcircuitsError(
                    "a shared prefix cannot be combined with override or extra (they can "
                    "change the prefix's columns); pass prefix=None"
                )
            tokens, positions, input_embeds = prefix.inputs(positions, input_embeds)
            ablation, node_ablated = prefix.cut(ablation), prefix.cut(node_ablated)
        self._check_nodes(tokens, node_ablated, ablation, copies)
        edges = self._prepare(ablated, ablation, node_ablated)
        spec = EdgeSpec(
            tokens=tokens, positions=positions, ablated=edges,
            ablation=ablation, node_ablated=node_ablated, keep_outputs=keep_outputs,
            input_embeds=input_embeds, override=override or {}, copies=copies,
            extra=extra or {}, prefix=prefix, start=start, record=record,
        )  # fmt: skip
        with torch.no_grad():
            edge_pass = EdgePass(self, spec)
            logits = edge_pass.forward()
        outputs = edge_pass.outputs if keep_outputs else None
        return EdgeRun(logits, outputs, states=edge_pass.states if record else None)

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
        prefix: Prefix | None = None,
    ) -> EdgeRun:
        """d objective(logits) / d (each receiver's input), one backward for all receivers.

        objective: (batch, vocab) logits at `positions` -> scalar. With `start` (a `state_at`
        of the same unpatched run), the forward resumes there: receivers before `start.layer`
        get zero gradients, which is exact when `override` only replaces senders at or after
        that layer (nothing before it can then reach the objective differently). With
        `accumulate` ((batch, pos, receiver, d_model)), the gradients are added into it in place
        (no new (batch, pos, receiver, d_model) tensor; integrated gradients sum over steps) and
        it is returned as `receiver_grads`.

        prefix (`edge_prefix`): the forward and the gradients cover the columns after it only
        (gradients, kept outputs and `accumulate` are (batch, pos - prefix.length, ...)), which
        is all an attribution needs where the ablation differs from the clean run at none of
        the prefix's tokens (counterfactual): there every difference it multiplies is zero.
        `input_embeds` is given for every column."""
        if prefix is not None:
            if override or start is not None:
                raise WildcircuitsError(
                    "a shared prefix cannot be combined with override or start; pass prefix=None"
                )
            tokens, positions, input_embeds = prefix.inputs(positions, input_embeds)
        spec = EdgeSpec(
            tokens=tokens, positions=positions, grad=True, keep_outputs=keep_outputs,
            input_embeds=input_embeds, override=override or {}, start=start, prefix=prefix,
        )  # fmt: skip
        state = EdgePass(self, spec)
        with torch.enable_grad():
            logits = state.forward()
            leaves = [leaf.tensor for leaf in state.leaves]
            # materialize: receivers whose only path runs through an override get zeros
            grads = torch.autograd.grad(objective(logits), leaves, materialize_grads=True)
        skipped = self.graph.first_receiver(start.layer) if start is not None else 0
        grads = self._gather(tokens, state.leaves, grads, skipped, accumulate)
        return EdgeRun(logits.detach(), state.outputs if keep_outputs else None, grads)

    def _gather(self, tokens, leaves, grads, skipped: int, accumulate) -> torch.Tensor:
        """(batch, pos, receiver, d_model) receiver gradients from the leaves' gradients (zero
        for the `skipped` receivers before a resumed run's layer), added into `accumulate`."""
        batch, pos = tokens.input_ids.shape
        grads = [
            leaf.receiver_grads(g).reshape(batch, pos, -1, self.model.d_model)
            for leaf, g in zip(leaves, grads, strict=True)
        ]
        if accumulate is not None:
            row = skipped
            for part in grads:
                accumulate[:, :, row : row + part.shape[2]] += part
                row += part.shape[2]
            return accumulate
        if skipped:
            grads.insert(0, grads[0].new_zeros(batch, pos, skipped, self.model.d_model))
        return torch.cat(grads, dim=2)

    def outputs(
        self,
        tokens: Tokens,
        input_embeds: torch.Tensor | None = None,
        prefix: Prefix | None = None,
    ) -> torch.Tensor:
        """Sender outputs of an unpatched run: (batch, pos, sender, d_model); with a prefix
        (`run`), at the columns after it only."""
        run = self.run(
            tokens, tokens.last_index, keep_outputs=True, input_embeds=input_embeds, prefix=prefix
        )
        return run.outputs

    def state_at(
        self,
        tokens: Tokens,
        layer: int,
        ablated: torch.Tensor | None = None,
        ablation: torch.Tensor | None = None,
    ) -> Resume:
        """The state of a (patched) run at the start of `layer` (no gradients); `layer` may be
        n_layers: the state the logits receiver reads."""
        spec = EdgeSpec(
            tokens=tokens, positions=tokens.last_index, ablated=self._prepare(ablated, ablation),
            ablation=ablation, keep_outputs=True, stop=layer,
        )  # fmt: skip
        with torch.no_grad():
            state = EdgePass(self, spec)
            state.forward()
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
        which differ only through `extra`. `start` is read, never written. (`run(start=)`.)"""
        run = self.run(
            tokens, positions, ablated, ablation, extra=extra, copies=copies, start=start
        )
        return run.logits

    def _prepare(self, ablated, ablation, node_ablated=None):
        if (ablated is None and node_ablated is None) != (ablation is None):
            raise WildcircuitsError(
                "pass both `ablation` (values) and a mask (`ablated` edges and / or "
                "`node_ablated` tokens), or neither"
            )
        if ablated is None:
            return None
        self._check_mask(ablated)
        return (ablated & self.graph.valid.to(ablated.device)).to(self.model.dtype)

    def _check_nodes(self, tokens: Tokens, node_ablated, ablation, copies: int) -> None:
        """A node-position mask must be (copies * batch, pos, sender) bool; the ablation
        values (batch or 1, pos or 1, sender, d_model)."""
        if copies < 1:
            raise WildcircuitsError(f"copies must be >= 1, got {copies}")
        if node_ablated is None:
            return
        shape = (copies * tokens.batch, tokens.seq_len, self.graph.n_senders)
        if tuple(node_ablated.shape) != shape or node_ablated.dtype != torch.bool:
            raise WildcircuitsError(
                f"node-position mask must be a bool tensor of shape {shape} (copies * batch, "
                f"pos, sender); got {node_ablated.dtype} {tuple(node_ablated.shape)}"
            )
        if ablation is not None and ablation.shape[0] not in (1, tokens.batch):
            raise WildcircuitsError(
                f"ablation values have {ablation.shape[0]} rows; give 1 or one per row of the "
                f"batch ({tokens.batch}), the same for every copy"
            )

    def _check_mask(self, ablated: torch.Tensor) -> None:
        shape = (self.graph.n_receivers, self.graph.n_senders)
        if tuple(ablated.shape) != shape or ablated.dtype != torch.bool:
            raise WildcircuitsError(
                f"edge mask must be a bool tensor of shape {shape} (receiver, sender); got "
                f"{ablated.dtype} {tuple(ablated.shape)}"
            )
