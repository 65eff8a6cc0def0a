"""Class-to-class path patching: the measured arrows of the class diagram.

For functional classes of heads (`HeadClass`, members `Pair(node, position)`), an arrow
sender -> receiver is path patching (`wildcircuits.patching.path`, the IOI paper's convention)
from every member of the sender class (a head's z, an MLP's output, at the member's own tokens
only: the position it is a member at, per row) into the
receiver class's members' inputs through one slot (q, k or v for heads, `in` for MLPs), at the
member's position (per row, the token that position names there): a q or an MLP input at that
token only; a k or v at every token up to it (the keys and values the member's query there
reads; later tokens never reach it). The arrow class -> `logits` patches the senders into the
final residual stream. `effect` is the
normalized path effect (m_clean - m_patched) / (m_clean - m_corrupted), with a bootstrap interval
over prompts.

Batching: step 2 (the sender class patched, every other head frozen) does not depend on the
receiver, so it runs once per chunk of sender classes side by side (the clean batch repeated
once per class), recording every receiver's input at once; then step 3 runs once per receiver
(class, slot) with the rows of all its sender classes, on one shared cache of the clean and
corrupted runs. A sender class none of whose members comes before a receiver member has no path
there and is not measured (its effect would be exactly 0).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from wildcircuits.errors import InputError
from wildcircuits.explanation.algorithm import describe_algorithm
from wildcircuits.explanation.positions import LOSS, position_index
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.names import (
    LOGITS,
    Node,
    NodeKind,
    Receiver,
    Shape,
    Slot,
    head_node,
    parse_display_node,
)
from wildcircuits.patching.path import (
    PathCache,
    path_cache,
    path_exists,
    path_patch_jobs,
    path_patch_sets,
)
from wildcircuits.patching.path_steps import ReceiverJob
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Component, Site
from wildcircuits.results.explain import ClassPath, HeadClass

#: Bootstrap resamples of the prompts behind each arrow's interval (0: no interval).
N_BOOTSTRAP = 1000
#: Slots of a head receiver; an MLP receives through `in`.
HEAD_SLOTS = (Slot.Q, Slot.K, Slot.V)


@dataclass(frozen=True)
class PathJob:
    """One batched measurement: every sender class into one receiver (class, slot).

    receivers / masks: the receiver inputs and, per receiver, the (batch, pos) positions it is
    patched at (None for the logits); senders: sender class names, in class order."""

    receiver: str
    slot: str
    position: str
    receivers: tuple[Receiver, ...]
    masks: tuple[Tensor | None, ...]
    senders: tuple[str, ...]


def class_paths(
    model: InstrumentedModel,
    problem: PatchingProblem,
    classes: Sequence[HeadClass],
    progress: bool = True,
    max_rows: int = 128,
    n_bootstrap: int = N_BOOTSTRAP,
) -> tuple[ClassPath, ...]:
    """Every measurable arrow between the classes and from each class to the logits.

    Order: per receiver class (in the order given) its slots q, k, v / in, then the logits;
    within a job the sender classes in the order given. `max_rows` caps the rows of one
    forward (sender classes x batch)."""
    jobs = path_jobs(model, problem, classes)
    names, index = position_index(problem)
    sets = [_senders(c, names, index) for c in classes]
    order = {c.name: k for k, c in enumerate(classes)}
    cache = path_cache(model, problem)
    *to_classes, to_logits = jobs
    bar = _progress(len(jobs), progress)
    measured = path_patch_jobs(
        model, problem, cache, sets,
        [ReceiverJob(j.receivers, j.masks, tuple(order[n] for n in j.senders)) for j in to_classes],
        max_rows, on_job=bar.update if bar else None,
    ) if to_classes else []  # fmt: skip
    logits = path_patch_sets(
        model, problem, cache, [sets[order[n]] for n in to_logits.senders],
        list(to_logits.receivers), None, max_rows,
    )  # fmt: skip
    if bar:
        bar.close()
    out: list[ClassPath] = []
    for job, metrics in zip(jobs, [*measured, logits], strict=True):
        for name, per_row in zip(job.senders, metrics, strict=True):  # (batch,) per sender
            effect, interval = _effect(cache, per_row, n_bootstrap)
            out.append(ClassPath(name, job.receiver, job.slot, job.position, effect, interval))
    return tuple(out)


def path_jobs(
    model: InstrumentedModel, problem: PatchingProblem, classes: Sequence[HeadClass]
) -> tuple[PathJob, ...]:
    """The batched measurements `class_paths` runs (one per receiver class and slot, plus the
    logits), each listing the sender classes that have a path to it."""
    names, index = position_index(problem)
    _check_classes(model, classes, names)
    nodes = {c.name: [parse_display_node(p.node) for p in c.members] for c in classes}
    jobs = []
    for receiver in classes:
        parts = [(parse_display_node(p.node), p.position) for p in receiver.members]
        inputs = receiver_inputs(model, [(n, index == names.index(p)) for n, p in parts])
        for slot, receivers, masks in inputs:
            positions = [p for n, p in parts if (n.kind is NodeKind.MLP) == (slot is Slot.IN)]
            senders = tuple(
                c.name
                for c in classes
                if c.name != receiver.name and _reaches(model, nodes[c.name], receivers)
            )
            if senders:
                where = ", ".join(dict.fromkeys(positions))
                jobs.append(PathJob(receiver.name, slot.value, where, receivers, masks, senders))
    logits = PathJob(
        "logits", "logits", _metric_position(problem, names, index), (Receiver(LOGITS),),
        (None,), tuple(c.name for c in classes),
    )  # fmt: skip
    return (*jobs, logits)


def forward_counts(jobs: Sequence[PathJob], batch: int, max_rows: int = 128) -> dict[str, int]:
    """Forward passes of `class_paths` (2 cached runs; one shared step-2 run per chunk of
    sender classes; per receiver job a step-3 run per chunk of its sender classes; the logits
    one run per chunk) against the naive plan: one `path_patch` per class pair (its own 2
    cached runs, then 2 runs, or 1 to the logits)."""
    per_chunk = max(1, max_rows // batch)
    chunks = lambda n: -(-n // per_chunk)  # noqa: E731
    *to_classes, to_logits = jobs
    batched = 2 + chunks(len(to_logits.senders)) * (2 if to_classes else 1)
    batched += sum(chunks(len(job.senders)) for job in to_classes)
    naive = sum((2 + (1 if job.receiver == "logits" else 2)) * len(job.senders) for job in jobs)
    return {
        "forwards": batched,
        "naive_forwards": naive,
        "arrows": sum(len(j.senders) for j in jobs),
    }


def _check_classes(model, classes: Sequence[HeadClass], names: Sequence[str]) -> None:
    shape = Shape(model.n_layers, model.n_heads)
    seen: set[str] = set()
    for c in classes:
        if c.name in seen or c.name == "logits":
            why = "is reserved for the logits" if c.name == "logits" else "is used twice"
            raise InputError(f"class name {c.name!r} {why}; give each class its own name")
        seen.add(c.name)
        if not c.members:
            raise InputError(f"class {c.name!r} has no members; drop it or give it members")
        for pair in c.members:
            node = parse_display_node(pair.node, shape)
            if node.kind not in (NodeKind.HEAD, NodeKind.MLP):
                raise InputError(f"class {c.name!r}: member {pair.name} is not a head or MLP")
            if pair.position not in names:
                raise InputError(
                    f"class {c.name!r}: member {pair.name} has position {pair.position!r}, "
                    f"not one of this task's positions ({', '.join(names)})"
                )


def receiver_inputs(
    model: InstrumentedModel, members: Sequence[tuple[Node, Tensor]]
) -> list[tuple[Slot, tuple[Receiver, ...], tuple[Tensor, ...]]]:
    """(slot, receivers, (batch, pos) masks) per slot that heads / MLPs (each with the mask of
    its position's tokens) receive through: q, k, v of the heads, `in` of the MLPs. A k / v
    receiver is the head's KV head (grouped-query attention: shared by its query heads)."""
    group = model.n_heads // model.n_kv_heads
    heads = [(n, at) for n, at in members if n.kind is NodeKind.HEAD]
    mlps = [(n, at) for n, at in members if n.kind is NodeKind.MLP]
    out = []
    for slot in HEAD_SLOTS if heads else ():
        kv = slot is not Slot.Q
        receivers = tuple(Receiver(head_node(n.layer, n.head // group) if kv else n, slot)
                          for n, _ in heads)  # fmt: skip
        out.append((slot, receivers, tuple(_slot_mask(at, slot) for _, at in heads)))
    if mlps:
        receivers = tuple(Receiver(n) for n, _ in mlps)
        out.append((Slot.IN, receivers, tuple(_slot_mask(at, Slot.IN) for _, at in mlps)))
    return out


def _slot_mask(at: Tensor, slot: Slot) -> Tensor:
    """(batch, pos) bool: a q / MLP input is patched at the member's tokens, a k / v at every
    token up to the last of them (what the member's query reads)."""
    if slot in (Slot.Q, Slot.IN):
        return at
    return at.flip(-1).cumsum(-1).flip(-1) > 0  # True at and before the last True column


def _reaches(model, senders: Sequence[Node], receivers: Sequence[Receiver]) -> bool:
    return any(path_exists(s.layer, r, model.parallel_residual) for s in senders for r in receivers)


def _senders(c: HeadClass, names: Sequence[str], index: Tensor) -> list[tuple[Site, Tensor]]:
    """The class's heads' z and MLPs' outputs, each patched only at its members' tokens (per
    row, the tokens its positions name there); a component at two positions sends once, at
    both."""
    at: dict[Site, Tensor] = {}
    for pair in c.members:
        site = output_site(parse_display_node(pair.node))
        tokens = index == names.index(pair.position)  # (batch, pos)
        at[site] = at[site] | tokens if site in at else tokens
    return list(at.items())


def output_site(node: Node) -> Site:
    """What a head or MLP sends: a head's z, an MLP's output."""
    if node.kind is NodeKind.HEAD:
        return Site(Component.Z, node.layer, node.head)
    return Site(Component.MLP_OUT, node.layer)


def _metric_position(problem: PatchingProblem, names: Sequence[str], index: Tensor) -> str:
    """The named position the metric reads on every row (usually END), else `answer`."""
    if problem.multi_position:
        return LOSS
    at = index[torch.arange(problem.batch), problem.positions.cpu().long()]
    same = bool((at == at[0]).all()) and int(at[0]) >= 0
    return names[int(at[0])] if same else "answer"


def _effect(cache: PathCache, patched: Tensor, n_bootstrap: int):
    """Normalized effect of one sender set (batch,) and its 95% bootstrap interval."""
    clean, corrupted = cache.clean_scores.cpu(), cache.corrupted_scores.cpu()
    patched = patched.cpu()
    gap = cache.m_clean - cache.m_corrupted
    effect = (cache.m_clean - float(patched.mean())) / gap if gap != 0 else float("nan")
    if n_bootstrap <= 0 or gap == 0:
        return effect, None
    from wildcircuits.evaluation.bootstrap import resample_rows

    rows = resample_rows(len(clean), n_bootstrap, seed=0)
    c, r, p = clean[rows].mean(1), corrupted[rows].mean(1), patched[rows].mean(1)
    samples = ((c - p) / (c - r)).double()
    low, high = torch.quantile(samples, torch.tensor([0.025, 0.975], dtype=torch.double))
    return effect, (float(low), float(high))


def _progress(total: int, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc="class paths", file=sys.stderr, leave=False)


__all__ = [
    "PathJob",
    "class_paths",
    "describe_algorithm",
    "forward_counts",
    "output_site",
    "path_jobs",
    "receiver_inputs",
]
