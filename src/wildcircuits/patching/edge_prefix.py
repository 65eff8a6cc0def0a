"""A shared clean prefix: the first columns of a batch that no ablation can change, computed
once and reused by every edge forward over that batch.

Under counterfactual ablation a sender's ablation value at a token is its output on the
corrupted prompt. Where every row's clean and corrupted prompts agree on their first P tokens
(ids and padding), every sender's output at those tokens is the same in both runs (attention is
causal), so no edge or node-position ablation changes anything there: every activation at
columns < P is the clean run's, whatever the circuit. An edge forward then runs only columns
P.. (`EdgeForward.run(prefix=...)`): attention reads the clean run's keys and values at columns
< P (a key-value cache, built here once per batch), the embeddings, masks and rotary positions
are the full batch's cut to those columns, and the ablation values, node masks and metric
positions are cut or shifted to match. P is also at most the first metric position, so every
logit read is computed.

This holds for counterfactual values computed from the same batch's corrupted prompts
(`AblationCache.for_chunk`), and for a per-position mean over reference prompts (per template
with `mean:template`) on the columns where every reference prompt and every clean prompt of the
template have the same tokens: the mean of equal outputs is that output (to float rounding).
Zero ablation and pooled means change the prefix's columns, and get no prefix. On the
catalogue's tasks (SmolLM2 tokens, 16 prompts) the counterfactual share of the tokens is 0.93
for colored objects, 0.88 for entity tracking, 0.49 for greater-than and 0.09 for IOI; the
per-template share is 0.67 for colored objects and 0.45 for multiple choice, about 0 elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wildcircuits.models.block import Block, Visitor
from wildcircuits.models.tokens import Tokens


def shared_length(
    clean: Tokens,
    corrupted: Tokens,
    positions: torch.Tensor,
    position_mask: torch.Tensor | None = None,
) -> int:
    """The number of leading columns on which every row's clean and corrupted prompts agree
    (ids and attention mask), capped at the first metric position read (positions (batch,) or
    (batch, k) with `position_mask` marking the valid ones)."""
    same = (clean.input_ids == corrupted.input_ids) & (
        clean.attention_mask == corrupted.attention_mask
    )
    return max(0, min(_leading(same.all(dim=0)), first_read(positions, position_mask)))


def first_read(positions: torch.Tensor, position_mask: torch.Tensor | None = None) -> int:
    """The first column a metric reads: positions (batch,), or (batch, k) with `position_mask`
    marking the valid entries."""
    valid = positions if position_mask is None else positions[position_mask.bool()]
    return int(valid.min())


def _leading(same: torch.Tensor) -> int:
    """The number of leading True entries of a (pos,) bool tensor."""
    differs = (~same).nonzero()
    return int(differs[0]) if len(differs) else same.shape[0]


@dataclass(frozen=True)
class Prefix:
    """The clean run of a batch at its first `length` columns (see the module docstring).

    keys / values: per layer, what that layer's attention reads at those columns (batch,
    length, kv_head, d_head); masks: per layer type, the additive masks of the suffix's queries
    over every column (batch, 1, pos - length, pos); embeds: the suffix's embeddings (batch,
    pos - length, d_model); tokens: the suffix columns (absolute position ids kept)."""

    length: int
    keys: tuple[torch.Tensor, ...]
    values: tuple[torch.Tensor, ...]
    masks: dict[str, torch.Tensor]
    embeds: torch.Tensor
    tokens: Tokens

    def cut(self, tensor: torch.Tensor | None) -> torch.Tensor | None:
        """A (rows, pos | 1, ...) tensor (ablation values, a node mask) at the suffix columns."""
        if tensor is None or tensor.shape[1] == 1:
            return tensor
        return tensor[:, self.length :]

    def shift(self, positions: torch.Tensor) -> torch.Tensor:
        """Metric positions in suffix columns (masked loss entries below the prefix go to 0)."""
        return (positions - self.length).clamp(min=0)

    def inputs(self, positions: torch.Tensor, input_embeds: torch.Tensor | None) -> tuple:
        """(tokens, positions, input embeddings) of the suffix run, from a full batch's
        positions and input embeddings (None: the clean embeddings)."""
        embeds = self.embeds if input_embeds is None else self.cut(input_embeds)
        return self.tokens, self.shift(positions), embeds

    @property
    def batch(self) -> int:
        return self.embeds.shape[0]

    def keys_values(self, layer: int, k, v) -> tuple[torch.Tensor, torch.Tensor]:
        """This layer's cached keys and values before the suffix's own k, v (rows, pos,
        kv_head or head, d_head); rows may be stacked copies of the batch (copy-major)."""
        past = [self.keys[layer], self.values[layer]]
        group = k.shape[2] // past[0].shape[2]
        if group > 1:  # the engine gives each query head its own k / v (GQA: kv heads repeated)
            past = [t.repeat_interleave(group, dim=2) for t in past]
        copies = k.shape[0] // self.batch
        if copies > 1:
            past = [t.repeat(copies, *([1] * (t.dim() - 1))) for t in past]
        return torch.cat([past[0], k], dim=1), torch.cat([past[1], v], dim=1)

    def masks_for(self, rows: int) -> dict[str, torch.Tensor]:
        """The masks for `rows` rows (stacked copies of the batch, copy-major)."""
        copies = rows // self.batch
        if copies == 1:
            return self.masks
        return {kind: m.repeat(copies, 1, 1, 1) for kind, m in self.masks.items()}


class _KeepKeysValues(Visitor):
    """The plain forward, keeping each layer's keys and values."""

    def __init__(self):
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []

    def keys_values(self, block: Block, k: torch.Tensor, v: torch.Tensor) -> tuple:
        self.keys.append(k)
        self.values.append(v)
        return k, v


