"""The forwards of causal scrubbing (`verification.scrubbing`) on the edge engine.

Every run reads sender outputs from a few sources, per (receiver, sender, token): X, the clean
run of the references x; R, the clean run of x_rand (everything the hypothesis does not name);
and the outputs of a class computed on its own resample x' (`class_run`). A class run is one
engine forward on x' in which every in-edge of the class's members' receivers (q / k / v of a
member head, the input of a member MLP) is ablated to R except the embeddings and the edges
from the class's own member nodes: the class computes as one unit, so a later member reads an
earlier one's output from this run at its member tokens, and R at the node's other tokens (a
node-position ablation). The claimed paths' edges, at the sender members' tokens (and for q /
in at the path's positions), get the sender class's value through the engine's `extra` input:
sum of (source - R) over those senders. Only the members' outputs of such a run are read;
everything else in it is discarded.

Masks: a class's members are (node, position) pairs; `member_tokens` gives, per sender column,
the (row, pos) tokens where that node's output is a member (position slots of the pool).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from wildcircuits.explanation.hypothesis import ClaimedClass, ClaimedPath, PathSlot
from wildcircuits.models.tokens import Tokens, tokens_from_ids
from wildcircuits.names import NodeKind, parse_display_node
from wildcircuits.patching.edges import EdgeForward, Resume


@dataclass(frozen=True)
class Chunk:
    """One chunk of reference rows: x's tokens, metric positions, and the clean states (at the
    logits) of x (X) and x_rand (R): resid (batch, pos, d_model), outputs (batch, pos, sender,
    d_model)."""

    rows: slice
    tokens: Tokens
    positions: torch.Tensor
    x_state: Resume
    r_state: Resume

    def tokens_of(self, ids: torch.Tensor) -> Tokens:
        """Tokens of resampled ids (all pool rows) for this chunk: x's layout and mask."""
        mask = self.tokens.attention_mask
        return tokens_from_ids(ids[self.rows].to(mask.device), mask)


