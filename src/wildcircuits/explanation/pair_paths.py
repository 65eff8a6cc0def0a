"""Position-wise path patching between circuit pairs (the `path_to_*` evidence numbers).

The IOI paper's path patching (`patching.path`), with senders and receivers at positions:
1. Corrupted run: cache every head's z and MLP output (and the clean run's z and residuals).
2. Clean run with the sender's output replaced by its corrupted value at the sender's position
   only, every other head frozen to its clean z; MLPs and norms recomputed. Record the
   receiver layer's q / k / v (or, for `logits`, read the metric here: step 3 is step 2).
3. Clean run from the receiver's layer with its q / k / v replaced by step 2's, and that layer's
   z frozen to clean everywhere except the receiver head at the receiver's position (so only
   the receiver pair's output changes, however q / k / v is shared); the rest recomputed.
Score: (m_clean - m_patched) / (m_clean - m_corrupted), batch means (0 = none, 1 = the whole
clean-vs-corrupted difference; negative when the sender's clean output opposes the metric).

Zero by construction (reported as exactly 0, no forward run): only attention moves information
between positions and every other head is frozen, so a sender reaches q at the receiver's
position only from that same position, k / v only from that position or earlier ones, and the
logits only from the metric position; and only from an earlier layer.

Cost: senders run side by side in one batched forward (the clean batch repeated once per
sender, `max_rows` rows at most): for the logits, step 2 once per chunk of pairs; for the head
receivers (only the `senders` asked for: the classes need them only for the heads no
attention / direct-effect rule labels), step 2 once per chunk of senders, capturing q / k / v
at every receiver layer, then step 3 once per receiver slot, from the receiver's layer, with
the rows of every sender of the chunk that can reach it.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
from torch import Tensor

from wildcircuits.errors import InputError
from wildcircuits.explanation.evidence import Member
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.patching.hooks import Intervention, Mode
from wildcircuits.patching.path import PathCache, normalized_effect, path_cache
from wildcircuits.patching.path_steps import repeated_batch, step2_interventions
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Component, Site
from wildcircuits.tasks.metrics import at_positions

SLOT_COMPONENT = {"q": Component.Q, "k": Component.K, "v": Component.V}


def path_key(receiver: Member | None, slot: str = "logits") -> str:
    """The evidence key of a path into `receiver`'s slot (`path_to_logits` for None)."""
    return "path_to_logits" if receiver is None else f"path_to_{receiver.pair.name}_{slot}"


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
) -> dict[str, dict[str, float]]:
    """`path_to_logits` of every pair (unless `logits` is False) and `path_to_<pair>_<slot>` of
    every pair in `senders` (None: all of `checked`) into each head of `checked` (keyed by
    sender pair name)."""
    unknown = [s for s in slots if s not in SLOT_COMPONENT]
    if unknown or max_rows < 1:
        raise InputError(
            f"slots {list(slots)} / max_rows {max_rows}: slots are q, k, v; max_rows >= 1"
        )
    senders = list(checked) if senders is None else list(senders)
    if any(m not in checked for m in senders):
        raise InputError("every path-evidence sender must be one of the checked pairs")
    cache = path_cache(model, problem)
    to_heads = [(r, s) for r in checked if r.is_head for s in slots]
    out = {m.pair.name: {} for m in checked}
    jobs = [(checked, [(None, "logits")] if logits else []), (senders, to_heads)]
    for group, receivers in jobs:
        for receiver, slot in receivers:  # zero unless measured below
            for m in group:
                if m is not receiver:
                    out[m.pair.name][path_key(receiver, slot)] = 0.0
    per_chunk = max(1, max_rows // problem.batch)
    chunks = [
        (group[i : i + per_chunk], receivers)
        for group, receivers in jobs
        if receivers
        for i in range(0, len(group), per_chunk)
    ]
    for chunk, receivers in _progress(chunks, progress):
        for receiver, slot, live, metrics in _chunk_metrics(
            model, problem, cache, chunk, receivers
        ):
            for k, metric in zip(live, metrics.tolist(), strict=True):
                out[chunk[k].pair.name][path_key(receiver, slot)] = normalized_effect(metric, cache)
    return out


def _chunk_metrics(model, problem, cache: PathCache, chunk: Sequence[Member], receivers):
    """(receiver, slot, indices of the chunk's senders that reach it, their metrics) for every
    receiver some sender of the chunk reaches. One step-2 forward for the logits and one for
    every head receiver (capturing q / k / v at each receiver layer); then one step-3 forward
    per head receiver slot with the rows of the senders that reach it."""
    end = problem.positions
    targets = []
    for receiver, slot in receivers:
        live = [
            k for k, m in enumerate(chunk) if m is not receiver and reaches(m, receiver, slot, end)
        ]
        if live:
            targets.append((receiver, slot, live))
    to_logits = [t for t in targets if t[0] is None]
    heads = [t for t in targets if t[0] is not None]
    for receiver, slot, live in to_logits:
        senders = [chunk[k] for k in live]
        yield receiver, slot, live, _step2(model, problem, cache, senders, [], model.n_layers)
    if not heads:
        return
    sites = sorted({Site(SLOT_COMPONENT[s], r.node.layer) for r, s, _ in heads}, key=str)
    stop = max(r.node.layer for r, _, _ in heads) + 1
    recorded = _step2(model, problem, cache, chunk, sites, stop)
    for receiver, slot, live in heads:
        value = recorded[Site(SLOT_COMPONENT[slot], receiver.node.layer)]
        value = value.view(len(chunk), problem.batch, *value.shape[1:])[live].flatten(0, 1)
        yield receiver, slot, live, _step3(model, problem, cache, receiver, slot, value, len(live))


def _sender_patches(cache: PathCache, senders: Sequence[Member], start: int, stop: int):
    """Step 2: layers start..stop-1 frozen to clean z; sender k (rows k*batch...) corrupted
    at its own positions only (`patching.path_steps.step2_interventions`, one masked sender
    per set)."""
    sets = [[(_site(s), s.mask)] for s in senders]
    return step2_interventions(cache, sets, start, stop)


def _site(member: Member) -> Site:
    node = member.node
    return (
        Site(Component.Z, node.layer, node.head)
        if member.is_head
        else Site(Component.MLP_OUT, node.layer)
    )


def _step2(model, problem, cache: PathCache, senders: Sequence[Member], sites, stop: int):
    """Step 2 for each sender alone: the batch-mean metric (sets,) when `sites` is empty (the
    logits receiver; stop = n_layers), else the captured receiver-layer values."""
    n_sets, batch = len(senders), problem.batch
    rows, tokens, positions = repeated_batch(problem, n_sets)
    start = min(s.node.layer for s in senders)
    run = model.run(
        tokens,
        capture=sites,
        interventions=_sender_patches(cache, senders, start, stop),
        positions=positions,
        return_logits=not sites,
        start_layer=start,
        start_resid=cache.clean_resid[start].repeat(n_sets, 1, 1) if start else None,
    )
    if sites:
        return run
    return problem.score(run.logits, rows=rows).reshape(n_sets, batch).mean(1)


def _step3(
    model, problem, cache: PathCache, receiver: Member, slot: str, value: Tensor, n_sets: int
):
    """Step 3: batch-mean metric (sets,) with the receiver slot's input set to `value`."""
    rows, tokens, positions = repeated_batch(problem, n_sets)
    layer = receiver.node.layer
    run = model.run(
        tokens,
        interventions=[
            _slot_patch(model, receiver, slot, value),
            _freeze_others(cache, receiver, n_sets),
        ],
        positions=positions,
        start_layer=layer,
        start_resid=cache.clean_resid[layer].repeat(n_sets, 1, 1) if layer else None,
    )
    return problem.score(run.logits, rows=rows).reshape(n_sets, problem.batch).mean(1)


def _slot_patch(model: InstrumentedModel, receiver: Member, slot: str, value: Tensor):
    """Replace the receiver's q (its head) or k / v (its KV head) by step 2's value."""
    head = receiver.node.head
    if slot != "q":
        head //= model.n_heads // model.n_kv_heads  # the KV head its query head reads
    site = Site(SLOT_COMPONENT[slot], receiver.node.layer, head)
    return Intervention(site, Mode.REPLACE, value[:, :, head])


def _freeze_others(cache: PathCache, receiver: Member, n_sets: int) -> Intervention:
    """The receiver layer's z: clean except the receiver head at the receiver's positions."""
    layer, head = receiver.node.layer, receiver.node.head
    clean = cache.clean_z[layer].repeat(n_sets, 1, 1, 1)  # (set*batch, pos, head, d_head)
    keep = torch.zeros(clean.shape[:3] + (1,), dtype=torch.bool, device=clean.device)
    keep[:, :, head] = receiver.mask.to(clean.device).repeat(n_sets, 1)[..., None]

    def patch(current: Tensor) -> Tensor:
        return torch.where(keep, current, clean)

    return Intervention(Site(Component.Z, layer), Mode.REPLACE, patch)


def _progress(items: list, enabled: bool):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc="path evidence", file=sys.stderr, leave=False)
