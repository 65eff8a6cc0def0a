"""Site ablation: replace chosen activations by an ablation value, and measure.

The ablation is an `AblationSpec` (patching.ablation_spec), drawn from a reference batch (by
default the spec's distribution of the problem: its corrupted prompts, e.g. IOI's ABC prompts, or
its clean ones; or any batch given as `reference`):
- zero: the activation becomes 0.
- mean: the mean of the activation over the reference's real tokens, per position (position p
  gets the mean of position p over the reference rows with a real token there) or pooled;
  optionally per group, e.g. per template as in the IOI paper: row i then gets the mean over the
  reference rows of its group.
- resample: row i gets the activation of another reference row (a seeded random derangement,
  within row i's group when groups are given), as in causal scrubbing / resample ablation.
- counterfactual: row i gets the activation of reference row i (noising activation patching).

`ablation_values` produces the replacement values (reusable by discovery code); `ablate` runs the
ablated forward and reports the metric with and without the ablation, with provenance.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from wildcircuits.errors import InterventionError, SiteError
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.models.tokens import Tokens
from wildcircuits.patching.ablation_spec import AblationKind, AblationSpec, mean_over_tokens
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


def _mean_values(value: Tensor, mask: Tensor, ids: Tensor | None, per_position: bool) -> Tensor:
    """Mean of `value` (rows, pos, ...): (1, ...) overall, or (rows, ...) per group."""
    if ids is None:
        return mean_over_tokens(value, mask, per_position)
    out = torch.empty_like(value if per_position else value[:, :1])
    for group in ids.unique():
        rows = (ids == group).nonzero().flatten().to(value.device)
        out[rows] = mean_over_tokens(value[rows], mask[rows], per_position)
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
    ablation: AblationSpec | str,
    groups: Groups | None = None,
) -> dict[Site, Tensor]:
    """Replacement value of each site, computed on the reference batch `tokens`.

    Returned tensors broadcast to the site's selected slice of a batch aligned with `tokens`
    (same sequence length): zero -> zeros with batch 1; mean -> batch 1 without groups, one row
    per reference row with groups; resample / counterfactual -> one row per reference row. E.g.
    for z.L3.H2 the slice is (batch, pos, d_head) and the mean value (1, pos, d_head).
    """
    spec = AblationSpec.coerce(ablation)
    sites = _check_sites(sites)
    full = list(dict.fromkeys(_full_site(s) for s in sites))
    if spec.per_template and groups is None:
        raise InterventionError(
            f"{spec.format()!r} ablation needs one group label per reference row: pass groups="
        )
    ids = None if groups is None else _group_ids(groups, tokens.batch)
    with torch.no_grad():
        cache = model.run(tokens, capture=full, return_logits=False).cache
    source = torch.arange(tokens.batch)  # counterfactual: each row its own reference row
    if spec.kind is AblationKind.RESAMPLE:
        whole = torch.zeros(tokens.batch, dtype=torch.long)
        source = resample_rows(ids if ids is not None else whole, spec.seed)
    values = {}
    for site in sites:
        value = cache[_full_site(site)]  # (batch, pos, ...)
        if spec.kind is AblationKind.ZERO:
            value = torch.zeros_like(value[:1])
        elif spec.kind is AblationKind.MEAN:
            value = _mean_values(value, tokens.attention_mask, ids, spec.per_position)
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
    ablation: AblationSpec | str,
    reference: Tokens | None = None,
    groups: Groups | None = None,
) -> AblationResult:
    """Ablate `targets` on the problem's clean batch and report the metric change.

    ablation: a spec or its string, e.g. "mean", "mean:pooled", "resample:seed=7", "zero".
    reference: the batch means / resamples come from (default: the spec's distribution of the
    problem, its corrupted prompts unless the spec says clean); it must have the clean batch's
    sequence length, and, when `groups` (one label per reference row, e.g. the template of each
    example), resampling or counterfactual values are used, its rows must align with the clean
    rows. Ablating z of a head replaces that head's output at every position (or only at
    `site.position`).
    """
    from wildcircuits.inputs import check_sites

    spec = AblationSpec.coerce(ablation)
    sites = _check_sites(check_sites(model, list(targets), problem.clean.seq_len, "ablate:"))
    named = spec.reference(problem)
    reference = named if reference is None else reference
    _check_reference(problem, reference, spec, groups)
    values = ablation_values(model, reference, sites, spec, groups)
    with torch.no_grad():
        clean = _mean_metric(model, problem, problem.clean)
        corrupted = _mean_metric(model, problem, problem.corrupted)
        ablated = _mean_metric(model, problem, problem.clean, ablation_interventions(values))
    m_clean, m_corr, m_abl = (float(x.mean()) for x in (clean, corrupted, ablated))
    gap = m_clean - m_corr
    provenance = {
        **problem.provenance,
        "method": "ablation",
        **spec.describe(),
        "reference": spec.over.value if reference is named else "custom",
        "reference_corruption": problem.provenance.get("corruption"),
        "grouped_means": groups is not None,
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


def _check_reference(problem, reference: Tokens, spec: AblationSpec, groups) -> None:
    if spec.kind is AblationKind.ZERO:
        return
    if reference.seq_len != problem.clean.seq_len:
        raise InterventionError(
            f"reference batch has length {reference.seq_len}, the clean batch "
            f"{problem.clean.seq_len}; per-position means and resamples need equal lengths"
        )
    per_row = groups is not None or spec.kind is not AblationKind.MEAN
    if per_row and reference.batch != problem.batch:
        raise InterventionError(
            f"{spec.kind.value} ablation with groups, resampled or counterfactual rows needs one "
            f"reference row per clean row; got {reference.batch} reference rows for "
            f"{problem.batch} clean rows"
        )
