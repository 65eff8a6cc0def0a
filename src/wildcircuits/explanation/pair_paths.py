"""Position-wise path patching from circuit pairs (the `path_to_*` evidence numbers).

The IOI paper's path patching (`patching.path`), with senders at positions: the sender pair's
output (a head's z, an MLP's output) is replaced by its corrupted value at the pair's own tokens
only, every other head frozen to its clean z, MLPs and norms recomputed.
- `path_to_logits`: into the final residual stream (step 3 is step 2).
- `path_to_<group>_<slot>`: into a receiver group's q / k / v together, as the class diagram
  measures an arrow into a class (`class_paths.receiver_inputs`): q at each receiver's own
  tokens, k / v at every token up to them (a k / v receiver is the KV head). The groups:
  `heads@<R>`, every member head at position R (`position_group`); and, for rule 6 of
  `classes`, the name-mover class (its class name). Patching the group jointly, as the IOI
  paper path-patches the S-inhibition heads into the name movers' queries together, costs one
  step 3 per group slot instead of one per member head.
Score: (m_clean - m_patched) / (m_clean - m_corrupted), batch means (0 = none, 1 = the whole
clean-vs-corrupted difference; negative when the sender's clean output opposes the metric).

Zero by construction (reported as exactly 0, no forward run): only attention moves information
between positions and every other head is frozen, so a sender reaches a q at a receiver's tokens
only from those same tokens, a k / v only from those tokens or earlier ones, and the logits only
from the metric position; and only from an earlier layer.

Cost: senders run side by side in one batched forward (the clean batch repeated once per
sender, `max_rows` rows at most): for the logits one forward per chunk of senders; for the
groups one step 2 per chunk of senders, recording every group's inputs, then one step 3 per
group slot with the rows of the chunk's senders that reach it (`patching.path.path_patch_jobs`).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence

import torch
from torch import Tensor

from wildcircuits.errors import InputError
from wildcircuits.explanation.class_paths import output_site, receiver_inputs
from wildcircuits.explanation.evidence import Member
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.names import LOGITS, Receiver
from wildcircuits.patching.path import (
    PathCache,
    normalized_effect,
    path_cache,
    path_patch_jobs,
    path_patch_sets,
)
from wildcircuits.patching.path_steps import ReceiverJob
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Site
from wildcircuits.tasks.metrics import at_positions

GROUP_PREFIX = "heads@"


def position_group(position: str) -> str:
    """The receiver group of every member head at a position: `heads@END`."""
    return f"{GROUP_PREFIX}{position}"


def path_key(receiver: str | None, slot: str = "logits") -> str:
    """The evidence key of a path into a receiver group's slot (`path_to_logits` for None)."""
    return "path_to_logits" if receiver is None else f"path_to_{receiver}_{slot}"


def group_position(key: str) -> tuple[str, str] | None:
    """(position, slot) of a `path_to_heads@<R>_<slot>` key; None for any other key."""
    prefix = path_key(GROUP_PREFIX, "")[:-1]  # path_to_heads@
    if not key.startswith(prefix):
        return None
    position, slot = key[len(prefix) :].rsplit("_", 1)
    return position, slot


def position_groups(checked: Sequence[Member]) -> dict[str, list[Member]]:
    """`heads@<R>` -> the member heads at position R, for every position with a head."""
    out: dict[str, list[Member]] = {}
    for m in checked:
        if m.is_head:
            out.setdefault(position_group(m.pair.position), []).append(m)
    return out


def reaches(sender: Member, receiver: Member | None, slot: str, end: Tensor) -> bool:
    """Whether the sender pair can have any path effect on the receiver's slot (module doc)."""
    if receiver is None:
        return bool(at_positions(sender.mask, end).any())  # end: (batch,) or (batch, k)
    if sender.node.layer >= receiver.node.layer:
        return False
    if slot == "q":
        return bool((sender.mask & receiver.mask).any())
    index = torch.arange(sender.mask.shape[1], device=sender.mask.device)
    first = torch.where(sender.mask, index, sender.mask.shape[1]).amin(1)  # (batch,)
    last = torch.where(receiver.mask.to(index.device), index, -1).amax(1)
    return bool((first <= last).any())


