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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from wildcircuits.errors import SiteError
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.names import LOGITS, NodeKind, Receiver, parse_display_receiver
from wildcircuits.patching.grid import ScoreGrid, head_labels, layer_labels
from wildcircuits.patching.path_steps import (
    PathCache,
    ReceiverJob,
    Sender,
    _check,
    logits_metrics,
    path_cache,
    receiver_site,
    sender_site,
    shared_step2_metrics,
)
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Component, Site


#: The component whose value carries each receiver slot's input (an MLP's slot is IN).
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
        per_row = _set_metrics(model, problem, cache, [list(senders)], receivers, masks, 1)[0]
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
    with torch.no_grad():
        return _set_metrics(model, problem, cache, sets, receivers, masks, max_rows)


def _set_metrics(model, problem, cache, sets, receivers, masks, max_rows: int) -> Tensor:
    """Metric (sets, batch) of each sender set into the receivers (checked already)."""
    per_chunk = max(1, max_rows // problem.batch)
    if receivers[0].node == LOGITS:
        chunks = [sets[i : i + per_chunk] for i in range(0, len(sets), per_chunk)]
        return torch.cat([logits_metrics(model, problem, cache, c) for c in chunks])
    masks = tuple(masks) if masks is not None else (None,) * len(receivers)
    job = ReceiverJob(tuple(receivers), masks, tuple(range(len(sets))))
    return shared_step2_metrics(model, problem, cache, sets, [job], max_rows)[0]


def path_patch_jobs(
    model: InstrumentedModel,
    problem: PatchingProblem,
    cache: PathCache,
    sets: Sequence[Sequence[Sender]],
    jobs: Sequence[ReceiverJob],
    max_rows: int = 128,
    on_job: Callable[[], None] | None = None,
) -> list[Tensor]:
    """`path_patch_sets` for many head / MLP receiver groups at once: per job, step 3's metric
    (len(job.sets), batch) of the sender sets it lists, with one shared step 2 per chunk of
    sets (`path_steps.shared_step2_metrics`) instead of one per job."""
    if not sets or any(not senders for senders in sets):
        raise SiteError("give one or more sender sets, each with at least one sender")
    for job in jobs:
        if any(r.node == LOGITS for r in job.receivers) or not job.receivers:
            raise SiteError("path_patch_jobs takes head / MLP receivers; use path_patch_sets")
        if any(not 0 <= k < len(sets) for k in job.sets) or not job.sets:
            raise SiteError(f"job sender indices {job.sets} must name some of the {len(sets)} sets")
        _check(model, [sender_site(s) for k in job.sets for s in sets[k]], job.receivers)
        _check_masks(problem, job.receivers, job.masks)
    _check_sender_masks(problem, [s for senders in sets for s in senders])
    with torch.no_grad():
        return shared_step2_metrics(model, problem, cache, sets, jobs, max_rows, on_job)


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
            metrics = _set_metrics(model, problem, cache, sets, receivers, None, max_rows).mean(1)
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


__all__ = [
    "PathCache",
    "PathPatchResult",
    "Sender",
    "normalized_effect",
    "path_cache",
    "path_exists",
    "path_patch",
    "path_patch_heads",
    "path_patch_sets",
    "receiver_site",
    "sender_site",
]
