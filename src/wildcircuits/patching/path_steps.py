"""The steps of path patching (docs in `patching.path`): the cached clean / corrupted runs,
step 2 (senders patched, every other head frozen clean, as many sender sets as fit side by side
in one batched forward) and step 3 (receivers' inputs set to what step 2 recorded, at their
positions). `patching.path` builds the public functions on these."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from wildcircuits.errors import SiteError
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.names import LOGITS, NodeKind, Receiver, Shape, Slot
from wildcircuits.patching.hooks import Intervention, Mode
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Component, Site

_SLOT_COMPONENT = {
    Slot.Q: Component.Q,
    Slot.K: Component.K,
    Slot.V: Component.V,
    Slot.IN: Component.MLP_IN,
}


def receiver_site(receiver: Receiver) -> Site | None:
    """The site whose value is patched in step 3 (None for the logits); k / v: a KV head."""
    if receiver.node == LOGITS:
        return None
    head = receiver.node.head if receiver.node.kind is NodeKind.HEAD else None
    return Site(_SLOT_COMPONENT[receiver.slot], receiver.node.layer, head)


@dataclass(frozen=True)
class PathCache:
    """Clean resid_pre and z, corrupted z and mlp_out of every layer; the metric per row
    (batch,) on the clean and on the corrupted input, and their means."""

    clean_resid: dict[int, Tensor]
    clean_z: dict[int, Tensor]
    corrupted_z: dict[int, Tensor]
    corrupted_mlp: dict[int, Tensor]
    clean_scores: Tensor
    m_clean: float
    m_corrupted: float
    corrupted_scores: Tensor | None = None


def path_cache(model: InstrumentedModel, problem: PatchingProblem) -> PathCache:
    """The two unpatched forwards every path-patching run of `problem` shares."""
    layers = range(model.n_layers)
    resid = [Site(Component.RESID_PRE, layer) for layer in layers]
    z = [Site(Component.Z, layer) for layer in layers]
    mlp = [Site(Component.MLP_OUT, layer) for layer in layers]
    with torch.no_grad():
        clean = model.run(problem.clean, capture=resid + z, positions=problem.positions)
        corrupt = model.run(problem.corrupted, capture=z + mlp, positions=problem.positions)
    clean_scores, corrupted_scores = problem.score(clean.logits), problem.score(corrupt.logits)
    return PathCache(
        clean_resid={s.layer: clean[s] for s in resid},
        clean_z={s.layer: clean[s] for s in z},
        corrupted_z={s.layer: corrupt[s] for s in z},
        corrupted_mlp={s.layer: corrupt[s] for s in mlp},
        clean_scores=clean_scores,
        m_clean=float(clean_scores.mean()),
        m_corrupted=float(corrupted_scores.mean()),
        corrupted_scores=corrupted_scores,
    )


def _check(model: InstrumentedModel, senders: Sequence[Site], receivers: Sequence[Receiver]):
    for sender in senders:
        head_ok = sender.component is Component.Z and sender.head is not None
        if not (head_ok or sender.component is Component.MLP_OUT) or sender.position is not None:
            raise SiteError(
                f"sender {sender}: senders are heads (z.L<l>.H<h>) or MLPs (mlp_out.L<l>)"
            )
        if not 0 <= sender.layer < model.n_layers:
            raise SiteError(f"sender {sender}: layer out of range 0..{model.n_layers - 1}")
    nodes = {r.node for r in receivers}
    if not receivers or (LOGITS in nodes and len(receivers) > 1):
        raise SiteError("give 'logits' alone, or one or more head / MLP receivers")
    shape = Shape(model.n_layers, model.n_heads, model.n_kv_heads)  # k / v: KV heads
    for r in receivers:
        shape.check(r.display, r.node, r.slot)


#: A sender of path patching: a site (patched at every token) or (site, (batch, pos) bool mask
#: of the tokens it is patched at: e.g. a class member's own position).
Sender = Site | tuple[Site, Tensor]


def sender_site(sender: Sender) -> Site:
    return sender[0] if isinstance(sender, tuple) else sender


def _sender_mask(sender: Sender, batch: int, width: int, device) -> Tensor:
    """(batch, pos) bool: the tokens a sender is patched at (every token for a bare site)."""
    if isinstance(sender, tuple):
        return sender[1].to(device)
    return torch.ones(batch, width, dtype=torch.bool, device=device)


def step2_interventions(
    cache: PathCache, sets: Sequence[Sequence[Sender]], start: int, stop: int
) -> list[Intervention]:
    """Step-2 interventions for sender sets run side by side (set k owns rows k*batch...); a
    masked sender is patched at its tokens only."""
    n_sets = len(sets)
    batch, width = cache.clean_resid[0].shape[:2]
    interventions = []
    for layer in range(start, stop):
        z = cache.clean_z[layer].repeat(n_sets, 1, 1, 1)  # (set*batch, pos, head, d_head)
        mlp_at = torch.zeros(n_sets * batch, width, dtype=torch.bool, device=z.device)
        for k, senders in enumerate(sets):
            rows = slice(k * batch, (k + 1) * batch)
            for sender in senders:
                s = sender_site(sender)
                if s.layer != layer:
                    continue
                at = _sender_mask(sender, batch, width, z.device)  # (batch, pos)
                if s.component is Component.Z:
                    corrupted = cache.corrupted_z[layer][:, :, s.head]  # (batch, pos, d_head)
                    z[rows, :, s.head] = torch.where(at[..., None], corrupted, z[rows, :, s.head])
                else:
                    mlp_at[rows] |= at
        interventions.append(Intervention(Site(Component.Z, layer), Mode.REPLACE, z))
        if bool(mlp_at.any()):
            corrupted = cache.corrupted_mlp[layer].repeat(n_sets, 1, 1)
            patch = _masked_replace(mlp_at[:, :, None], corrupted)
            interventions.append(Intervention(Site(Component.MLP_OUT, layer), Mode.REPLACE, patch))
    return interventions


def _masked_replace(mask: Tensor, value: Tensor):
    def patch(current: Tensor) -> Tensor:
        return torch.where(mask, value, current)

    return patch


def _patched_metrics(
    model: InstrumentedModel,
    problem: PatchingProblem,
    cache: PathCache,
    sets: Sequence[Sequence[Sender]],
    receivers: Sequence[Receiver],
    masks: Sequence[Tensor | None] | None = None,
) -> Tensor:
    """Metric (sets, batch) of step 3 for each sender set; masks: per receiver (batch, pos)
    bool, where step 3 takes the recorded input (None: every position)."""
    n_sets, batch = len(sets), problem.batch
    rows = torch.arange(batch, device=problem.positions.device).repeat(n_sets)
    tokens = problem.clean.select(rows)
    positions = problem.positions[rows]
    start = min(sender_site(s).layer for senders in sets for s in senders)
    to_logits = receivers[0].node == LOGITS
    masks = list(masks) if masks is not None else [None] * len(receivers)
    # Receivers before the first sender keep their clean input: nothing to patch there.
    kept = [
        (r, m) for r, m in zip(receivers, masks, strict=True) if to_logits or r.node.layer >= start
    ]
    if not kept:
        return cache.clean_scores.repeat(n_sets, 1)
    receivers = [r for r, _ in kept]
    sites = _site_masks([(receiver_site(r), m) for r, m in kept]) if not to_logits else {}
    stop = model.n_layers if to_logits else max(r.node.layer for r in receivers) + 1
    step2 = model.run(
        tokens,
        capture=list({Site(s.component, s.layer) for s in sites}),
        interventions=step2_interventions(cache, sets, start, stop),
        positions=positions,
        return_logits=to_logits,
        start_layer=start,
        start_resid=cache.clean_resid[start].repeat(n_sets, 1, 1) if start else None,
    )
    if to_logits:
        return problem.score(step2.logits, rows=rows).reshape(n_sets, batch)
    first = min(r.node.layer for r in receivers)
    patches = [
        _receiver_patch(s, step2[Site(s.component, s.layer)][_head(s)], mask, n_sets)
        for s, mask in sites.items()
    ]
    step3 = model.run(
        tokens,
        interventions=patches,
        positions=positions,
        start_layer=first,
        start_resid=cache.clean_resid[first].repeat(n_sets, 1, 1) if first else None,
    )
    return problem.score(step3.logits, rows=rows).reshape(n_sets, batch)


def _site_masks(pairs: Sequence[tuple[Site, Tensor | None]]) -> dict[Site, Tensor | None]:
    """One entry per receiver site (k / v receivers of query heads sharing a KV head are one
    site): the union of their position masks, None when any covers every position."""
    merged: dict[Site, Tensor | None] = {}
    for site, mask in pairs:
        if site in merged and (merged[site] is None or mask is None):
            merged[site] = None
        else:
            merged[site] = mask if site not in merged else merged[site] | mask
    return merged


def _receiver_patch(site: Site, recorded: Tensor, mask: Tensor | None, n_sets: int):
    """Step 3's patch of one receiver site: the recorded input, at the mask's positions only."""
    if mask is None:
        return Intervention(site, Mode.REPLACE, recorded)
    where = mask.repeat(n_sets, 1).to(recorded.device)  # (set*batch, pos)
    where = where.reshape(*where.shape, *([1] * (recorded.ndim - 2)))
    return Intervention(site, Mode.REPLACE, _masked_replace(where, recorded))


def _head(site: Site) -> tuple:
    """Index of a receiver site's slice in its full captured value."""
    return (slice(None),) if site.head is None else (slice(None), slice(None), site.head)
