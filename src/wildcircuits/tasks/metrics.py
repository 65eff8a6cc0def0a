"""Metrics on model logits: batched, differentiable, read at a chosen position.

Conventions
- Every metric returns one value per example, shape (batch,); reduce with `.mean()`.
- Answer / distractor *sets* are padded id tensors (batch, k) with a boolean mask (batch, k).
- `logit_diff`: mean logit over the answer set minus mean logit over the distractor set (the plain
  logit difference for single tokens).
- `prob_diff`: summed softmax probability of the answer set minus that of the distractor set.
- `logit_diff_best_wrong`: best answer logit minus the largest logit of any token outside the set.
- `answer_prob`: summed probability of the answer set; `accuracy`: 1.0 where the top-1 token is in
  the answer set, else 0.0 (not differentiable).
- `kl_to_clean`: true KL(p_clean || p) summed over the vocabulary, per example (mean over batch
  when reduced). Lower is better; 0 on the clean run.
- `loss`: mean next-token cross entropy over each example's chosen positions. Lower is better.
- `normalize`: (m - m_corrupted) / (m_clean - m_corrupted), so clean = 1 and corrupted = 0 for
  every metric, whichever direction is better.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from wildcircuits.errors import MetricError
from wildcircuits.tasks.spec import MetricKind

HIGHER_IS_BETTER = {
    MetricKind.LOGIT_DIFF: True,
    MetricKind.PROB_DIFF: True,
    MetricKind.LOGIT_DIFF_BEST_WRONG: True,
    MetricKind.ANSWER_PROB: True,
    MetricKind.ACCURACY: True,
    MetricKind.KL_TO_CLEAN: False,
    MetricKind.LOSS: False,
}


@dataclass(frozen=True)
class Targets:
    """What a batch should and should not predict, as tensors."""

    answers: Int[Tensor, "batch k"]
    answer_mask: Bool[Tensor, "batch k"]
    distractors: Int[Tensor, "batch k"]
    distractor_mask: Bool[Tensor, "batch k"]
    loss_positions: Int[Tensor, "batch n"] | None = None
    loss_targets: Int[Tensor, "batch n"] | None = None
    loss_mask: Bool[Tensor, "batch n"] | None = None

    def to(self, device: torch.device | str) -> Targets:
        def move(t: Tensor | None) -> Tensor | None:
            return None if t is None else t.to(device)

        return Targets(*(move(getattr(self, f)) for f in self.__dataclass_fields__))


def pad_sets(sets: Sequence[Sequence[int]]) -> tuple[Tensor, Tensor]:
    """Id sets of varying size -> (batch, k) ids (padded with 0) and mask."""
    width = max((len(s) for s in sets), default=0)
    ids = torch.zeros(len(sets), max(width, 1), dtype=torch.long)
    mask = torch.zeros(len(sets), max(width, 1), dtype=torch.bool)
    for row, values in enumerate(sets):
        ids[row, : len(values)] = torch.tensor(list(values), dtype=torch.long)
        mask[row, : len(values)] = True
    return ids, mask


def make_targets(
    answers: Sequence[Sequence[int]],
    distractors: Sequence[Sequence[int]],
    loss_positions: Sequence[Sequence[int]] | None = None,
    loss_targets: Sequence[Sequence[int]] | None = None,
) -> Targets:
    a, a_mask = pad_sets(answers)
    d, d_mask = pad_sets(distractors)
    if loss_positions is None or loss_targets is None:
        return Targets(a, a_mask, d, d_mask)
    positions, mask = pad_sets(loss_positions)
    targets, _ = pad_sets(loss_targets)
    return Targets(a, a_mask, d, d_mask, positions, targets, mask)


def at_positions(values: Float[Tensor, "batch pos ..."], positions: Tensor) -> Tensor:
    """Each example's values at its own position(s): positions (batch,) give (batch, ...),
    positions (batch, k) give (batch, k, ...) (a multi-position metric such as `loss`)."""
    if values.ndim < 2 or positions.ndim not in (1, 2) or positions.shape[0] != values.shape[0]:
        raise MetricError(
            f"expected values (batch, pos, ...) and positions (batch,) or (batch, k), got "
            f"shapes {tuple(values.shape)} and {tuple(positions.shape)}"
        )
    rows = torch.arange(values.shape[0], device=values.device)
    if positions.ndim == 2:
        rows = rows.unsqueeze(1)  # (batch, 1), broadcast against (batch, k)
    return values[rows, positions.to(values.device)]


def repeat_rows(positions: Tensor, copies: int) -> Tensor:
    """Positions of `copies` stacked copies of a batch (copy-major), for (batch,) or (batch, k)."""
    return positions.repeat(copies, *([1] * (positions.ndim - 1)))


def _check(logits: Tensor, targets: Targets) -> None:
    if logits.ndim != 2:
        raise MetricError(
            f"expected logits at one position (batch, vocab), got shape {tuple(logits.shape)}; "
            "select a position with at_positions first"
        )
    if logits.shape[0] != targets.answers.shape[0]:
        raise MetricError(f"batch {logits.shape[0]} != targets batch {targets.answers.shape[0]}")


def _set_mean(values: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
    picked = values.gather(1, ids.to(values.device))  # (batch, k)
    mask = mask.to(values.device)
    if not bool(mask.any(dim=1).all()):
        raise MetricError("an example has an empty answer or distractor set")
    return (picked * mask).sum(1) / mask.sum(1)


def _set_sum(values: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
    picked = values.gather(1, ids.to(values.device))
    return (picked * mask.to(values.device)).sum(1)


def logit_diff(logits: Float[Tensor, "batch vocab"], targets: Targets) -> Float[Tensor, " batch"]:
    _check(logits, targets)
    answer = _set_mean(logits, targets.answers, targets.answer_mask)
    return answer - _set_mean(logits, targets.distractors, targets.distractor_mask)


def prob_diff(logits: Float[Tensor, "batch vocab"], targets: Targets) -> Float[Tensor, " batch"]:
    _check(logits, targets)
    probs = logits.float().softmax(-1)
    answer = _set_sum(probs, targets.answers, targets.answer_mask)
    return answer - _set_sum(probs, targets.distractors, targets.distractor_mask)


def _in_answer_set(logits: Tensor, targets: Targets) -> Bool[Tensor, "batch vocab"]:
    inside = torch.zeros_like(logits, dtype=torch.bool)
    mask = targets.answer_mask.to(logits.device)
    inside.scatter_(1, targets.answers.to(logits.device), mask)
    return inside


def logit_diff_best_wrong(
    logits: Float[Tensor, "batch vocab"], targets: Targets
) -> Float[Tensor, " batch"]:
    _check(logits, targets)
    inside = _in_answer_set(logits, targets)
    best_answer = logits.masked_fill(~inside, float("-inf")).amax(-1)
    best_wrong = logits.masked_fill(inside, float("-inf")).amax(-1)
    return best_answer - best_wrong


def answer_prob(logits: Float[Tensor, "batch vocab"], targets: Targets) -> Float[Tensor, " batch"]:
    _check(logits, targets)
    return _set_sum(logits.float().softmax(-1), targets.answers, targets.answer_mask)


def accuracy(logits: Float[Tensor, "batch vocab"], targets: Targets) -> Float[Tensor, " batch"]:
    _check(logits, targets)
    top = logits.argmax(-1, keepdim=True)
    return _in_answer_set(logits, targets).gather(1, top).squeeze(1).float()


def kl_to_clean(
    logits: Float[Tensor, "batch vocab"], clean_logits: Float[Tensor, "batch vocab"]
) -> Float[Tensor, " batch"]:
    """KL(p_clean || p), summed over the vocabulary."""
    if logits.shape != clean_logits.shape:
        raise MetricError(f"shapes differ: {tuple(logits.shape)} vs {tuple(clean_logits.shape)}")
    log_p = logits.float().log_softmax(-1)
    log_q = clean_logits.float().log_softmax(-1)
    return (log_q.exp() * (log_q - log_p)).sum(-1)


def loss(logits: Float[Tensor, "batch pos vocab"], targets: Targets) -> Float[Tensor, " batch"]:
    """Mean cross entropy of predicting `loss_targets` from the logits at `loss_positions`."""
    if targets.loss_positions is None or targets.loss_targets is None or targets.loss_mask is None:
        raise MetricError("the loss metric needs loss positions and targets (induction tasks)")
    if logits.ndim != 3:
        raise MetricError(f"loss needs logits (batch, pos, vocab), got {tuple(logits.shape)}")
    positions = targets.loss_positions.to(logits.device)
    mask = targets.loss_mask.to(logits.device)
    index = positions.unsqueeze(-1).expand(-1, -1, logits.shape[-1])
    picked = logits.gather(1, index).float().log_softmax(-1)  # (batch, n, vocab)
    nll = -picked.gather(2, targets.loss_targets.to(logits.device).unsqueeze(-1)).squeeze(-1)
    return (nll * mask).sum(1) / mask.sum(1).clamp(min=1)


def loss_at(logits: Float[Tensor, "batch k vocab"], targets: Targets) -> Float[Tensor, " batch"]:
    """`loss` from logits already read at each example's `loss_positions` (batch, k, vocab):
    the mean over the valid (`loss_mask`) positions of -log p(loss target)."""
    nll = token_losses(logits, targets)  # (batch, k)
    mask = targets.loss_mask.to(logits.device)
    return (nll * mask).sum(1) / mask.sum(1).clamp(min=1)


def token_losses(
    logits: Float[Tensor, "batch k vocab"], targets: Targets
) -> Float[Tensor, "batch k"]:
    """-log p(target) at each of the k loss positions (padding entries included, unmasked)."""
    if targets.loss_targets is None or targets.loss_mask is None:
        raise MetricError("the loss metric needs loss positions and targets (induction tasks)")
    if logits.ndim != 3 or tuple(logits.shape[:2]) != tuple(targets.loss_targets.shape):
        raise MetricError(
            f"loss at positions needs logits (batch, k, vocab) matching loss targets "
            f"{tuple(targets.loss_targets.shape)}, got {tuple(logits.shape)}"
        )
    # at least float32 (half-precision models), float64 kept (finite-difference checks)
    logprobs = logits.to(torch.promote_types(logits.dtype, torch.float32)).log_softmax(-1)
    picked = logprobs.gather(2, targets.loss_targets.to(logits.device).unsqueeze(-1))
    return -picked.squeeze(-1)


def loss_accuracy(
    logits: Float[Tensor, "batch pos vocab"], targets: Targets
) -> Float[Tensor, " batch"]:
    """Share of each example's loss positions where the target is the top-1 token."""
    assert targets.loss_positions is not None and targets.loss_targets is not None
    positions = targets.loss_positions.to(logits.device)
    rows = torch.arange(logits.shape[0], device=logits.device).unsqueeze(1)
    top = logits[rows, positions].argmax(-1)  # (batch, n)
    hit = (top == targets.loss_targets.to(logits.device)).float()
    mask = targets.loss_mask.to(logits.device)
    return (hit * mask).sum(1) / mask.sum(1).clamp(min=1)


