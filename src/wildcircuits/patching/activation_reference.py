"""Activation patching, slow and obvious: one full forward per patch, with a plain intervention.

The reference the fast `activation_patching` is tested against. Each patch is one
`Intervention` on one head's (or the whole layer's) slice of the site, replacing either every
position or, per row, that row's position of the column; each forward runs every layer from the
embeddings. Same conventions and result grids as `wildcircuits.patching.activation`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.patching.activation import columns_for
from wildcircuits.patching.activation_plan import (
    COMPONENT,
    Columns,
    Direction,
    PatchingResult,
    PatchItem,
    PatchKind,
    PositionMode,
    batch_mean,
    build_result,
    empty_values,
    grid_cell,
    plan,
)
from wildcircuits.patching.hooks import Intervention, Mode
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Site, head_axis
from wildcircuits.tasks.metrics import at_positions


def activation_patching_reference(
    model: InstrumentedModel,
    problem: PatchingProblem,
    kind: PatchKind | str = PatchKind.HEADS,
    direction: Direction | str = Direction.DENOISE,
    positions: PositionMode | str = PositionMode.AUTO,
    layers: Sequence[int] | None = None,
    full_logits: bool = False,
    progress: bool = True,
) -> PatchingResult:
    """Same result as `activation_patching`, one full forward per patch.

    full_logits: compute logits at every position (as a plain hooked forward does) and read the
    metric position afterwards; same numbers, slower. `layers`: patch only these layers.
    """
    kind, direction = PatchKind(kind), Direction(direction)
    component = COMPONENT[kind]
    columns = columns_for(model, problem, kind, positions)
    sites = [Site(component, layer) for layer in range(model.n_layers)]
    clean = model.run(problem.clean, capture=sites, positions=problem.positions)
    corrupted = model.run(problem.corrupted, capture=sites, positions=problem.positions)
    denoise = direction is Direction.DENOISE
    source, target_tokens = (clean, problem.corrupted) if denoise else (corrupted, problem.clean)
    values = empty_values(model, kind, columns)
    items = [item for layer in plan(model, kind, columns, layers) for item in layer]
    for item in tqdm(items, desc=f"patch {kind.value} (reference)", disable=not progress):
        intervention = reference_intervention(item, sites[item.layer], source, columns)
        if full_logits:
            logits = model.run(target_tokens, interventions=[intervention]).logits
            logits = at_positions(logits, problem.positions)  # (batch, [k,] vocab)
        else:
            run = model.run(
                target_tokens, interventions=[intervention], positions=problem.positions
            )
            logits = run.logits
        values[grid_cell(model, kind, item)] = batch_mean(problem, logits)
    return build_result(
        model, problem, kind, direction, columns, values,
        batch_mean(problem, clean.logits), batch_mean(problem, corrupted.logits),
        method="reference",
    )  # fmt: skip


def reference_intervention(item: PatchItem, site: Site, source_run, columns: Columns):
    """REPLACE the item's head slice of `site` (all positions, or each row's column position)."""
    patched_site = Site(site.component, site.layer, head=item.head)
    source = source_run[site]
    if item.head is not None:
        source = source.select(_head_dim(site), item.head)  # the head's slice: (batch, pos, ...)
    row_positions = None if item.column is None else columns.rows_at(item.column)
    if row_positions is None:
        return Intervention(patched_site, Mode.REPLACE, source)

    def patch(current: torch.Tensor) -> torch.Tensor:
        # After selecting a head, every component's slice is (batch, pos, ...).
        rows = torch.arange(current.shape[0], device=current.device)
        new = current.clone()
        new[rows, row_positions] = source[rows, row_positions]
        return new

    return Intervention(patched_site, Mode.REPLACE, patch)


def _head_dim(site: Site) -> int:
    return head_axis(site.component)
