"""Across models (universality): for every task that two or more models' cells explain, the
classes each circuit has, their depth, the share of the effect each carries, and whether the same
algorithm appears.

- depth of a class: the mean layer of its members (pairs) / the model's number of layers, so
  models of different depths compare (0 = first layer, near 1 = last);
- effect of a class: its measured path effect into the logits (the explanation's `ClassPath`s
  with receiver `logits`, normalized: 1 = the whole clean-vs-corrupted difference); where an
  explanation measured no path into the logits, the class evidence's `direct_effect` (logits)
  instead. `effect_source` says which. share = |effect| / sum of |effect| over the classes;
- same algorithm: the compared classes (IOI-paper classes where any model has one, else every
  class by name) sorted by depth are the same sequence in every model (`SAME`); the same set in
  another order (`REORDERED`); or different sets (`DIFFERENT`).
For IOI the classes are also set against the IOI paper's seven GPT-2-small classes
(`IOI_PAPER_CLASSES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any, Self

from wildcircuits.catalogue.compare import Cell, SkippedCell, class_heads, signature
from wildcircuits.explanation.algorithm import ARROW_THRESHOLD, ROLES
from wildcircuits.names import parse_display_node
from wildcircuits.results.codec import KeyPath, decode, encode
from wildcircuits.results.explain import Explanation, HeadClass

#: Wang et al. 2022, "Interpretability in the Wild: a Circuit for Indirect Object Identification
#: in GPT-2 small" (arXiv:2211.00593), Figure 2: 26 heads in seven classes (layer.head).
IOI_PAPER = "Wang et al. 2022, Interpretability in the Wild (arXiv:2211.00593)"
IOI_PAPER_CLASSES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("name mover", ("9.9", "9.6", "10.0")),
    ("negative name mover", ("10.7", "11.10")),
    ("backup name mover", ("9.0", "9.7", "10.1", "10.2", "10.6", "10.10", "11.2", "11.9")),
    ("S-inhibition", ("7.3", "7.9", "8.6", "8.10")),
    ("induction", ("5.5", "5.8", "5.9", "6.9")),
    ("duplicate token", ("0.1", "0.10", "3.0")),
    ("previous token", ("2.2", "4.11")),
)
LOGITS = "logits"
ARROW = " \u2192 "


class EffectSource(StrEnum):
    PATH_TO_LOGITS = "path effect into the logits (normalized)"
    DIRECT_EFFECT = "direct effect on the logits (class evidence)"
    NONE = "not measured"


class Verdict(StrEnum):
    SAME = "same algorithm"
    REORDERED = "same classes, different depth order"
    DIFFERENT = "different classes"


@dataclass(frozen=True)
class ClassProfile:
    """One class of one model's circuit: heads, positions, mean layer, depth, effect, share."""

    name: str
    paper_class: str | None
    heads: tuple[str, ...]
    positions: tuple[str, ...]
    mean_layer: float
    depth: float
    effect: float | None
    share: float | None


@dataclass(frozen=True)
class ModelProfile:
    """One model's circuit for a task: its classes in depth order and the compared order."""

    model: str
    n_layers: int
    classes: tuple[ClassProfile, ...]
    effect_source: EffectSource
    order: tuple[str, ...]


@dataclass(frozen=True)
class SharedArrow:
    """A measured class-to-class arrow (by compared class) and its effect in each model that
    has it with |effect| >= ARROW_THRESHOLD."""

    sender: str
    receiver: str
    slot: str
    effects: dict[str, float]


@dataclass(frozen=True)
class PaperRow:
    """One IOI-paper class: GPT-2 small's heads (from the paper) and each model's head count."""

    paper_class: str
    gpt2_small_heads: tuple[str, ...]
    heads: dict[str, int]


@dataclass(frozen=True)
class TaskComparison:
    """One task across models."""

    task: str
    models: tuple[ModelProfile, ...]
    compared_by: str  # "IOI-paper classes" or "class names"
    verdict: Verdict
    shared: tuple[str, ...]
    only: dict[str, tuple[str, ...]]
    shared_order_agrees: bool
    arrows: tuple[SharedArrow, ...]
    sentences: tuple[str, ...]
    paper_rows: tuple[PaperRow, ...] = ()


@dataclass(frozen=True)
class Universality:
    """Every compared task, the tasks explained by one model only, and the skipped cells."""

    tasks: tuple[TaskComparison, ...]
    single: dict[str, str]  # task -> the one model that explains it
    skipped: tuple[SkippedCell, ...]

    def to_json(self) -> dict[str, Any]:
        return encode(self)

    @classmethod
    def from_json(cls, data: Any) -> Self:
        return decode(cls, data, KeyPath("universality.json"))


def is_ioi(task: str) -> bool:
    return task == "ioi" or task.startswith(("ioi-", "ioi_"))