def path_evidence(
    model: InstrumentedModel,
    problem: PatchingProblem,
    checked: Sequence[Member],
    slots: Sequence[str] = ("q", "k", "v"),
    max_rows: int = 256,
    progress: bool = True,
    senders: Sequence[Member] | None = None,
    logits: bool = True,
    groups: Mapping[str, Sequence[Member]] | None = None,
) -> dict[str, dict[str, float]]:
    """`path_to_logits` of every pair of `checked` (unless `logits` is False) and
    `path_to_<group>_<slot>` of every pair in `senders` (None: all of `checked`) into each
    receiver group (None: `position_groups(checked)`; members must be checked heads), keyed
    by sender pair name."""
    unknown = [s for s in slots if s not in ("q", "k", "v")]
    if unknown or max_rows < 1:
        raise InputError(
            f"slots {list(slots)} / max_rows {max_rows}: slots are q, k, v; max_rows >= 1"
        )
    senders = list(checked) if senders is None else list(senders)
    groups = position_groups(checked) if groups is None else groups
    if any(m not in checked for m in senders):
        raise InputError("every path-evidence sender must be one of the checked pairs")
    if any(m not in checked or not m.is_head for g in groups.values() for m in g):
        raise InputError("every path-evidence receiver must be one of the checked heads")
    cache = path_cache(model, problem)
    out: dict[str, dict[str, float]] = {m.pair.name: {} for m in checked}
    per_chunk = max(1, max_rows // problem.batch)
    split = lambda items: [items[i : i + per_chunk] for i in range(0, len(items), per_chunk)]  # noqa: E731
    targets = _group_targets(model, groups, slots)
    chunks = [("logits", c) for c in split(list(checked))] if logits else []
    if targets:
        chunks += [("groups", c) for c in split(senders)]
    for kind, chunk in _progress(chunks, progress):
        if kind == "logits":
            _to_logits(model, problem, cache, chunk, out, max_rows)
        else:
            _to_groups(model, problem, cache, chunk, targets, out, max_rows)
    return out


def _group_targets(model, groups: Mapping[str, Sequence[Member]], slots: Sequence[str]):
    """(evidence key, slot, receiver members, their receiver inputs, masks) per group slot."""
    targets = []
    for name, receivers in groups.items():
        for slot, sites, masks in receiver_inputs(model, [(m.node, m.mask) for m in receivers]):
            if slot.value in slots:
                targets.append((path_key(name, slot.value), slot.value, receivers, sites, masks))
    return targets


def _to_logits(model, problem, cache: PathCache, chunk: Sequence[Member], out, max_rows: int):
    live = [m for m in chunk if reaches(m, None, "logits", problem.positions)]
    for m in chunk:
        out[m.pair.name][path_key(None)] = 0.0
    if live:
        metrics = path_patch_sets(model, problem, cache, [_sender(m) for m in live],
                                  [Receiver(LOGITS)], None, max_rows)  # fmt: skip
        for m, per_row in zip(live, metrics, strict=True):
            out[m.pair.name][path_key(None)] = normalized_effect(float(per_row.mean()), cache)


def _to_groups(model, problem, cache, chunk, targets, out, max_rows: int):
    """One step 2 for the chunk's senders, one step 3 per group slot some of them reach."""
    jobs, keys = [], []
    for key, slot, receivers, sites, masks in targets:
        live = []
        for k, m in enumerate(chunk):
            out[m.pair.name][key] = 0.0
            if any(reaches(m, r, slot, problem.positions) for r in receivers):
                live.append(k)
        if live:
            jobs.append(ReceiverJob(sites, masks, tuple(live)))
            keys.append(key)
    if not jobs:
        return
    metrics = path_patch_jobs(model, problem, cache, [_sender(m) for m in chunk], jobs, max_rows)
    for job, key, per_set in zip(jobs, keys, metrics, strict=True):
        for k, per_row in zip(job.sets, per_set, strict=True):
            out[chunk[k].pair.name][key] = normalized_effect(float(per_row.mean()), cache)


def _sender(member: Member) -> list[tuple[Site, Tensor]]:
    """A sender set of one pair: its z / MLP output, patched at its own tokens only."""
    return [(output_site(member.node), member.mask)]


def _progress(items: list, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="path evidence", file=sys.stderr, leave=False)


__all__ = [
    "group_position",
    "path_evidence",
    "path_key",
    "position_group",
    "position_groups",
    "reaches",
]