class Runs:
    """The engine, the pool's position slots and the forward count of one scrub."""

    def __init__(self, engine: EdgeForward, position_names, position_slots: torch.Tensor):
        self.engine, self.graph = engine, engine.graph
        self.names, self.slots = position_names, position_slots
        self.forwards = 0

    # masks ------------------------------------------------------------------------------------
    def member_tokens(self, claimed: ClaimedClass, rows: slice) -> dict[int, torch.Tensor]:
        """sender column -> (rows, pos) bool: the tokens where that node is a member."""
        out: dict[int, torch.Tensor] = {}
        slots = self.slots[rows]
        for pair in claimed.members:
            col = self.graph.sender_index[parse_display_node(pair.node, self.graph.shape)]
            hit = slots == self.names.index(pair.position)
            out[col] = out[col] | hit if col in out else hit
        return out

    def node_mask(self, claimed: ClaimedClass, rows: slice, members: bool) -> torch.Tensor:
        """(rows, pos, sender) bool: the class's member tokens (members=True), or the tokens of
        its member nodes where they are not members (real tokens only)."""
        slots = self.slots[rows]
        mask = torch.zeros(*slots.shape, self.graph.n_senders, dtype=torch.bool)
        for col, hit in self.member_tokens(claimed, rows).items():
            mask[:, :, col] = hit if members else (~hit & (slots >= 0))
        return mask

    def receivers(self, claimed: ClaimedClass, slot: PathSlot | None = None) -> dict[int, int]:
        """receiver row -> sender column of its node, for the class's member nodes (all their
        slots, or one)."""
        out, graph = {}, self.graph
        for pair in claimed.members:
            node = parse_display_node(pair.node, graph.shape)
            col = graph.sender_index[node]
            if node.kind is NodeKind.MLP:
                if slot in (None, PathSlot.IN):
                    out[graph.mlp_receiver(node.layer)] = col
                continue
            start = graph.attention_receivers(node.layer).start
            for index, name in enumerate((PathSlot.Q, PathSlot.K, PathSlot.V)):
                if slot in (None, name):
                    out[start + index * graph.n_heads + node.head] = col
        return out

    # corrections ------------------------------------------------------------------------------
    def path_extra(
        self,
        path: ClaimedPath,
        sender: ClaimedClass,
        receiver: ClaimedClass | None,
        rows: slice,
        source: Mapping[int, torch.Tensor],
        base: torch.Tensor,
    ) -> dict[int, torch.Tensor]:
        """receiver row -> (rows, pos, d_model): sum over the sender class's members u of
        (source[u] - base[u]) at u's member tokens (q / in: at the path's positions where the
        receiver node is a member), for every receiver slot the path enters (receiver None:
        the logits)."""
        graph, slots = self.graph, self.slots[rows].to(base.device)
        senders = self.member_tokens(sender, rows)
        if receiver is None:
            targets = {graph.logits_receiver: None}
        else:
            targets = self.receivers(receiver, path.slot)
        wanted = torch.tensor([self.names.index(p) for p in path.positions])
        at_path = torch.isin(slots, wanted.to(slots.device))
        own = {} if receiver is None else self.member_tokens(receiver, rows)
        extra: dict[int, torch.Tensor] = {}
        for row, node_col in targets.items():
            limit = graph.n_upstream(graph.receivers[row])
            gate = None
            if path.slot in (PathSlot.Q, PathSlot.IN):
                gate = at_path & own[node_col].to(slots.device)
            for col, hit in senders.items():
                if col >= limit:
                    continue
                hit = hit.to(slots.device) if gate is None else hit.to(slots.device) & gate
                term = hit[:, :, None].to(base.dtype) * (source[col] - base[:, :, col])
                extra[row] = extra[row] + term if row in extra else term
        return extra

    # forwards ---------------------------------------------------------------------------------
    def state(self, tokens: Tokens) -> Resume:
        """The clean run of `tokens`, stopped before the logits (every sender's output kept)."""
        self.forwards += 1
        return self.engine.state_at(tokens, self.graph.n_layers)

    def logits(self, start: Resume, tokens: Tokens, positions, extra=None) -> torch.Tensor:
        """Logits from a state at the logits plus `extra` on the logits receiver (no layer is
        run: not counted as a forward)."""
        return self.engine.run_from(start, tokens, positions, extra=extra)

    def class_run(
        self, claimed: ClaimedClass, tokens: Tokens, chunk: Chunk, extra: dict[int, torch.Tensor]
    ) -> torch.Tensor:
        """(rows, pos, sender, d_model) outputs of the class run on `tokens` (module doc): the
        members' in-edges ablated to R except the embeddings and the class's own members (read
        from this run at their member tokens; the member nodes' other tokens are R), `extra`
        added."""
        graph = self.graph
        ablated = torch.zeros(graph.n_receivers, graph.n_senders, dtype=torch.bool)
        own = list(self.member_tokens(claimed, chunk.rows))
        for row in self.receivers(claimed):
            ablated[row, 1:] = True
            ablated[row, own] = False
        device = chunk.r_state.outputs.device
        elsewhere = self.node_mask(claimed, chunk.rows, members=False)
        self.forwards += 1
        run = self.engine.run(
            tokens, chunk.positions, ablated=ablated.to(device), ablation=chunk.r_state.outputs,
            keep_outputs=True, extra=extra, node_ablated=elsewhere.to(device),
        )  # fmt: skip
        return run.outputs

    def splice(self, chunk: Chunk, mask: torch.Tensor, values: torch.Tensor, extra=None):
        """Logits of x's run with sender outputs replaced by `values` at `mask` (rows, pos,
        sender) and `extra` added to receivers."""
        self.forwards += 1
        device = values.device
        return self.engine.run(
            chunk.tokens, chunk.positions, ablation=values, node_ablated=mask.to(device),
            extra=extra,
        ).logits  # fmt: skip


def members_of(outputs: torch.Tensor, columns) -> dict[int, torch.Tensor]:
    """sender column -> (rows, pos, d_model) from a run's outputs, for the given columns."""
    return {col: outputs[:, :, col] for col in columns}
