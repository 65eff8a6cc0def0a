"""Path patching (Wang et al. 2022): the effect of senders on receivers through direct paths only.

Convention (the IOI paper's), for senders S and receivers R on a clean / corrupted problem:
1. Run the corrupted input; cache the senders' outputs (a head's z, an MLP's output).
2. Run the clean input with the senders' outputs replaced by their corrupted values and every
   other attention head frozen to its clean value (z replaced by the clean z, in every layer).
   MLPs and norms are recomputed, so a sender's effect reaches the receivers directly and through
   MLPs, never through other heads. Record the receivers' inputs.
3. Run the clean input again with only the receivers' inputs replaced by the recorded values
   (everything downstream recomputed freely) and read the metric.

Receivers (`wildcircuits.names.Receiver`, the edge graph's type, written in the display form): a
query head's q input (`L14.H3:q`), a KV head's k or v input (`L14.H1:k`; with grouped-query
attention the k / v of one KV head are shared by its query heads, so the receiver is the KV
head), an MLP's input (`L5.mlp`), or the logits (`logits`: the final residual stream, so
step 3 is step 2's logits). A receiver's input is computed from its own copy of the residual
stream: patching q of one head leaves the other heads of its layer on the clean stream.

Score, as for noising activation patching: (m_clean - m_patched) / (m_clean - m_corrupted), means
over the batch: 0 = no effect, 1 = the path carries the whole clean-vs-corrupted difference;
positive when the sender's clean output supports the metric (name movers -> logits in IOI),
negative when it opposes it (negative name movers).

Receiver positions (`receiver_positions`): per receiver a (batch, pos) bool mask, True where
step 3 takes the recorded value (None: all), e.g. a name mover's q at each row's END alone.

Speed: step 2 starts at the earliest sender layer and step 3 at the earliest receiver layer from
the cached clean residual stream (nothing earlier changes), step 2 stops after the last receiver,
and many sender sets run in one batched forward (the clean batch repeated once per sender set);
`path_patch_sets` runs many sender sets into one receiver set on one shared `PathCache`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from wildcircuits.errors import SiteError
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.names import LOGITS, NodeKind, Receiver, Shape, Slot, parse_display_receiver
from wildcircuits.patching.grid import ScoreGrid, head_labels, layer_labels
from wildcircuits.patching.hooks import Intervention, Mode
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Component, Site

#: The component whose value carries each receiver slot's input (an MLP's slot is IN).
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


def _freeze_and_patch(cache: PathCache, sets: Sequence[Sequence[Sender]], start: int, stop: int):
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
        interventions=_freeze_and_patch(cache, sets, start, stop),
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


@dataclass(frozen=True)
class PathPatchResult:
    """Means over the batch: clean, corrupted and path-patched metric; the normalized score."""

    clean: float
    corrupted: float
    patched: float
    score: float
    per_example: Tensor
    provenance: dict[str, Any]


def path_patch(
    model: InstrumentedModel,
    problem: PatchingProblem,
    senders: Sequence[Site],
    receivers: Sequence[Receiver | str],
    receiver_positions: Sequence[Tensor | None] | None = None,
) -> PathPatchResult:
    """Path-patch one sender set (heads' z / MLP outputs) into the receivers; see module doc.

    receiver_positions: per receiver a (batch, pos) bool mask of the positions its input is
    patched at (None: all)."""
    receivers = [parse_display_receiver(r) if isinstance(r, str) else r for r in receivers]
    _check(model, senders, receivers)
    masks = _check_masks(problem, receivers, receiver_positions)
    cache = path_cache(model, problem)
    with torch.no_grad():
        per_row = _patched_metrics(model, problem, cache, [list(senders)], receivers, masks)[0]
    patched = float(per_row.mean())
    return PathPatchResult(
        clean=cache.m_clean,
        corrupted=cache.m_corrupted,
        patched=patched,
        score=normalized_effect(patched, cache),
        per_example=per_row.cpu(),
        provenance=_provenance(problem, receivers, [str(s) for s in senders]),
    )


def path_patch_sets(
    model: InstrumentedModel,
    problem: PatchingProblem,
    cache: PathCache,
    sets: Sequence[Sequence[Sender]],
    receivers: Sequence[Receiver],
    receiver_positions: Sequence[Tensor | None] | None = None,
    max_rows: int = 128,
) -> Tensor:
    """Step 3's metric (sets, batch) for each sender set into the same receivers, batched:
    `max_rows // batch` sets per forward (at least one), all on one `path_cache`. A sender is
    a site or (site, (batch, pos) bool mask of the tokens it is patched at)."""
    if not sets or any(not senders for senders in sets):
        raise SiteError("give one or more sender sets, each with at least one sender")
    _check(model, [sender_site(s) for senders in sets for s in senders], receivers)
    _check_sender_masks(problem, [s for senders in sets for s in senders])
    masks = _check_masks(problem, receivers, receiver_positions)
    per_chunk = max(1, max_rows // problem.batch)
    out = []
    with torch.no_grad():
        for i in range(0, len(sets), per_chunk):
            chunk = [list(senders) for senders in sets[i : i + per_chunk]]
            out.append(_patched_metrics(model, problem, cache, chunk, receivers, masks))
    return torch.cat(out)


def _check_sender_masks(problem, senders) -> None:
    shape = (problem.batch, problem.clean.seq_len)
    for sender in senders:
        if isinstance(sender, tuple):
            mask = sender[1]
            if mask.dtype != torch.bool or tuple(mask.shape) != shape:
                raise SiteError(
                    f"sender {sender[0]}: position mask must be a bool tensor of shape {shape} "
                    f"(batch, pos), got {mask.dtype} {tuple(mask.shape)}"
                )


def _check_masks(problem, receivers, masks) -> list[Tensor | None] | None:
    if masks is None:
        return None
    masks = list(masks)
    shape = (problem.batch, problem.clean.seq_len)
    if len(masks) != len(receivers):
        raise SiteError(
            f"{len(masks)} position masks for {len(receivers)} receivers; give one each"
        )
    for receiver, mask in zip(receivers, masks, strict=True):
        if mask is not None and (mask.dtype != torch.bool or tuple(mask.shape) != shape):
            raise SiteError(
                f"receiver {receiver.display}: position mask must be a bool tensor of shape "
                f"{shape} (batch, pos), got {mask.dtype} {tuple(mask.shape)}"
            )
    return masks


def normalized_effect(patched: float, cache: PathCache, normalize: bool = True) -> float:
    """(clean - patched) / (clean - corrupted); NaN when clean == corrupted."""
    if not normalize:
        return patched - cache.m_clean
    gap = cache.m_clean - cache.m_corrupted
    return (cache.m_clean - patched) / gap if gap != 0 else float("nan")


def _provenance(problem, receivers, senders) -> dict[str, Any]:
    return {
        **problem.provenance,
        "method": "path_patching",
        "direction": "noise (corrupted senders into clean)",
        "freezing": "all other attention heads frozen to clean z; MLPs and norms recomputed",
        "normalization": "(m_clean - m_patched) / (m_clean - m_corrupted)",
        "receivers": [r.display for r in receivers],
        "senders": senders,
    }


def path_exists(sender_layer: int, receiver: Receiver, parallel_residual: bool) -> bool:
    """Whether a head of `sender_layer` can reach the receiver at all."""
    if receiver.node == LOGITS:
        return True
    if receiver.node.kind is NodeKind.MLP and not parallel_residual:
        return sender_layer <= receiver.node.layer  # the MLP reads its own layer's heads
    return sender_layer < receiver.node.layer


def path_patch_heads(
    model: InstrumentedModel,
    problem: PatchingProblem,
    receivers: Sequence[Receiver | str] = ("logits",),
    max_rows: int = 128,
    progress: bool = True,
    normalize: bool = True,
) -> ScoreGrid:
    """Every head as the sole sender -> the receivers: a layer x head `ScoreGrid`.

    Entries of heads with no path to any receiver are NaN. `max_rows` caps the rows of one
    batched forward (sender sets x batch). normalize=False gives m_patched - m_clean.
    """
    from wildcircuits.inputs import check_size

    check_size("max_rows", max_rows)
    receivers = [parse_display_receiver(r) if isinstance(r, str) else r for r in receivers]
    _check(model, [], receivers)
    cache = path_cache(model, problem)
    heads = [
        (layer, head)
        for layer in range(model.n_layers)
        for head in range(model.n_heads)
        if any(path_exists(layer, r, model.parallel_residual) for r in receivers)
    ]
    values = torch.full((model.n_layers, model.n_heads), float("nan"))
    per_chunk = max(1, max_rows // problem.batch)
    chunks = [heads[i : i + per_chunk] for i in range(0, len(heads), per_chunk)]
    with torch.no_grad():
        for chunk in _progress(chunks, progress, "path patching"):
            sets = [[Site(Component.Z, layer, head)] for layer, head in chunk]
            metrics = _patched_metrics(model, problem, cache, sets, receivers).mean(1)
            for (layer, head), metric in zip(chunk, metrics.tolist(), strict=True):
                values[layer, head] = normalized_effect(metric, cache, normalize)
    target = "logits" if receivers[0].node == LOGITS else "receivers"
    return ScoreGrid(
        name=f"path_patch_heads_to_{target}",
        title=f"Path patching: each head -> {', '.join(r.display for r in receivers)}",
        values=values,
        row_axis="layer",
        col_axis="head",
        row_labels=layer_labels(model.n_layers),
        col_labels=head_labels(model.n_heads),
        provenance={
            **_provenance(problem, receivers, "each head alone"),
            **({} if normalize else {"normalization": "m_patched - m_clean"}),
            "clean_metric": cache.m_clean,
            "corrupted_metric": cache.m_corrupted,
        },
        value_label="normalized path effect" if normalize else "metric change",
    )


def _progress(items: list, enabled: bool, description: str):
    if not enabled:
        return items
    from tqdm import tqdm

    return tqdm(items, desc=description, file=sys.stderr, leave=False)