def _mean_layer(head_class: HeadClass) -> float:
    layers = [parse_display_node(p.node).layer for p in head_class.members]
    return sum(layers) / len(layers) if layers else float("nan")


def class_effects(explanation: Explanation) -> tuple[dict[str, float], EffectSource]:
    """Each class's effect and where it comes from (module docstring)."""
    into = [p for p in explanation.paths if p.receiver == LOGITS]
    if into:
        effects = {c.name: 0.0 for c in explanation.classes}
        for path in into:
            if path.sender in effects:
                effects[path.sender] += path.effect
        return effects, EffectSource.PATH_TO_LOGITS
    direct = {c.name: c.evidence["direct_effect"] for c in explanation.classes
              if "direct_effect" in c.evidence}  # fmt: skip
    return (direct, EffectSource.DIRECT_EFFECT) if direct else ({}, EffectSource.NONE)


def profile(cell: Cell, by_paper: bool) -> ModelProfile:
    """A cell's classes in depth order; `order`: the compared classes' signatures by depth."""
    effects, source = class_effects(cell.explanation)
    total = sum(abs(v) for v in effects.values())
    classes = []
    for c in cell.explanation.classes:
        mean = _mean_layer(c)
        effect = effects.get(c.name)
        share = abs(effect) / total if effect is not None and total > 0 else None
        positions = tuple(sorted({p.position for p in c.members}))
        classes.append(ClassProfile(c.name, c.paper_class, class_heads(c), positions, mean,
                                    mean / cell.n_layers, effect, share))  # fmt: skip
    classes.sort(key=lambda c: (c.depth, c.name))
    kept = [c for c in classes if c.paper_class or not by_paper]
    order = tuple(c.paper_class or c.name for c in kept)
    return ModelProfile(cell.model, cell.n_layers, tuple(classes), source, order)


def algorithm_verdict(orders: Sequence[Sequence[str]]) -> Verdict:
    """SAME when every order is equal, REORDERED when the sets are, else DIFFERENT."""
    if all(tuple(o) == tuple(orders[0]) for o in orders):
        return Verdict.SAME if orders[0] else Verdict.DIFFERENT
    if all(set(o) == set(orders[0]) for o in orders):
        return Verdict.REORDERED
    return Verdict.DIFFERENT


def shared_arrows(cells: Sequence[Cell]) -> tuple[SharedArrow, ...]:
    """Arrows (sender, receiver, slot by compared class) with |effect| >= ARROW_THRESHOLD, and
    each model's effect; strongest first."""
    found: dict[tuple[str, str, str], dict[str, float]] = {}
    for cell in cells:
        names = {c.name: signature(c) for c in cell.explanation.classes} | {LOGITS: LOGITS}
        for p in cell.explanation.paths:
            if abs(p.effect) < ARROW_THRESHOLD or p.sender not in names or p.receiver not in names:
                continue
            key = (names[p.sender], names[p.receiver], p.slot)
            effects = found.setdefault(key, {})
            effects[cell.model] = effects.get(cell.model, 0.0) + p.effect
    arrows = [SharedArrow(*key, effects) for key, effects in found.items()]
    arrows.sort(key=lambda a: (-len(a.effects), -max(abs(v) for v in a.effects.values())))
    return tuple(arrows)


def paper_rows(cells: Sequence[Cell]) -> tuple[PaperRow, ...]:
    """The IOI paper's seven classes, with how many heads each model's circuit has in each."""
    rows = []
    for paper_class, gpt2 in IOI_PAPER_CLASSES:
        counts = {}
        for cell in cells:
            heads = {h for c in cell.explanation.classes if c.paper_class == paper_class
                     for h in class_heads(c)}  # fmt: skip
            counts[cell.model] = len(heads)
        rows.append(PaperRow(paper_class, gpt2, counts))
    return tuple(rows)


def compare_task(task: str, cells: Sequence[Cell]) -> TaskComparison:
    """One task across the models of `cells` (two or more)."""
    by_paper = any(c.paper_class for cell in cells for c in cell.explanation.classes)
    profiles = tuple(profile(cell, by_paper) for cell in cells)
    orders = [p.order for p in profiles]
    shared = tuple(s for s in orders[0] if all(s in o for o in orders))
    only = {p.model: tuple(s for s in p.order if s not in shared) for p in profiles}
    agrees = all([s for s in o if s in shared] == list(shared) for o in orders)
    arrows = shared_arrows(cells)
    comparison = TaskComparison(
        task, profiles, "IOI-paper classes" if by_paper else "class names",
        algorithm_verdict(orders), shared, only, agrees, arrows, (),
        paper_rows(cells) if is_ioi(task) else (),
    )  # fmt: skip
    return replace(comparison, sentences=comparison_sentences(comparison))


