"""Tokenized batches with explicit padding, positions and the index of the final real token."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from wildcircuits.errors import WildcircuitsError


@dataclass(frozen=True)
class Tokens:
    """A padded batch.

    input_ids, attention_mask, position_ids: (batch, pos); last_index: (batch,), the index of each
    row's final real token. Positions count real tokens only, so left padding keeps RoPE exact.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    last_index: torch.Tensor

    @property
    def batch(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def seq_len(self) -> int:
        return int(self.input_ids.shape[1])

    def to(self, device: torch.device | str) -> Tokens:
        return Tokens(*(t.to(device) for t in self._fields()))

    def select(self, rows: torch.Tensor | slice | Sequence[int]) -> Tokens:
        """A sub-batch (rows of every field)."""
        return Tokens(*(t[rows] for t in self._fields()))

    def columns(self, start: int, stop: int) -> Tokens:
        """The positions start..stop-1 of every row (e.g. to drop padding every row shares);
        `last_index` is shifted to the new positions."""
        return Tokens(
            self.input_ids[:, start:stop],
            self.attention_mask[:, start:stop],
            self.position_ids[:, start:stop],
            self.last_index - start,
        )

    def repeat(self, copies: int) -> Tokens:
        """`copies` stacked copies of the batch (copy-major: row j * batch + i is row i)."""
        return Tokens(*(t.repeat(copies, *([1] * (t.ndim - 1))) for t in self._fields()))

    def _fields(self) -> tuple[torch.Tensor, ...]:
        return (self.input_ids, self.attention_mask, self.position_ids, self.last_index)


Batch = Tokens | torch.Tensor | str | Sequence[str]  # what `InstrumentedModel.run` accepts


def as_tokens(batch: Batch, tokenize_prompts: Callable[[Sequence[str] | str], Tokens]) -> Tokens:
    """A batch as `Tokens`: `Tokens` as they are, token ids (batch, pos) or (pos,) as an
    unpadded batch, prompt strings (a str or a list of str) through `tokenize_prompts`."""
    if isinstance(batch, Tokens):
        return batch
    if isinstance(batch, torch.Tensor):
        return tokens_from_ids(batch)
    if isinstance(batch, str) or (
        isinstance(batch, Sequence) and batch and all(isinstance(p, str) for p in batch)
    ):
        return tokenize_prompts(batch)
    raise WildcircuitsError(
        f"expected Tokens, token ids or prompt strings, got {type(batch).__name__}"
    )


def tokens_from_ids(input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> Tokens:
    """Build `Tokens` from ids and an optional 0/1 mask (either padding side)."""
    if input_ids.ndim == 1:
        input_ids = input_ids[None]
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)
    if attention_mask.shape != input_ids.shape:
        raise WildcircuitsError(
            f"attention_mask shape {tuple(attention_mask.shape)} differs from input_ids "
            f"shape {tuple(input_ids.shape)}"
        )
    if bool((attention_mask.sum(-1) == 0).any()):
        raise WildcircuitsError("a row of the batch has no real tokens (empty prompt?)")
    attention_mask = attention_mask.long()
    position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # (batch, pos)
    arange = torch.arange(input_ids.shape[1], device=input_ids.device)
    last_index = torch.where(attention_mask.bool(), arange, -1).max(-1).values  # (batch,)
    return Tokens(input_ids, attention_mask, position_ids, last_index)


def tokenize(tokenizer, prompts: Sequence[str] | str, prepend_bos: bool | None = None) -> Tokens:
    """Tokenize prompts into a right-padded batch.

    `prepend_bos=None` follows the tokenizer's own default for special tokens; True / False
    force a BOS token on or off.
    """
    if isinstance(prompts, str):
        prompts = [prompts]
    if len(prompts) == 0:
        raise WildcircuitsError("no prompts to tokenize")
    rows = [_encode(tokenizer, p, prepend_bos) for p in prompts]
    width = max(len(r) for r in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = 1
    return tokens_from_ids(ids, mask)


def _encode(tokenizer, prompt: str, prepend_bos: bool | None) -> list[int]:
    ids = list(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    bos = tokenizer.bos_token_id
    if prepend_bos is None or bos is None:
        if prepend_bos and bos is None:
            raise WildcircuitsError("prepend_bos=True but this tokenizer has no BOS token")
    elif prepend_bos and (not ids or ids[0] != bos):
        ids = [bos, *ids]
    elif not prepend_bos and ids and ids[0] == bos:
        ids = ids[1:]
    if not ids:
        raise WildcircuitsError(f"prompt {prompt!r} tokenizes to nothing")
    return ids
