"""Ablations: replace chosen activations by zero, a mean, or a resampled value, and measure.

Three ablation types (`AblationType`):
- zero: the activation becomes 0.
- mean: the mean of the activation over a reference distribution (by default the problem's
  corrupted batch, e.g. IOI's ABC prompts). Per position by default (position p gets the mean of
  position p over the reference rows that have a real token there); optionally per group, e.g.
  per template as in the IOI paper: row i then gets the mean over the reference rows of its group.
- resample: row i gets the activation of another reference row (a seeded random derangement,
  within row i's group when groups are given), as in causal scrubbing / resample ablation.

`ablation_values` produces the replacement values (reusable by discovery code); `ablate` runs the
ablated forward and reports the metric with and without the ablation, with provenance.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import torch
from torch import Tensor

from wildcircuits.errors import InterventionError, SiteError
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.models.tokens import Tokens
from wildcircuits.patching.hooks import Intervention, Mode, selection_index
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import (
    ATTENTION_MAP_COMPONENTS,
    GLOBAL_COMPONENTS,
    Component,
    Site,
    parse_site,
    position_axis,
)

Groups = Sequence[Hashable] | Tensor


class AblationType(StrEnum):
    """How an ablated activation is replaced."""

    ZERO = "zero"
    MEAN = "mean"
    RESAMPLE = "resample"


@dataclass(frozen=True)
class AblationResult:
    """The metric with and without an ablation (means over the batch).

    clean: metric of the un-ablated run; ablated: metric with the sites ablated;
    effect = ablated - clean; corrupted / normalized (= (ablated - corrupted) /
    (clean - corrupted), so 1 = unchanged, 0 = as bad as the corrupted run) when a problem was
    given. per_example: (batch,) ablated metric of every row.
    """

    clean: float
    ablated: float
    effect: float
    corrupted: float | None
    normalized: float | None
    per_example: Tensor
    sites: tuple[str, ...]
    provenance: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "clean": self.clean,
            "ablated": self.ablated,
            "effect": self.effect,
            "corrupted": self.corrupted,
            "normalized": self.normalized,
            "per_example": self.per_example.detach().cpu().tolist(),
            "sites": list(self.sites),
            "provenance": dict(self.provenance),
        }


def head_sites(heads: Sequence[tuple[int, int]], component: Component = Component.Z) -> list[Site]:
    """One site per (layer, head): the head's z (default) or its result."""
    return [Site(component, layer, head) for layer, head in heads]


def mlp_sites(layers: Sequence[int]) -> list[Site]:
    """The MLP output of each layer."""
    return [Site(Component.MLP_OUT, layer) for layer in layers]


def _check_sites(sites: Sequence[Site]) -> list[Site]:
    sites = [parse_site(s) if isinstance(s, str) else s for s in sites]
    for site in sites:
        if site.component in GLOBAL_COMPONENTS - {Component.EMBED}:
            raise SiteError(f"{site}: ablate per-layer sites or embed, not {site.component.value}")
        if site.component in ATTENTION_MAP_COMPONENTS:
            raise SiteError(
                f"{site}: ablating attention scores / patterns is not supported; "
                "ablate z, result, q, k, v, attn_out, mlp_out or a residual site"
            )
    if not sites:
        raise SiteError("no sites to ablate; give at least one head, MLP or other site")
    return sites


def _group_ids(groups: Groups, batch: int) -> Tensor:
    """Groups (any hashable labels) -> (batch,) int ids."""
    labels = groups.tolist() if isinstance(groups, Tensor) else list(groups)
    if len(labels) != batch:
        raise InterventionError(f"{len(labels)} group labels for a reference batch of {batch}")
    index: dict[Hashable, int] = {}
    return torch.tensor([index.setdefault(label, len(index)) for label in labels])


def _masked_mean(value: Tensor, mask: Tensor, per_position: bool) -> Tensor:
    """Mean over rows (and positions unless per_position) of real tokens only.

    value: (rows, pos, ...) mask: (rows, pos) -> (1, pos, ...) or (1, 1, ...).
    """
    weight = mask.to(value.dtype).reshape(*mask.shape, *([1] * (value.ndim - 2)))
    if not per_position:
        total = (value * weight).sum(dim=(0, 1), keepdim=True)
        return total / weight.sum(dim=(0, 1), keepdim=True).clamp(min=1)
    return (value * weight).sum(0, keepdim=True) / weight.sum(0, keepdim=True).clamp(min=1)


def _mean_values(value: Tensor, mask: Tensor, ids: Tensor | None, per_position: bool) -> Tensor:
    """Mean of `value` (rows, pos, ...): (1, ...) overall, or (rows, ...) per group."""
    if ids is None:
        return _masked_mean(value, mask, per_position)
    out = torch.empty_like(value if per_position else value[:, :1])
    for group in ids.unique():
        rows = (ids == group).nonzero().flatten().to(value.device)
        out[rows] = _masked_mean(value[rows], mask[rows], per_position)
    return out


def resample_rows(ids: Tensor, seed: int) -> Tensor:
    """(rows,) source row of each row: a seeded derangement within each group.

    A group of one row keeps its own row (there is no other example to take).
    """
    generator = torch.Generator().manual_seed(seed)
    source = torch.arange(len(ids))
    for group in ids.unique():
        rows = (ids == group).nonzero().flatten()
        if len(rows) < 2:
            continue
        shift = torch.randperm(len(rows), generator=generator)
        # Rotate a random order by one: every row gets a different row of its group.
        source[rows[shift]] = rows[shift.roll(1)]
    return source


