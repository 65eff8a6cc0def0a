"""Loss-metric problems (repeated random tokens, read at many positions per row) and their
slow, obvious reference: the problem "unrolled" into one row per loss position.

`loss_problem` makes prompts A A (A distinct random tokens) whose metric is the mean
next-token loss over the second A; the corruption replaces the first A. Rows are ragged on
purpose: one row is right-padded (a shorter A) and one keeps only some of its loss positions
(a validity mask), so a fast path that mixes rows, positions or padding shows.

`unroll` gives the same numbers with one position per row: each valid loss position becomes its
own row (positions (rows, 1), that position's -log p(target)). Each unrolled row is repeated
lcm(k) / k_row times, so the plain mean over unrolled rows equals the mean over rows of each
row's mean loss (the multi-position problem's batch mean), ragged rows included.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from wildcircuits.models import tokens_from_ids
from wildcircuits.patching.problem import PatchingProblem, loss_position_tensors
from wildcircuits.tasks.metrics import make_targets
from wildcircuits.tasks.spec import MetricKind

FIRST_TOKEN = 3  # ids below are special (pad, bos, eos)


def loss_problem(
    vocab: int, lengths=(5, 5, 5, 4), keep=(None, None, 2, None), seed: int = 0
) -> PatchingProblem:
    """Rows A A with len(A) = lengths[i] (right-padded to the longest); loss positions: the second
    A's tokens but its last, each predicting the next token; keep[i]: keep only the first that
    many of row i's loss positions. Named positions REPEAT (the second A's first token), END."""
    generator = torch.Generator().manual_seed(seed)
    width = 2 * max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    broken, mask = ids.clone(), ids.clone()
    positions, targets = [], []
    for row, length in enumerate(lengths):
        pool = FIRST_TOKEN + torch.randperm(vocab - FIRST_TOKEN, generator=generator)
        first, other = pool[:length], pool[length : 2 * length]
        ids[row, : 2 * length] = torch.cat([first, first])
        broken[row, : 2 * length] = torch.cat([other, first])
        mask[row, : 2 * length] = 1
        at = list(range(length, 2 * length - 1))[: keep[row]]
        positions.append(at)
        targets.append([int(ids[row, p + 1]) for p in at])
    loss_at, loss_targets, loss_mask = loss_position_tensors(positions, targets)
    base = make_targets([[0]] * len(lengths), [[0]] * len(lengths))
    repeat = torch.tensor(lengths)
    return PatchingProblem(
        clean=tokens_from_ids(ids, mask),
        corrupted=tokens_from_ids(broken, mask),
        positions=loss_at,
        targets=replace(
            base, loss_positions=loss_at, loss_targets=loss_targets, loss_mask=loss_mask
        ),
        metric=MetricKind.LOSS,
        named_positions={"REPEAT": repeat, "END": 2 * repeat - 1},
        provenance={"task": "repeated tokens", "metric": "loss"},
        groups=torch.tensor([0, 1] * (len(lengths) // 2) + [0] * (len(lengths) % 2)),
        group_names=("a", "b"),
    )


def unroll(problem: PatchingProblem) -> PatchingProblem:
    """One row per valid loss position (repeated lcm(k) / k_row times): positions (rows, 1)."""
    mask = problem.targets.loss_mask
    counts = mask.sum(1).tolist()
    common = math.lcm(*counts)
    rows, columns = [], []
    for row, count in enumerate(counts):
        valid = mask[row].nonzero().flatten().tolist()
        for column in valid * (common // count):
            rows.append(row)
            columns.append(column)
    rows_t, columns_t = torch.tensor(rows), torch.tensor(columns)
    positions = problem.positions[rows_t, columns_t].unsqueeze(1)  # (rows, 1)
    loss_targets = problem.targets.loss_targets[rows_t, columns_t].unsqueeze(1)
    base = problem.select(rows_t)
    targets = replace(
        base.targets,
        loss_positions=positions,
        loss_targets=loss_targets,
        loss_mask=torch.ones_like(positions, dtype=torch.bool),
    )
    return replace(base, positions=positions, targets=targets)
