"""Run a model on a dataset (clean or one corruption) and score every example."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from wildcircuits.tasks import metrics
from wildcircuits.tasks.dataset import Dataset
from wildcircuits.tasks.spec import MetricKind

_SIGNED = {MetricKind.LOGIT_DIFF, MetricKind.PROB_DIFF, MetricKind.LOGIT_DIFF_BEST_WRONG}


@dataclass(frozen=True)
class Scores:
    """Per-example results, each (n,); `final` is the log-softmax at the metric position
    (n, vocab), kept to compute KL to the clean run (None for loss tasks)."""

    metric: Tensor
    correct: Tensor
    answer_prob: Tensor | None
    top1: Tensor
    final: Tensor | None


def pad_ids(rows: Sequence[Sequence[int]], pad: int) -> tuple[Tensor, Tensor]:
    """Right-padded (batch, pos) ids and 0/1 mask."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row), dtype=torch.long)
        mask[i, : len(row)] = 1
    return ids, mask


@torch.no_grad()
def score(
    model: Any,
    dataset: Dataset,
    corruption: str | None = None,
    batch_size: int = 8,
    on_batch: Callable[[], None] | None = None,
) -> Scores:
    """Score `dataset` (clean, or one corruption) on `model`, batch by batch."""
    from wildcircuits.models.tokens import tokens_from_ids

    prompts = dataset.prompts(corruption)
    pad = model.tokenizer.pad_token_id or 0
    parts: list[Scores] = []
    for start in range(0, len(prompts), batch_size):
        chunk = range(start, min(start + batch_size, len(prompts)))
        ids, mask = pad_ids([prompts[i].token_ids for i in chunk], pad)
        tokens = tokens_from_ids(ids, mask).to(model.device)
        sub = dataset.subset(list(chunk))
        parts.append(_score_batch(model, sub, tokens))
        if on_batch is not None:
            on_batch()
    return _concat(parts)


def _targets(dataset: Dataset) -> metrics.Targets:
    examples = dataset.examples
    if dataset.metric is MetricKind.LOSS:
        return metrics.make_targets(
            [e.answers or (0,) for e in examples],
            [e.distractors or (0,) for e in examples],
            [e.loss_positions for e in examples],
            [e.loss_targets for e in examples],
        )
    return metrics.make_targets([e.answers for e in examples], [e.distractors for e in examples])


def _score_batch(model: Any, dataset: Dataset, tokens: Any) -> Scores:
    targets = _targets(dataset).to(model.device)
    if dataset.metric is MetricKind.LOSS:
        logits = model.logits(tokens).float()  # (batch, pos, vocab)
        loss = metrics.loss(logits, targets)
        top1 = metrics.loss_accuracy(logits, targets)
        return Scores(loss.cpu(), top1.cpu(), None, top1.cpu(), None)
    positions = torch.tensor(dataset.positions(), device=model.device)
    logits = model.logits(tokens, positions=positions).float()  # (batch, vocab)
    value = metrics.compute(dataset.metric, logits, targets)
    top1 = metrics.accuracy(logits, targets)
    correct = (value > 0).float() if dataset.metric in _SIGNED else top1
    return Scores(
        value.cpu(),
        correct.cpu(),
        metrics.answer_prob(logits, targets).cpu(),
        top1.cpu(),
        logits.log_softmax(-1).cpu(),
    )


def _concat(parts: list[Scores]) -> Scores:
    def cat(name: str) -> Tensor | None:
        values = [getattr(p, name) for p in parts]
        return None if values[0] is None else torch.cat(values)

    return Scores(*(cat(f) for f in Scores.__dataclass_fields__))


def kl_from_clean(clean: Scores, other: Scores) -> Tensor | None:
    """KL(p_clean || p_other) per example, summed over the vocabulary."""
    if clean.final is None or other.final is None:
        return None
    return metrics.kl_to_clean(other.final, clean.final)
