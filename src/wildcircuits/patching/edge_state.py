"""One edge forward of the engine (`patching.edges`): what it computes, how it visits blocks.

`EdgeSpec` names everything one forward does (no positional `None` / `True` arguments).
`EdgePass` runs it: the model's own `Block.forward` for every layer, with this pass as the
block's `Visitor`. At the visit points it gives each q / k / v receiver and each MLP its own
residual input (the shared stream plus its ablation delta and any extra input), projects a
shared input once where no receiver of the layer differs (`edge_parts`), splits the attention
output into per-head sender outputs, and reads / replaces sender outputs (`edge_senders`): by
an override, and at the (row, position) pairs of a node-position mask by their ablation value.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from wildcircuits.models.block import Block, Visitor
from wildcircuits.models.tokens import Tokens
from wildcircuits.models.weights import project_heads
from wildcircuits.patching.edge_parts import GradLeaf, Resume, shared_qkv
from wildcircuits.patching.edge_prefix import Prefix
from wildcircuits.patching.edge_senders import NodeAblation, SenderOutputs
from wildcircuits.patching.sites import Component
from wildcircuits.tasks.metrics import at_positions, repeat_rows


@dataclass(frozen=True)
class EdgeSpec:
    """One edge forward.

    tokens, positions (batch,) or (batch, k): the batch and where to read the logits. ablated:
    (receiver, sender) 0/1 float mask of the ablated edges, with ablation (batch or 1, pos, sender,
    d_model) their values; None: nothing ablated. node_ablated: (copies * batch, pos, sender)
    bool, the tokens at which a sender's output itself is replaced by its `ablation` value (all
    its out-edges ablated there; `edge_senders.NodeAblation`). grad: add a zero leaf on every
    receiver's input (gradient runs). keep_outputs: keep every sender's output. input_embeds
    (batch, pos, d_model): replaces the embeddings. override: sender -> (batch, pos, d_model)
    replacing that sender's output. extra: receiver row -> (copies * batch, pos, d_model) added
    to its input. start: resume from that state; copies: run that many stacked copies of the
    batch (copy-major; they differ only through `extra` and `node_ablated`); stop: record the
    state at the start of that layer (n_layers: before the logits) and return no logits.
    prefix: the batch's clean columns before `tokens` (`edge_prefix`): attention also reads
    their keys and values, and the masks are the full batch's (tokens, embeddings, ablation
    values and positions are then the suffix's). record: keep the residual stream entering
    every layer run (`EdgePass.states`).
    """

    tokens: Tokens
    positions: torch.Tensor
    ablated: torch.Tensor | None = None
    ablation: torch.Tensor | None = None
    node_ablated: torch.Tensor | None = None
    grad: bool = False
    keep_outputs: bool = False
    input_embeds: torch.Tensor | None = None
    override: Mapping[int, torch.Tensor] = field(default_factory=dict)
    extra: Mapping[int, torch.Tensor] = field(default_factory=dict)
    start: Resume | None = None
    stop: int | None = None
    copies: int = 1
    prefix: Prefix | None = None
    record: bool = False


class EdgePass(Visitor):
    """One edge forward of `engine` (an `EdgeForward`) as described by `spec`: running residual,
    sender outputs so far, gradient leaves, the recorded state."""

    def __init__(self, engine, spec: EdgeSpec):
        self.engine, self.model, self.graph, self.spec = engine, engine.model, engine.graph, spec
        self.tokens = spec.tokens.to(self.model.device)
        self.ablated, self.extra, self.override = spec.ablated, spec.extra, spec.override
        self.leaves: list[GradLeaf] = []
        self.senders: SenderOutputs | None = None
        self.nodes = (
            None if spec.node_ablated is None else NodeAblation(spec.node_ablated, spec.ablation)
        )
        self.resume: Resume | None = None
        self.states: dict[int, torch.Tensor] = {}  # layer -> resid entering it (spec.record)
        self.prefix = spec.prefix  # attention reads its keys and values (`Visitor`)

    @property
    def outputs(self) -> torch.Tensor | None:
        """(rows, pos, sender, d_model) sender outputs of this run, if kept."""
        return None if self.senders is None else self.senders.full()

    def forward(self) -> torch.Tensor | None:
        """Logits (copies * batch, [k,] vocab) at the positions, or None with `spec.stop` (then
        `self.resume` holds the state there)."""
        model, graph, stop = self.model, self.graph, self.spec.stop
        resid, first, positions = self._begin()
        if self.prefix is None:
            masks = model.attention_masks(self.tokens, resid)
        else:
            masks = self.prefix.masks_for(self.tokens.batch)
        rotary = model.rotary_embeddings(self.tokens, resid)
        for block in model.blocks[first:]:
            if block.layer == stop:
                self.resume = Resume(stop, resid, self.outputs)
                return None
            if self.spec.record:
                self.states[block.layer] = resid
            kind = block.layer_type
            resid = block.forward(resid, masks[kind], rotary.get(kind), self)
        if stop == model.n_layers:  # the state the logits receiver reads from
            self.resume = Resume(stop, resid, self.outputs)
            return None
        resid = self._receive(resid, graph.logits_receiver, graph.n_senders)
        return model.unembed(at_positions(resid, positions))  # (batch, [k,] vocab)

    def _begin(self) -> tuple[torch.Tensor, int, torch.Tensor]:
        """(resid entering the first layer run, that layer, logit positions); with copies,
        `self.tokens` becomes the stacked batch."""
        spec, graph = self.spec, self.graph
        tokens = self.tokens
        if spec.copies > 1:
            self.tokens = tokens.repeat(spec.copies)
        keep = spec.keep_outputs or spec.ablated is not None
        copies, positions = spec.copies, repeat_rows(spec.positions, spec.copies)
        if spec.start is None:
            embeds = spec.input_embeds
            resid = embeds if embeds is not None else self.model.embed(tokens)
            resid = self._sender(0, _stack(self.override.get(0, resid), copies))
            if keep:
                self.senders = SenderOutputs.fresh(
                    resid, graph.n_senders, spec.ablated, spec.ablation, copies
                )
                self._store(0, resid)
            return resid, 0, positions
        start = spec.start
        resid = _stack(start.resid, copies)
        if keep:
            shared = graph.first_sender(start.layer)
            self.senders = SenderOutputs.resumed(
                start.outputs, shared, copies, spec.ablated, spec.ablation
            )
        return resid, start.layer, positions

    # receivers --------------------------------------------------------------------------------
    def _receive(self, x: torch.Tensor, rows: slice | int, n_up: int) -> torch.Tensor:
        """x: the receivers' shared input (batch, pos, [1,] d_model) plus their own deltas."""
        if self.ablated is not None:
            delta = self.senders.delta(rows, n_up)
            if delta is not None:
                x = x + delta
        if self.extra:
            x = self._add_extra(x, rows)
        if self.spec.grad:
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

    def _sender(self, senders: slice | int, value: torch.Tensor) -> torch.Tensor:
        """A sender's output as the residual stream gets it: node-position ablation applied."""
        return value if self.nodes is None else self.nodes.apply(senders, value)

    def _store(self, senders: slice | int, value: torch.Tensor) -> None:
        if self.senders is not None:
            self.senders.store(senders, value.detach() if self.spec.grad else value)

    # the block's visit points -------------------------------------------------------------------
    def site(self, component: Component, layer: int, value: torch.Tensor) -> torch.Tensor:
        """The MLP's output is a sender: replaced by its override, if any, and kept."""
        if component is Component.MLP_OUT:
            sender = self.graph.mlp_sender(layer)
            value = self._sender(sender, self.override.get(sender, value))
            self._store(sender, value)
        return value

    def mlp_input(self, block: Block, x: torch.Tensor) -> torch.Tensor:
        row = self.graph.mlp_receiver(block.layer)
        return self._receive(x, row, self.graph.n_upstream(self.graph.receivers[row]))

    def qkv(self, block: Block, resid: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Each head's q, k, v (batch, pos, head, d_head) from its own receiver's input."""
        layer, n_heads = block.layer, self.model.n_heads
        rows, n_up = self.graph.attention_receivers(layer), self.graph.first_sender(layer)
        weight, bias = self.engine.qkv_stacks[layer]
        if self._untouched(rows, n_up):
            # every q / k / v receiver reads `resid` itself: one shared norm and projection (in
            # gradient runs the per-receiver gradients come from the projection leaves)
            normed = block.attn_norm(resid)  # (batch, pos, d_model)
            projection = self.engine.shared_projections[layer]
            qkv = shared_qkv(normed, projection, n_heads, weight.shape[1])
            if self.spec.grad:
                leaf = torch.zeros_like(qkv, requires_grad=True)
                self.leaves.append(GradLeaf(leaf, weight, block.attn_norm, resid))
                qkv = qkv + leaf
        else:
            shared = resid[:, :, None, :].expand(-1, -1, 3 * n_heads, -1)  # (b, pos, 3*head, d)
            normed = block.attn_norm(self._receive(shared, rows, n_up))  # (b, pos, 3*head, d)
            qkv = project_heads(normed, weight, bias)  # (batch, pos, 3 * head, d_head)
        return qkv.split(n_heads, dim=2)  # (batch, pos, head, d_head) each

    def attention_out(self, block: Block, z: torch.Tensor) -> torch.Tensor:
        """Per-head sender outputs (post-norm split per head, overrides applied, kept) and their
        sum plus the output bias: (batch, pos, d_model)."""
        result = block.split_post_attn_norm(block.head_results(z))  # (batch, pos, head, d)
        senders = self.graph.head_senders(block.layer)
        result = self._sender(senders, self._override_heads(senders, result))
        self._store(senders, result)
        attn_out = result.sum(dim=2)
        bias = block.out_proj.bias
        return attn_out if bias is None else attn_out + bias

    def _override_heads(self, senders: slice, result: torch.Tensor) -> torch.Tensor:
        first = senders.start
        replaced = [(s - first, v) for s, v in self.override.items() if first <= s < senders.stop]
        if not replaced:
            return result
        heads = list(result.unbind(dim=2))
        for head, value in replaced:
            heads[head] = value
        return torch.stack(heads, dim=2)


def _stack(value: torch.Tensor, copies: int) -> torch.Tensor:
    """(batch, ...) -> (copies * batch, ...), copy-major (no copy for one)."""
    return value if copies == 1 else value.repeat(copies, *([1] * (value.dim() - 1)))