def compare_models(cells: Sequence[Cell], skipped: Sequence[SkippedCell] = ()) -> Universality:
    """Every task with two or more usable cells, compared across its models."""
    by_task: dict[str, list[Cell]] = {}
    for cell in cells:
        by_task.setdefault(cell.task, []).append(cell)
    tasks, single = [], {}
    for task, group in sorted(by_task.items()):
        group.sort(key=lambda c: c.model)
        if len(group) == 1:
            single[task] = group[0].model
        else:
            tasks.append(compare_task(task, group))
    return Universality(tuple(tasks), single, tuple(skipped))


def plural(compared: str) -> str:
    """`name mover` -> `name movers` (the algorithm's labels); other classes quoted, as
    `"writes the answer at END" heads`."""
    return ROLES[compared][0] if compared in ROLES else f'"{compared}" heads'


def heads_phrase(heads: Sequence[str]) -> str:
    """`2 heads (L2.H0, L2.H1)`, `1 head (L0.H1)`, `no heads (MLPs only)`."""
    if not heads:
        return "no heads (MLPs only)"
    return f"{len(heads)} head{'s' if len(heads) > 1 else ''} ({', '.join(heads)})"


def _models(comparison: TaskComparison) -> str:
    names = [p.model for p in comparison.models]
    return "both models" if len(names) == 2 else f"all {len(names)} models"


def _class_of(model: ModelProfile, compared: str) -> ClassProfile:
    return next(c for c in model.classes if (c.paper_class or c.name) == compared)


def _verdict_sentence(t: TaskComparison) -> str:
    chains = "; ".join(f"{p.model}: {ARROW.join(p.order) or 'none'}" for p in t.models)
    if t.verdict is Verdict.SAME:
        return (f"The same algorithm appears in {_models(t)}: the same {t.compared_by} in the "
                f"same depth order ({ARROW.join(t.shared)}).")  # fmt: skip
    if t.verdict is Verdict.REORDERED:
        return f"{_models(t).capitalize()} have the same classes in a different order ({chains})."
    order = "in the same depth order" if t.shared_order_agrees else "in different depth orders"
    common = (f"they share {', '.join(t.shared)} ({order})" if t.shared
              else "they share no class")  # fmt: skip
    extra = "; ".join(f"only {m} has {', '.join(s)}" for m, s in t.only.items() if s)
    return f"Different classes (compared by {t.compared_by}): {common}" + (
        f"; {extra}." if extra else "."
    )


def _class_sentence(t: TaskComparison, compared: str) -> str:
    parts = []
    for p in t.models:
        c = _class_of(p, compared)
        share = "" if c.share is None else f", {c.share:.0%} of the effect"
        parts.append(f"{p.model} {heads_phrase(c.heads)} "
                     f"at depth {c.depth:.2f}{share}")  # fmt: skip
    positions = sorted({pos for p in t.models for pos in _class_of(p, compared).positions})
    feeders = [a for a in t.arrows if a.receiver == compared and len(a.effects) == len(t.models)]
    fed = ""
    if feeders:
        fed = " fed by " + ", ".join(
            f"{plural(a.sender)} ({a.slot}: "
            + ", ".join(f"{m} {v:+.2f}" for m, v in a.effects.items()) + ")"
            for a in feeders
        )  # fmt: skip
    return (f"{_models(t).capitalize()} have {plural(compared)} at {', '.join(positions)}{fed}: "
            f"{'; '.join(parts)}.")  # fmt: skip


def comparison_sentences(t: TaskComparison) -> tuple[str, ...]:
    """The comparison in words, every number from the profiles and the measured arrows."""
    out = [_verdict_sentence(t)]
    out += [_class_sentence(t, compared) for compared in t.shared]
    for a in t.arrows:
        if len(a.effects) < len(t.models):
            effects = ", ".join(f"{v:+.2f}" for v in a.effects.values())
            out.append(f"Only {', '.join(a.effects)}: {a.sender}{ARROW}{a.receiver} "
                       f"({a.slot}, {effects}).")  # fmt: skip
    sources = {p.effect_source for p in t.models}
    out.append(
        "Effect shares: "
        + "; ".join(f"{p.model}: {p.effect_source.value}" for p in t.models)
        + ("" if len(sources) == 1 else " (different measures: compare with care)")
        + "."
    )
    return tuple(out)


__all__ = [
    "IOI_PAPER",
    "IOI_PAPER_CLASSES",
    "ClassProfile",
    "EffectSource",
    "ModelProfile",
    "PaperRow",
    "SharedArrow",
    "TaskComparison",
    "Universality",
    "Verdict",
    "algorithm_verdict",
    "class_effects",
    "compare_models",
    "compare_task",
    "comparison_sentences",
    "heads_phrase",
    "is_ioi",
    "profile",
]