def _full_site(site: Site) -> Site:
    return Site(site.component, site.layer)


def ablation_values(
    model: InstrumentedModel,
    tokens: Tokens,
    sites: Sequence[Site],
    ablation: AblationType,
    groups: Groups | None = None,
    seed: int = 0,
    per_position: bool = True,
) -> dict[Site, Tensor]:
    """Replacement value of each site, computed on the reference batch `tokens`.

    Returned tensors broadcast to the site's selected slice of a batch aligned with `tokens`
    (same sequence length): zero -> zeros with batch 1; mean -> batch 1 without groups, one row
    per reference row with groups; resample -> one row per reference row. E.g. for z.L3.H2 the
    slice is (batch, pos, d_head) and the mean value (1, pos, d_head).
    """
    ablation = AblationType(ablation)
    sites = _check_sites(sites)
    full = list(dict.fromkeys(_full_site(s) for s in sites))
    ids = None if groups is None else _group_ids(groups, tokens.batch)
    with torch.no_grad():
        cache = model.run(tokens, capture=full, return_logits=False).cache
    if ablation is AblationType.RESAMPLE:
        source = resample_rows(
            ids if ids is not None else torch.zeros(tokens.batch, dtype=torch.long), seed
        )
    values = {}
    for site in sites:
        value = cache[_full_site(site)]  # (batch, pos, ...)
        if ablation is AblationType.ZERO:
            value = torch.zeros_like(value[:1])
        elif ablation is AblationType.MEAN:
            value = _mean_values(value, tokens.attention_mask, ids, per_position)
        else:
            value = value[source.to(value.device)]
        values[site] = _select_slice(site, value)
    return values


def _select_slice(site: Site, value: Tensor) -> Tensor:
    """The site's head / position slice of a full value (a position axis of 1 broadcasts)."""
    if site.position is not None and value.shape[position_axis(site.component)] == 1:
        site = Site(site.component, site.layer, site.head, 0)  # one mean for every position
    return value[selection_index(site, value.ndim)]


def ablation_interventions(values: dict[Site, Tensor]) -> list[Intervention]:
    """REPLACE interventions putting each site's ablation value in place."""
    return [Intervention(site, Mode.REPLACE, value) for site, value in values.items()]


def _mean_metric(
    model: InstrumentedModel, problem: PatchingProblem, tokens: Tokens, interventions=()
) -> Tensor:
    logits = model.run(tokens, interventions=interventions, positions=problem.positions).logits
    return problem.score(logits)


def ablate(
    model: InstrumentedModel,
    problem: PatchingProblem,
    targets: Sequence[Site | str],
    ablation: AblationType | str,
    reference: Tokens | None = None,
    groups: Groups | None = None,
    seed: int = 0,
    per_position: bool = True,
) -> AblationResult:
    """Ablate `targets` on the problem's clean batch and report the metric change.

    reference: the distribution means / resamples come from (default: the problem's corrupted
    batch); it must have the clean batch's sequence length, and, when `groups` (one label per
    reference row, e.g. the template of each example) or resampling is used, its rows must align
    with the clean rows. Ablating z of a head replaces that head's output at every position (or
    only at `site.position`).
    """
    ablation = AblationType(ablation)
    sites = _check_sites(list(targets))
    reference = problem.corrupted if reference is None else reference
    _check_reference(problem, reference, ablation, groups)
    values = ablation_values(model, reference, sites, ablation, groups, seed, per_position)
    with torch.no_grad():
        clean = _mean_metric(model, problem, problem.clean)
        corrupted = _mean_metric(model, problem, problem.corrupted)
        ablated = _mean_metric(model, problem, problem.clean, ablation_interventions(values))
    m_clean, m_corr, m_abl = (float(x.mean()) for x in (clean, corrupted, ablated))
    gap = m_clean - m_corr
    provenance = {
        **problem.provenance,
        "method": "ablation",
        "ablation": ablation.value,
        "reference": "corrupted" if reference is problem.corrupted else "custom",
        "reference_corruption": problem.provenance.get("corruption"),
        "grouped_means": groups is not None,
        "per_position": per_position,
        "resample_seed": seed if ablation is AblationType.RESAMPLE else None,
        "sites": [str(s) for s in sites],
    }
    return AblationResult(
        clean=m_clean,
        ablated=m_abl,
        effect=m_abl - m_clean,
        corrupted=m_corr,
        normalized=(m_abl - m_corr) / gap if gap != 0 else float("nan"),
        per_example=ablated.detach().cpu(),
        sites=tuple(str(s) for s in sites),
        provenance=provenance,
    )


def _check_reference(problem, reference: Tokens, ablation, groups) -> None:
    if ablation is AblationType.ZERO:
        return
    if reference.seq_len != problem.clean.seq_len:
        raise InterventionError(
            f"reference batch has length {reference.seq_len}, the clean batch "
            f"{problem.clean.seq_len}; per-position means and resamples need equal lengths"
        )
    per_row = groups is not None or ablation is AblationType.RESAMPLE
    if per_row and reference.batch != problem.batch:
        raise InterventionError(
            f"{ablation.value} ablation with groups/resampling needs one reference row per clean "
            f"row; got {reference.batch} reference rows for {problem.batch} clean rows"
        )