_AT_POSITION: dict[MetricKind, Callable[[Tensor, Targets], Tensor]] = {
    MetricKind.LOGIT_DIFF: logit_diff,
    MetricKind.PROB_DIFF: prob_diff,
    MetricKind.LOGIT_DIFF_BEST_WRONG: logit_diff_best_wrong,
    MetricKind.ANSWER_PROB: answer_prob,
    MetricKind.ACCURACY: accuracy,
}


def compute(
    kind: MetricKind,
    logits: Tensor,
    targets: Targets,
    clean_logits: Tensor | None = None,
    positions: Int[Tensor, " batch"] | None = None,
) -> Float[Tensor, " batch"]:
    """Any metric by kind. `logits` is (batch, vocab), or (batch, pos, vocab) with `positions`
    (for `loss`, always (batch, pos, vocab)); `kl_to_clean` needs `clean_logits` of that shape.
    Non-finite logits (NaN / inf) are an error, never a metric value."""
    check_finite(logits)
    if kind is MetricKind.LOSS:
        return loss(logits, targets)
    if positions is not None:
        logits = at_positions(logits, positions)
        if clean_logits is not None and clean_logits.ndim == 3:
            clean_logits = at_positions(clean_logits, positions)
    if kind is MetricKind.KL_TO_CLEAN:
        if clean_logits is None:
            raise MetricError("kl_to_clean needs the clean run's logits")
        return kl_to_clean(logits, clean_logits)
    return _AT_POSITION[kind](logits, targets)


def check_finite(logits: Tensor) -> None:
    """MetricError when any logit is NaN or infinite (damaged weights, an overflowing dtype or
    an intervention that wrote inf): the metric would be NaN and every result built on it too."""
    finite = torch.isfinite(logits.detach())
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise MetricError(
            f"the model produced {bad} non-finite logits (NaN or inf) out of {finite.numel()}: "
            "a metric on them is meaningless; check the model's weights (`wildcircuits "
            "verify-model MODEL`) and the interventions or ablation values applied"
        )


def normalize(
    values: Tensor | float, clean: float, corrupted: float, eps: float = 1e-8
) -> Tensor | float:
    """(m - m_corrupted) / (m_clean - m_corrupted): clean = 1, corrupted = 0."""
    gap = clean - corrupted
    if abs(gap) < eps:
        raise MetricError(
            f"cannot normalize: clean ({clean:.4g}) and corrupted ({corrupted:.4g}) metric agree"
        )
    return (values - corrupted) / gap
