"""A patching problem: aligned clean / corrupted batches and the metric read on them.

Every localisation and discovery method takes a `PatchingProblem`, so none depends on how the
prompts were made (built-in task, user file, or a hand-written list). A problem is plain data:
`select` gives a sub-batch (for chunking) and `score` evaluates the metric per row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch

from wildcircuits.errors import TaskError
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.models.tokens import Tokens, tokens_from_ids
from wildcircuits.tasks.metrics import (
    HIGHER_IS_BETTER,
    Targets,
    check_finite,
    compute,
    loss_at,
    make_targets,
    pad_sets,
)
from wildcircuits.tasks.spec import MetricKind

Rows = slice | Sequence[int] | torch.Tensor


@dataclass(frozen=True)
class LengthGroup:
    """rows: indices into the whole problem; start: its first column there; problem: the rows,
    columns start.. on (positions shifted to match)."""

    rows: torch.Tensor
    start: int
    problem: PatchingProblem


@dataclass(frozen=True)
class PatchingProblem:
    """Clean and corrupted batches of equal shape, the metric, and where it is read.

    positions: (batch,) the position whose logits the metric reads (usually END); for the loss
    metric (batch, k), the row's loss positions (`targets.loss_positions`, padding entries of
    ragged rows repeat the row's first position and are masked out by `targets.loss_mask`).
    named_positions: e.g. {"IO": (batch,), "S1": (batch,), "END": (batch,)} token indices.
    clean_logits: (batch, vocab) clean logits at `positions`; needed by KL-to-clean only.
    groups: (batch,) long, each row's group (for a task dataset: its template, numbered in the
    order of `group_names`), or None; per-template means (`mean:template`) need them.
    provenance: how numbers are obtained (task, split, seed, corruption, model, quantization,
    metric); every result made from this problem copies it.
    """

    clean: Tokens
    corrupted: Tokens
    positions: torch.Tensor
    targets: Targets
    metric: MetricKind = MetricKind.LOGIT_DIFF
    named_positions: Mapping[str, torch.Tensor] = field(default_factory=dict)
    provenance: Mapping[str, Any] = field(default_factory=dict)
    clean_logits: torch.Tensor | None = None
    groups: torch.Tensor | None = None
    group_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        check_aligned(self.clean, self.corrupted)
        if self.groups is not None and tuple(self.groups.shape) != (self.batch,):
            raise TaskError(
                f"groups has shape {tuple(self.groups.shape)}; give one group id per row "
                f"({self.batch},)"
            )
        check_positions(self.positions, self.targets, self.metric, self.batch)

    @property
    def batch(self) -> int:
        return self.clean.batch

    @property
    def higher_is_better(self) -> bool:
        return HIGHER_IS_BETTER[self.metric]

    @property
    def multi_position(self) -> bool:
        """Whether the metric reads k positions per row (positions (batch, k): the loss)."""
        return self.positions.ndim == 2

    @property
    def position_mask(self) -> torch.Tensor | None:
        """(batch, k) bool, the valid entries of `positions`, for a multi-position metric."""
        return self.targets.loss_mask if self.multi_position else None

    def metric_tokens(self) -> torch.Tensor:
        """(batch, pos) bool: the tokens whose logits the metric reads (valid ones only)."""
        tokens = torch.zeros(self.clean.input_ids.shape, dtype=torch.bool)
        positions = self.positions.cpu()
        if not self.multi_position:
            tokens[torch.arange(self.batch), positions] = True
            return tokens.to(self.positions.device)
        rows = torch.arange(self.batch)[:, None].expand_as(positions)
        valid = self.targets.loss_mask.cpu().bool()
        tokens[rows[valid], positions[valid]] = True
        return tokens.to(self.positions.device)

    def score(self, logits: torch.Tensor, rows: Rows | None = None) -> torch.Tensor:
        """Metric per row from logits at `positions`: (batch, vocab) -> (batch,); for the loss,
        (batch, k, vocab) -> (batch,), the mean over the row's valid positions.

        `rows` says which rows of this problem the logits belong to (when chunking).
        """
        targets = self.targets if rows is None else _select_targets(self.targets, rows)
        if self.multi_position:
            check_finite(logits)
            return loss_at(logits, targets.to(logits.device))
        clean = self.clean_logits
        if clean is not None and rows is not None:
            clean = clean[rows]
        return compute(self.metric, logits, targets.to(logits.device), clean_logits=clean)

    def row_mean(self, values: torch.Tensor, rows: Rows | None = None) -> torch.Tensor:
        """Per-position values (..., batch, k) -> per-row means over valid positions
        (..., batch); values (..., batch) of a one-position problem come back unchanged."""
        if not self.multi_position:
            return values
        mask = self.targets.loss_mask if rows is None else self.targets.loss_mask[rows]
        mask = mask.to(values.device, values.dtype)  # (batch, k)
        return (values * mask).sum(-1) / mask.sum(-1).clamp(min=1)

    def select(self, rows: Rows) -> PatchingProblem:
        """The sub-problem of the given rows."""
        return replace(
            self,
            clean=self.clean.select(rows),
            corrupted=self.corrupted.select(rows),
            positions=self.positions[rows],
            targets=_select_targets(self.targets, rows),
            named_positions={k: v[rows] for k, v in self.named_positions.items()},
            clean_logits=None if self.clean_logits is None else self.clean_logits[rows],
            groups=None if self.groups is None else self.groups[rows],
        )

    def chunks(self, size: int) -> list[tuple[slice, PatchingProblem]]:
        """Consecutive sub-problems of at most `size` rows, with their row slices."""
        return [
            (slice(s, min(s + size, self.batch)), self.select(slice(s, min(s + size, self.batch))))
            for s in range(0, self.batch, size)
        ]

    def by_length(self) -> list[LengthGroup]:
        """Sub-problems of the rows with the same padding, each without the padding columns
        all its rows share. The real tokens are computed exactly as in the padded batch
        (padding is masked out), with less work per forward."""
        real = self.clean.attention_mask.bool() | self.corrupted.attention_mask.bool()
        groups: dict[bytes, list[int]] = {}
        for row, pattern in enumerate(real.cpu()):
            groups.setdefault(pattern.numpy().tobytes(), []).append(row)
        parts = []
        for rows in groups.values():
            index = torch.tensor(rows)
            columns = real[index].any(dim=0).nonzero().squeeze(1)
            start, stop = int(columns[0]), int(columns[-1]) + 1
            part = self.select(index.to(self.positions.device))
            part = replace(
                part,
                clean=part.clean.columns(start, stop),
                corrupted=part.corrupted.columns(start, stop),
                positions=part.positions - start,
                targets=_shift_loss_positions(part.targets, start),
                named_positions={k: v - start for k, v in part.named_positions.items()},
            )
            parts.append(LengthGroup(index, start, part))
        return parts

    def with_clean_logits(self, model: InstrumentedModel) -> PatchingProblem:
        """This problem with its clean logits at `positions` filled in (for KL-to-clean)."""
        logits = model.logits(self.clean, positions=self.positions)
        return replace(self, clean_logits=logits.detach())


def check_positions(
    positions: torch.Tensor, targets: Targets, metric: MetricKind, batch: int
) -> None:
    """One position per row for every metric but the loss; (batch, k) loss positions, equal to
    the targets' and with at least one valid entry per row, for the loss."""
    if metric is not MetricKind.LOSS:
        if tuple(positions.shape) != (batch,):
            raise TaskError(
                f"positions has shape {tuple(positions.shape)}; the {metric.value} metric reads "
                f"one position per row: give ({batch},)"
            )
        return
    if targets.loss_positions is None or targets.loss_targets is None:
        raise TaskError(
            "the loss metric needs loss positions and targets per row; build the problem with "
            "`problem_from_dataset` from a task whose examples set `loss_positions`"
        )
    shape = tuple(targets.loss_positions.shape)
    if positions.ndim != 2 or tuple(positions.shape) != shape or positions.shape[0] != batch:
        raise TaskError(
            f"positions has shape {tuple(positions.shape)}; the loss metric reads the loss "
            f"positions, (batch, k) = {shape} (batch {batch})"
        )
    empty = (~targets.loss_mask.bool()).all(dim=1)
    if bool(empty.any()):
        raise TaskError(
            f"rows {empty.nonzero().flatten().tolist()[:10]} have no loss positions; every "
            "example of a loss task needs at least one (check the task's `loss_positions`)"
        )


