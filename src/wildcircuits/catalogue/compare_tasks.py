"""Across tasks (reuse), per model: which heads the circuits of different tasks share, and
which classes recur (as Merullo et al. report for IOI and Colored Objects).

- the heads of a cell: the heads of its compact circuit (`explanation.circuit.pairs`, any
  position; MLPs left out);
- Jaccard(A, B) = |A & B| / |A | B| for every pair of tasks of one model; undefined (None) when
  both circuits have no heads;
- a recurring class: a class (compared by IOI-paper class, else by name) found in two or more of
  a model's tasks, with the heads it has in each task and those it has in several;
- a shared head: a head in two or more tasks' circuits, with its class in each (or none).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from itertools import combinations
from typing import Any, Self

from wildcircuits.catalogue.compare import Cell, SkippedCell, class_heads, signature
from wildcircuits.catalogue.compare_models import heads_phrase
from wildcircuits.names import parse_display_node
from wildcircuits.results.codec import KeyPath, decode, encode

UNCLASSIFIED = "no class"


def jaccard(a: frozenset[str], b: frozenset[str]) -> float | None:
    """|a & b| / |a | b|; None when both are empty."""
    union = a | b
    return len(a & b) / len(union) if union else None


@dataclass(frozen=True)
class TaskPair:
    """Two tasks of one model: their Jaccard index and the heads they share."""

    first: str
    second: str
    jaccard: float | None
    shared: tuple[str, ...]


@dataclass(frozen=True)
class RecurringClass:
    """A class found in several tasks: its heads per task, and the heads it has in 2+ tasks."""

    compared: str
    tasks: tuple[str, ...]
    heads: dict[str, tuple[str, ...]]
    shared_heads: tuple[str, ...]


@dataclass(frozen=True)
class SharedHead:
    """A head in two or more tasks' circuits, and its class in each of them."""

    head: str
    classes: dict[str, str]


@dataclass(frozen=True)
class ModelReuse:
    """One model across its tasks; `jaccard[i][j]` is between `tasks[i]` and `tasks[j]`."""

    model: str
    tasks: tuple[str, ...]
    heads: dict[str, tuple[str, ...]]
    jaccard: tuple[tuple[float | None, ...], ...]
    pairs: tuple[TaskPair, ...]
    recurring: tuple[RecurringClass, ...]
    shared_heads: tuple[SharedHead, ...]
    sentences: tuple[str, ...]


@dataclass(frozen=True)
class Reuse:
    """Every model with two or more tasks, the models with one, and the skipped cells."""

    models: tuple[ModelReuse, ...]
    single: dict[str, str]  # model -> the one task it explains
    skipped: tuple[SkippedCell, ...]

    def to_json(self) -> dict[str, Any]:
        return encode(self)

    @classmethod
    def from_json(cls, data: Any) -> Self:
        return decode(cls, data, KeyPath("reuse.json"))


def _sorted_heads(heads) -> tuple[str, ...]:
    return tuple(sorted(heads, key=parse_display_node))


def recurring_classes(cells: Sequence[Cell]) -> tuple[RecurringClass, ...]:
    """Classes (by signature) found in two or more of the cells (one model's tasks)."""
    found: dict[str, dict[str, tuple[str, ...]]] = {}
    for cell in cells:
        for c in cell.explanation.classes:
            per_task = found.setdefault(signature(c), {})
            per_task[cell.task] = _sorted_heads(
                set(per_task.get(cell.task, ())) | set(class_heads(c))
            )
    out = []
    for compared, per_task in found.items():
        if len(per_task) < 2:
            continue
        counts: dict[str, int] = {}
        for heads in per_task.values():
            for head in heads:
                counts[head] = counts.get(head, 0) + 1
        shared = _sorted_heads(h for h, n in counts.items() if n >= 2)
        out.append(RecurringClass(compared, tuple(per_task), per_task, shared))
    out.sort(key=lambda r: (-len(r.tasks), -len(r.shared_heads), r.compared))
    return tuple(out)


def shared_heads(cells: Sequence[Cell]) -> tuple[SharedHead, ...]:
    """Heads in two or more cells' circuits, each with its class per task."""
    where: dict[str, dict[str, str]] = {}
    for cell in cells:
        owner = {h: c.name for c in cell.explanation.classes for h in class_heads(c)}
        for head in cell.heads():
            where.setdefault(head, {})[cell.task] = owner.get(head, UNCLASSIFIED)
    kept = [SharedHead(h, t) for h, t in where.items() if len(t) >= 2]
    kept.sort(key=lambda s: (-len(s.classes), parse_display_node(s.head)))
    return tuple(kept)


def _sentences(reuse: ModelReuse) -> tuple[str, ...]:
    out = []
    for p in reuse.pairs:
        if p.shared:
            out.append(f"{p.first} and {p.second} share {heads_phrase(p.shared)}; "
                       f"Jaccard {p.jaccard:.2f}.")  # fmt: skip
    for r in reuse.recurring:
        heads = (f"shared heads: {', '.join(r.shared_heads)}" if r.shared_heads
                 else "no head in common")  # fmt: skip
        out.append(f"{r.compared} recurs in {', '.join(r.tasks)} ({heads}).")
    if not out:
        out.append(f"No head and no class of {reuse.model} is shared by two tasks.")
    return tuple(out)


def model_reuse(model: str, cells: Sequence[Cell]) -> ModelReuse:
    """One model's cells (two or more tasks) compared."""
    cells = sorted(cells, key=lambda c: c.task)
    tasks = tuple(c.task for c in cells)
    sets = {c.task: c.heads() for c in cells}
    matrix = tuple(tuple(jaccard(sets[a], sets[b]) for b in tasks) for a in tasks)
    pairs = tuple(
        TaskPair(a, b, jaccard(sets[a], sets[b]), _sorted_heads(sets[a] & sets[b]))
        for a, b in combinations(tasks, 2)
    )
    heads = {t: _sorted_heads(sets[t]) for t in tasks}
    reuse = ModelReuse(model, tasks, heads, matrix, pairs, recurring_classes(cells),
                       shared_heads(cells), ())  # fmt: skip
    return replace(reuse, sentences=_sentences(reuse))


def compare_tasks(cells: Sequence[Cell], skipped: Sequence[SkippedCell] = ()) -> Reuse:
    """Every model with two or more usable cells, compared across its tasks."""
    by_model: dict[str, list[Cell]] = {}
    for cell in cells:
        by_model.setdefault(cell.model, []).append(cell)
    models, single = [], {}
    for model, group in sorted(by_model.items()):
        if len(group) == 1:
            single[model] = group[0].task
        else:
            models.append(model_reuse(model, group))
    return Reuse(tuple(models), single, tuple(skipped))


__all__ = [
    "ModelReuse",
    "RecurringClass",
    "Reuse",
    "SharedHead",
    "TaskPair",
    "compare_tasks",
    "jaccard",
    "model_reuse",
    "recurring_classes",
    "shared_heads",
]