def build_prefix(model, clean: Tokens, length: int) -> Prefix | None:
    """The clean run's prefix of `length` columns (None for 0: nothing to share). Only those
    columns are run (attention is causal: nothing later reaches them)."""
    if length <= 0:
        return None
    keep = _KeepKeysValues()
    head = clean.columns(0, length)
    with torch.no_grad():
        embeds = model.embed(clean)
        masks = model.attention_masks(clean, embeds)
        resid = embeds[:, :length]
        rotary = model.rotary_embeddings(head, resid)
        for block in model.blocks:
            kind = block.layer_type
            resid = block.forward(
                resid, masks[kind][:, :, :length, :length], rotary.get(kind), keep
            )
    return Prefix(
        length=length,
        keys=tuple(keep.keys),
        values=tuple(keep.values),
        masks={kind: m[:, :, length:] for kind, m in masks.items()},
        embeds=embeds[:, length:],
        tokens=clean.columns(length, clean.seq_len),
    )


#: Below this share of the columns a prefix is not built: its own forward costs about what it
#: saves (benchmarks/edge_prefix.py: IOI on SmolLM2 shares 0.06 and ran at 0.96x with it).
MIN_SHARE = 0.125


def counterfactual_prefix(model, clean: Tokens, corrupted: Tokens, positions, mask=None):
    """The prefix a counterfactual-ablation batch shares with its corrupted prompts, or None
    (nothing shared, or less than `MIN_SHARE` of the columns)."""
    return worth_building(model, clean, shared_length(clean, corrupted, positions, mask))


def worth_building(model, clean: Tokens, length: int) -> Prefix | None:
    """`build_prefix`, or None below `MIN_SHARE` of the columns."""
    if length < MIN_SHARE * clean.seq_len:
        return None
    return build_prefix(model, clean, length)


def agreement(rows: list[Tokens]) -> int:
    """The number of leading columns on which every row of these batches (of one length)
    has the same token and padding."""
    ids = torch.cat([t.input_ids for t in rows])
    mask = torch.cat([t.attention_mask for t in rows])
    return _leading((ids == ids[:1]).all(dim=0) & (mask == mask[:1]).all(dim=0))
