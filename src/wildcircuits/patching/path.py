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

Speed: step 2 starts at the earliest sender layer and step 3 at the earliest receiver layer from
the cached clean residual stream (nothing earlier changes), step 2 stops after the last receiver,
and many sender sets run in one batched forward (the clean batch repeated once per sender set).
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
class _Cache:
    """Clean resid_pre and z, corrupted z and mlp_out of every layer; the two mean metrics."""

    clean_resid: dict[int, Tensor]
    clean_z: dict[int, Tensor]
    corrupted_z: dict[int, Tensor]
    corrupted_mlp: dict[int, Tensor]
    clean_scores: Tensor
    m_clean: float
    m_corrupted: float


def _cache(model: InstrumentedModel, problem: PatchingProblem) -> _Cache:
    layers = range(model.n_layers)
    resid = [Site(Component.RESID_PRE, layer) for layer in layers]
    z = [Site(Component.Z, layer) for layer in layers]
    mlp = [Site(Component.MLP_OUT, layer) for layer in layers]
    with torch.no_grad():
        clean = model.run(problem.clean, capture=resid + z, positions=problem.positions)
        corrupt = model.run(problem.corrupted, capture=z + mlp, positions=problem.positions)
    return _Cache(
        clean_resid={s.layer: clean[s] for s in resid},
        clean_z={s.layer: clean[s] for s in z},
        corrupted_z={s.layer: corrupt[s] for s in z},
        corrupted_mlp={s.layer: corrupt[s] for s in mlp},
        clean_scores=problem.score(clean.logits),
        m_clean=float(problem.score(clean.logits).mean()),
        m_corrupted=float(problem.score(corrupt.logits).mean()),
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


def _freeze_and_patch(cache: _Cache, sets: Sequence[Sequence[Site]], start: int, stop: int):
    """Step-2 interventions for sender sets run side by side (set k owns rows k*batch...)."""
    n_sets = len(sets)
    batch = cache.clean_resid[0].shape[0]
    interventions = []
    for layer in range(start, stop):
        z = cache.clean_z[layer].repeat(n_sets, 1, 1, 1)  # (set*batch, pos, head, d_head)
        mlp_rows = torch.zeros(n_sets * batch, dtype=torch.bool, device=z.device)
        for k, senders in enumerate(sets):
            rows = slice(k * batch, (k + 1) * batch)
            for s in senders:
                if s.layer == layer and s.component is Component.Z:
                    z[rows, :, s.head] = cache.corrupted_z[layer][:, :, s.head]
                elif s.layer == layer:
                    mlp_rows[rows] = True
        interventions.append(Intervention(Site(Component.Z, layer), Mode.REPLACE, z))
        if bool(mlp_rows.any()):
            corrupted = cache.corrupted_mlp[layer].repeat(n_sets, 1, 1)
            mask = mlp_rows[:, None, None]
            patch = _masked_replace(mask, corrupted)
            interventions.append(Intervention(Site(Component.MLP_OUT, layer), Mode.REPLACE, patch))
    return interventions


def _masked_replace(mask: Tensor, value: Tensor):
    def patch(current: Tensor) -> Tensor:
        return torch.where(mask, value, current)

    return patch


def _patched_metrics(
    model: InstrumentedModel,
    problem: PatchingProblem,
    cache: _Cache,
    sets: Sequence[Sequence[Site]],
    receivers: Sequence[Receiver],
) -> Tensor:
    """Metric (sets, batch) of step 3 for each sender set."""
    n_sets, batch = len(sets), problem.batch
    rows = torch.arange(batch, device=problem.positions.device).repeat(n_sets)
    tokens = problem.clean.select(rows)
    positions = problem.positions[rows]
    start = min(s.layer for senders in sets for s in senders)
    to_logits = receivers[0].node == LOGITS
    # Receivers before the first sender keep their clean input: nothing to patch there.
    receivers = [r for r in receivers if to_logits or r.node.layer >= start]
    if not receivers:
        return cache.clean_scores.repeat(n_sets, 1)
    sites = [receiver_site(r) for r in receivers]
    stop = model.n_layers if to_logits else max(r.node.layer for r in receivers) + 1
    step2 = model.run(
        tokens,
        capture=[] if to_logits else list({Site(s.component, s.layer) for s in sites}),
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
        Intervention(s, Mode.REPLACE, step2[Site(s.component, s.layer)][_head(s)]) for s in sites
    ]
    step3 = model.run(
        tokens,
        interventions=patches,
        positions=positions,
        start_layer=first,
        start_resid=cache.clean_resid[first].repeat(n_sets, 1, 1) if first else None,
    )
    return problem.score(step3.logits, rows=rows).reshape(n_sets, batch)


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
) -> PathPatchResult:
    """Path-patch one sender set (heads' z / MLP outputs) into the receivers; see module doc."""
    receivers = [parse_display_receiver(r) if isinstance(r, str) else r for r in receivers]
    _check(model, senders, receivers)
    cache = _cache(model, problem)
    with torch.no_grad():
        per_row = _patched_metrics(model, problem, cache, [list(senders)], receivers)[0]
    patched = float(per_row.mean())
    return PathPatchResult(
        clean=cache.m_clean,
        corrupted=cache.m_corrupted,
        patched=patched,
        score=_normalize(patched, cache),
        per_example=per_row.cpu(),
        provenance=_provenance(problem, receivers, [str(s) for s in senders]),
    )


def _normalize(patched: float, cache: _Cache, normalize: bool = True) -> float:
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
    cache = _cache(model, problem)
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
                values[layer, head] = _normalize(metric, cache, normalize)
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