def loss_position_tensors(
    rows: Sequence[Sequence[int]], targets: Sequence[Sequence[int]], task: str = "task"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-row loss positions and targets -> (batch, k) positions (ragged rows padded with the
    row's first position), targets (padded with 0) and the validity mask."""
    empty = [i for i, r in enumerate(rows) if not r]
    if empty:
        raise TaskError(
            f"{task}: examples {empty[:10]} have no loss positions; a loss-metric task needs at "
            "least one loss position and target per example"
        )
    if any(len(r) != len(t) for r, t in zip(rows, targets, strict=True)):
        raise TaskError(f"{task}: each example needs one loss target per loss position")
    positions, mask = pad_sets(rows)
    first = positions[:, :1].expand_as(positions)
    return torch.where(mask, positions, first), pad_sets(targets)[0], mask


def _shift_loss_positions(targets: Targets, start: int) -> Targets:
    if targets.loss_positions is None:
        return targets
    return replace(targets, loss_positions=targets.loss_positions - start)


def _select_targets(targets: Targets, rows: Rows) -> Targets:
    return Targets(*(None if t is None else t[rows] for t in _fields(targets)))


def _fields(targets: Targets) -> tuple[torch.Tensor | None, ...]:
    return tuple(getattr(targets, name) for name in targets.__dataclass_fields__)


def check_aligned(clean: Tokens, corrupted: Tokens) -> None:
    """Clean and corrupted rows must have the same real length and padding."""
    if clean.input_ids.shape != corrupted.input_ids.shape:
        raise TaskError(
            f"clean batch shape {tuple(clean.input_ids.shape)} differs from corrupted "
            f"{tuple(corrupted.input_ids.shape)}; pair each clean prompt with a corrupted "
            "prompt of the same token length"
        )
    differs = (clean.attention_mask != corrupted.attention_mask).any(-1)
    if bool(differs.any()):
        rows = differs.nonzero().flatten().tolist()
        raise TaskError(
            f"clean/corrupt length mismatch in rows {rows}: each corrupted prompt must have "
            "exactly as many tokens as its clean prompt (check multi-token fillers)"
        )


def single_token(model: InstrumentedModel, word: str) -> int:
    """The id of `word` as exactly one token (no special tokens), else a clear error."""
    ids = model.tokenizer.encode(word, add_special_tokens=False)
    if len(ids) != 1:
        raise TaskError(
            f"answer {word!r} is {len(ids)} tokens for {model.info.model_id} "
            f"({model.to_str_tokens(ids)}); answers must be single tokens "
            "(try a leading space or another word)"
        )
    return int(ids[0])


def _model_provenance(model: InstrumentedModel) -> dict[str, Any]:
    return {"model": model.info.model_id, "quantization": model.info.quantization}


def problem_from_prompts(
    model: InstrumentedModel,
    clean: Sequence[str],
    corrupted: Sequence[str],
    answers: Sequence[str],
    distractors: Sequence[str],
    provenance: Mapping[str, Any] | None = None,
) -> PatchingProblem:
    """A logit-difference problem from explicit prompts and single-token answers."""
    if not len(clean) == len(corrupted) == len(answers) == len(distractors):
        raise TaskError("clean, corrupted, answers and distractors need the same length")
    clean_tokens = model.tokenize(list(clean))
    targets = make_targets(
        [[single_token(model, w)] for w in answers],
        [[single_token(model, w)] for w in distractors],
    )
    return PatchingProblem(
        clean=clean_tokens,
        corrupted=model.tokenize(list(corrupted)),
        positions=clean_tokens.last_index,
        targets=targets,
        named_positions={"END": clean_tokens.last_index},
        provenance={**_model_provenance(model), "metric": "logit_diff", **(provenance or {})},
    )


def problem_from_dataset(
    model: InstrumentedModel,
    dataset,
    corruption: str | None = None,
    metric: MetricKind | None = None,
) -> PatchingProblem:
    """A problem from a task `Dataset` built for this model's tokenizer."""
    if len(dataset) == 0:
        raise TaskError(f"task {dataset.task!r}: the dataset is empty")
    corruption = corruption or dataset.default_corruption
    metric = metric or dataset.metric
    clean = _pad([p.token_ids for p in dataset.prompts()]).to(model.device)
    corrupted = _pad([p.token_ids for p in dataset.prompts(corruption)]).to(model.device)
    names = set.intersection(*(set(e.clean.positions) for e in dataset.examples))
    named = {n: torch.tensor(dataset.positions(n), device=model.device) for n in sorted(names)}
    group_names = tuple(sorted({e.template for e in dataset.examples}))
    groups = torch.tensor([group_names.index(e.template) for e in dataset.examples])
    targets, positions = _dataset_targets(dataset, metric)
    problem = PatchingProblem(
        clean=clean,
        corrupted=corrupted,
        positions=positions.to(model.device),
        targets=targets,
        metric=metric,
        named_positions=named,
        provenance={
            **_model_provenance(model),
            **dataset.provenance(),
            **({"position": "loss positions"} if metric is MetricKind.LOSS else {}),
            "metric": metric.value,
            "corruption": corruption,
        },
        groups=groups.to(model.device),
        group_names=group_names,
    )
    return problem.with_clean_logits(model) if metric is MetricKind.KL_TO_CLEAN else problem


def _dataset_targets(dataset, metric: MetricKind) -> tuple[Targets, torch.Tensor]:
    """The targets and metric positions: (batch,) for one-position metrics; for the loss the
    examples' loss positions (batch, k) (answers, which loss tasks leave empty, as 0)."""
    examples = dataset.examples
    if metric is not MetricKind.LOSS:
        targets = make_targets([e.answers for e in examples], [e.distractors for e in examples])
        return targets, torch.tensor(dataset.positions())
    positions, loss_targets, mask = loss_position_tensors(
        [e.loss_positions for e in examples], [e.loss_targets for e in examples], dataset.task
    )
    answers = make_targets([e.answers or (0,) for e in examples],
                           [e.distractors or (0,) for e in examples])  # fmt: skip
    return replace(
        answers, loss_positions=positions, loss_targets=loss_targets, loss_mask=mask
    ), positions


def _pad(rows: Sequence[Sequence[int]]) -> Tokens:
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros(len(rows), width, dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(list(row))
        mask[i, : len(row)] = 1
    return tokens_from_ids(ids, mask)
