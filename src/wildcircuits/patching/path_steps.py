"""The steps of path patching (docs in `patching.path`): the cached clean / corrupted runs,
step 2 (senders patched, every other head frozen clean, as many sender sets as fit side by side
in one batched forward) and step 3 (receivers' inputs set to what step 2 recorded, at their
positions). `patching.path` builds the public functions on these."""

from __future__ import annotations

from collections.abc import Callable, Sequence
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


def logits_metrics(
    model: InstrumentedModel,
    problem: PatchingProblem,
    cache: PathCache,
    sets: Sequence[Sequence[Sender]],
) -> Tensor:
    """Metric (sets, batch) of each sender set into the logits (step 3 is step 2 here), the
    sets side by side in one forward."""
    n_sets = len(sets)
    rows, tokens, positions = repeated_batch(problem, n_sets)
    start = min(sender_site(s).layer for senders in sets for s in senders)
    run = model.run(
        tokens,
        interventions=step2_interventions(cache, sets, start, model.n_layers),
        positions=positions,
        start_layer=start,
        start_resid=cache.clean_resid[start].repeat(n_sets, 1, 1) if start else None,
    )
    return problem.score(run.logits, rows=rows).reshape(n_sets, problem.batch)


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


@dataclass(frozen=True)
class ReceiverJob:
    """Head / MLP receivers patched together in one step 3 (with their (batch, pos) masks, None:
    every position) and the indices of the sender sets measured into them."""

    receivers: tuple[Receiver, ...]
    masks: tuple[Tensor | None, ...]
    sets: tuple[int, ...]


def shared_step2_metrics(
    model: InstrumentedModel,
    problem: PatchingProblem,
    cache: PathCache,
    sets: Sequence[Sequence[Sender]],
    jobs: Sequence[ReceiverJob],
    max_rows: int = 128,
    on_job: Callable[[], None] | None = None,
) -> list[Tensor]:
    """Step 3's metric (len(job.sets), batch) of every job (`on_job` called after each), with
    step 2 run once per chunk of sender sets for all jobs together. Exact: step 2 does not
    depend on the receivers (every head from the first sender's layer on is frozen clean
    either way, and a receiver's input never depends on later layers), so it records every
    job's receiver inputs in one run."""
    start = min(sender_site(s).layer for senders in sets for s in senders)
    kept = [_kept(job, start) for job in jobs]
    sites = list(dict.fromkeys(s for job in kept for s in job[0]))
    if not sites:
        return [cache.clean_scores.repeat(len(job.sets), 1) for job in jobs]
    stop = max(s.layer for s in sites) + 1
    per_chunk = max(1, max_rows // problem.batch)
    recorded: dict[int, dict[Site, Tensor]] = {}
    for i in range(0, len(sets), per_chunk):
        chunk = list(range(i, min(i + per_chunk, len(sets))))
        rows, tokens, positions = repeated_batch(problem, len(chunk))
        run = model.run(
            tokens,
            capture=sites,
            interventions=step2_interventions(cache, [sets[k] for k in chunk], start, stop),
            positions=positions,
            return_logits=False,
            start_layer=start,
            start_resid=cache.clean_resid[start].repeat(len(chunk), 1, 1) if start else None,
        )
        for offset, k in enumerate(chunk):
            block = slice(offset * problem.batch, (offset + 1) * problem.batch)
            recorded[k] = {s: run[s][block] for s in sites}
    out = []
    for job, (job_sites, first) in zip(jobs, kept, strict=True):
        if not job_sites:
            out.append(cache.clean_scores.repeat(len(job.sets), 1))
            continue
        parts = [
            _step3(model, problem, cache, job_sites, first, [recorded[k] for k in part])
            for part in (job.sets[j : j + per_chunk] for j in range(0, len(job.sets), per_chunk))
        ]
        out.append(torch.cat(parts))
        if on_job is not None:
            on_job()
    return out


def _kept(job: ReceiverJob, start: int) -> tuple[dict[Site, Tensor | None], int]:
    """The job's receiver sites at or after the first sender's layer (earlier ones keep their
    clean input: nothing to patch), merged per site, and the first of their layers."""
    pairs = [
        (receiver_site(r), m)
        for r, m in zip(job.receivers, job.masks, strict=True)
        if r.node.layer >= start
    ]
    merged = _site_masks(pairs)
    return merged, min((s.layer for s in merged), default=0)


def repeated_batch(problem: PatchingProblem, n_sets: int):
    """The clean batch repeated once per sender set (copy-major): row indices, tokens, metric
    positions."""
    rows = torch.arange(problem.batch, device=problem.positions.device).repeat(n_sets)
    return rows, problem.clean.select(rows), problem.positions[rows]


def _step3(model, problem, cache, sites: dict, first: int, values: list[dict[Site, Tensor]]):
    """Step 3 for the sender sets whose step-2 records are `values`: metric (sets, batch)."""
    n_sets = len(values)
    rows, tokens, positions = repeated_batch(problem, n_sets)
    patches = [
        _receiver_patch(s, torch.cat([v[s] for v in values]), mask, n_sets)
        for s, mask in sites.items()
    ]
    run = model.run(
        tokens,
        interventions=patches,
        positions=positions,
        start_layer=first,
        start_resid=cache.clean_resid[first].repeat(n_sets, 1, 1) if first else None,
    )
    return problem.score(run.logits, rows=rows).reshape(n_sets, problem.batch)
