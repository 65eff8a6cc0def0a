"""What activation patching patches and how results are laid out (shared by fast and reference).

- `PatchKind`: the site patched and the grid it gives; `Direction`: denoise or noise.
- `Columns`: position columns, each naming one position *per row* of a padded batch
  (`PositionMode`, see `position_columns`).
- `PatchItem`: one patch (layer, head, column); `plan` lists them, `grid_cell` places them.
- `patch_mask`: which entries of a site's value a patch replaces, for k patches at once.
- `build_result`: the normalised effect and raw metric `ScoreGrid`s with provenance.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import torch

from wildcircuits.errors import WildcircuitsError
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.names import head_node
from wildcircuits.patching.grid import ScoreGrid, head_labels, layer_labels, position_labels
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Component, head_axis, position_axis


class PatchKind(StrEnum):
    """What is patched, and the grid it gives."""

    RESID = "resid"  # resid_pre; layer x position
    ATTN_OUT = "attn_out"  # layer x position
    MLP_OUT = "mlp_out"  # layer x position
    HEADS = "heads"  # each head's z at every position; layer x head
    HEADS_BY_POS = "heads_by_pos"  # each head's z at one position; layer.head x position
    Q = "q"  # layer x head
    K = "k"  # layer x KV head
    V = "v"  # layer x KV head
    PATTERN = "pattern"  # layer x head


class Direction(StrEnum):
    """DENOISE: clean into corrupted. NOISE: corrupted into clean."""

    DENOISE = "denoise"
    NOISE = "noise"


class PositionMode(StrEnum):
    """How columns of position-resolved kinds map to per-row positions (module docstring)."""

    AUTO = "auto"
    ABSOLUTE = "absolute"
    NAMED = "named"
    ALL = "all"


COMPONENT = {
    PatchKind.RESID: Component.RESID_PRE,
    PatchKind.ATTN_OUT: Component.ATTN_OUT,
    PatchKind.MLP_OUT: Component.MLP_OUT,
    PatchKind.HEADS: Component.Z,
    PatchKind.HEADS_BY_POS: Component.Z,
    PatchKind.Q: Component.Q,
    PatchKind.K: Component.K,
    PatchKind.V: Component.V,
    PatchKind.PATTERN: Component.PATTERN,
}
BY_POSITION = frozenset({PatchKind.RESID, PatchKind.ATTN_OUT, PatchKind.MLP_OUT})
KV_KINDS = frozenset({PatchKind.K, PatchKind.V})
NORMALISATION = {
    Direction.DENOISE: "(m_patched - m_corrupted) / (m_clean - m_corrupted)",
    Direction.NOISE: "(m_clean - m_patched) / (m_clean - m_corrupted)",
}


@dataclass(frozen=True)
class Columns:
    """Position columns: labels and index (column, batch), each column's position in each row.

    A column with index None patches every position (PositionMode.ALL).
    """

    mode: PositionMode
    labels: tuple[str, ...]
    index: torch.Tensor | None  # (column, batch) long, or None for ALL

    def rows_at(self, column: int) -> torch.Tensor | None:
        return None if self.index is None else self.index[column]


@dataclass(frozen=True)
class PatchItem:
    """One patch: a layer, optionally one head (KV head for k / v) and one position column."""

    layer: int
    head: int | None
    column: int | None


@dataclass(frozen=True)
class PatchingResult:
    """effect: normalised effect grid (1 = full effect); metric: raw patched metric (batch mean)."""

    effect: ScoreGrid
    metric: ScoreGrid
    clean_metric: float
    corrupted_metric: float

    def save(self, folder: Path | str, figure: bool = True) -> None:
        self.effect.save(folder, figure=figure)
        self.metric.save(folder, figure=figure)


# positions ---------------------------------------------------------------------------------------
def position_columns(
    model: InstrumentedModel, problem: PatchingProblem, mode: PositionMode | str
) -> Columns:
    """The position columns of `problem` under `mode` (see the module docstring)."""
    mode = PositionMode(mode)
    lengths = problem.clean.attention_mask.sum(-1)  # (batch,)
    if mode is PositionMode.AUTO:
        same = bool((lengths == lengths[0]).all())
        mode = PositionMode.NAMED if not same and len(problem.named_positions) >= 2 else mode
        mode = PositionMode.ABSOLUTE if mode is PositionMode.AUTO else mode
    if mode is PositionMode.ALL:
        return Columns(mode, ("all",), None)
    if mode is PositionMode.NAMED:
        return _named_columns(model, problem)
    start = problem.clean.attention_mask.float().argmax(-1)  # (batch,) first real token
    steps = torch.arange(int(lengths.min()), device=start.device)
    index = start[None, :] + steps[:, None]  # (column, batch)
    first_row = problem.clean.input_ids[0, index[:, 0]]
    labels = position_labels(_str_tokens(model, first_row))
    return Columns(mode, tuple(labels), index)


def _named_columns(model: InstrumentedModel, problem: PatchingProblem) -> Columns:
    if not problem.named_positions:
        raise WildcircuitsError(
            "position mode 'named' needs named positions in the problem (e.g. IO, S1, S2, END); "
            "use 'absolute' or 'all'"
        )
    names = sorted(problem.named_positions, key=lambda n: int(problem.named_positions[n][0]))
    index = torch.stack(
        [problem.named_positions[n].to(problem.clean.input_ids.device) for n in names]
    )
    first_row = _str_tokens(model, problem.clean.input_ids[0, index[:, 0]])
    labels = tuple(f"{n}:{repr(t)[1:-1]}" for n, t in zip(names, first_row, strict=True))
    return Columns(PositionMode.NAMED, labels, index.long())


def _str_tokens(model: InstrumentedModel, ids: torch.Tensor) -> list[str]:
    """Token strings, or `#id` when the model has no tokenizer (tiny test models)."""
    if model.tokenizer is None:
        return [f"#{i}" for i in ids.tolist()]
    return model.to_str_tokens(ids)


# the plan: which patches, where they go in the grid ------------------------------------------
def plan(
    model: InstrumentedModel,
    kind: PatchKind,
    columns: Columns,
    layers: Sequence[int] | None = None,
) -> list[list[PatchItem]]:
    """Patches of each chosen layer (default every layer), one list per layer."""
    n_heads = model.n_kv_heads if kind in KV_KINDS else model.n_heads
    n_columns = len(columns.labels)
    planned = []
    chosen = range(model.n_layers) if layers is None else layers
    for layer in chosen:
        if not 0 <= layer < model.n_layers:
            raise WildcircuitsError(f"layer {layer} out of range 0..{model.n_layers - 1}")
        if kind in BY_POSITION:
            items = [PatchItem(layer, None, c) for c in range(n_columns)]
        elif kind is PatchKind.HEADS_BY_POS:
            items = [PatchItem(layer, h, c) for h in range(n_heads) for c in range(n_columns)]
        else:
            items = [PatchItem(layer, h, None) for h in range(n_heads)]
        planned.append(items)
    return planned


def grid_cell(model: InstrumentedModel, kind: PatchKind, item: PatchItem) -> tuple[int, int]:
    """(row, column) of a patch in its kind's grid."""
    if kind in BY_POSITION:
        return item.layer, item.column
    if kind is PatchKind.HEADS_BY_POS:
        return item.layer * model.n_heads + item.head, item.column
    return item.layer, item.head


def grid_axes(model: InstrumentedModel, kind: PatchKind, columns: Columns):
    """(row axis, column axis, row labels, column labels) of a kind's grid."""
    if kind in BY_POSITION:
        return "layer", "position", layer_labels(model.n_layers), list(columns.labels)
    if kind is PatchKind.HEADS_BY_POS:
        heads = [head_node(i, h) for i in range(model.n_layers) for h in range(model.n_heads)]
        rows = [head.display for head in heads]
        return "head", "position", rows, list(columns.labels)
    if kind in KV_KINDS:
        return (
            "layer",
            "kv_head",
            layer_labels(model.n_layers),
            [f"KV{h}" for h in range(model.n_kv_heads)],
        )
    return "layer", "head", layer_labels(model.n_layers), head_labels(model.n_heads)


# masks: which entries of a site's value a patch replaces ---------------------------------------
def patch_mask(
    component: Component,
    shape: Sequence[int],
    items: Sequence[PatchItem],
    columns: Columns,
    batch: int,
) -> torch.Tensor:
    """Boolean mask broadcastable to a value of `shape` = (len(items) * batch, ...).

    Replica r (rows r*batch .. (r+1)*batch - 1) is True at items[r]'s head (if any) and, in each
    row, at that row's position of items[r]'s column (if any).
    """
    ndim = len(shape)
    head_dim, pos_dim = head_axis(component), position_axis(component)
    has_head = component in (Component.Z, Component.Q, Component.K, Component.V, Component.PATTERN)
    mask_shape = [shape[0]] + [1] * (ndim - 1)
    mask_shape[pos_dim] = shape[pos_dim]
    if has_head:
        mask_shape[head_dim] = shape[head_dim]
    mask = torch.zeros(mask_shape, dtype=torch.bool, device=_device(columns))
    rows = torch.arange(batch, device=mask.device)
    for r, item in enumerate(items):
        index: list[Any] = [slice(None)] * ndim
        index[0] = rows + r * batch
        for axis in range(1, ndim):
            index[axis] = slice(None) if mask_shape[axis] > 1 else 0
        if has_head and item.head is not None:
            index[head_dim] = item.head
        if item.column is not None and columns.index is not None:
            index[pos_dim] = columns.index[item.column].to(mask.device)
        mask[tuple(index)] = True
    return mask


def _device(columns: Columns) -> torch.device | str:
    return "cpu" if columns.index is None else columns.index.device


def batch_mean(problem: PatchingProblem, logits: torch.Tensor) -> float:
    """The metric averaged over the batch (in float64, the same way for every run)."""
    return float(problem.score(logits).double().mean())


# results -----------------------------------------------------------------------------------------
def empty_values(model: InstrumentedModel, kind: PatchKind, columns: Columns) -> torch.Tensor:
    """A NaN grid of the kind's shape, to be filled with batch-mean patched metrics."""
    _, _, rows, cols = grid_axes(model, kind, columns)
    return torch.full((len(rows), len(cols)), math.nan, dtype=torch.float64)


def normalise(
    patched: torch.Tensor, clean: float, corrupted: float, direction: Direction
) -> torch.Tensor:
    """Effect from batch-mean metrics; NaN (with a warning) when clean == corrupted."""
    gap = clean - corrupted
    if abs(gap) < 1e-12:
        warnings.warn(
            "clean and corrupted metrics are equal: the normalised effect is undefined (NaN); "
            "read the raw metric grid instead",
            stacklevel=3,
        )
        return torch.full_like(patched, math.nan)
    if direction is Direction.DENOISE:
        return (patched - corrupted) / gap
    return (clean - patched) / gap


def build_result(
    model: InstrumentedModel,
    problem: PatchingProblem,
    kind: PatchKind,
    direction: Direction,
    columns: Columns,
    patched: torch.Tensor,
    clean_metric: float,
    corrupted_metric: float,
    method: str,
) -> PatchingResult:
    """Effect and raw metric grids from the batch-mean patched metric of every patch."""
    row_axis, col_axis, rows, cols = grid_axes(model, kind, columns)
    provenance = {
        **dict(problem.provenance),
        "method": f"activation_patching ({method})",
        "kind": kind.value,
        "site": COMPONENT[kind].value,
        "direction": direction.value,
        "source_run": "clean" if direction is Direction.DENOISE else "corrupted",
        "target_run": "corrupted" if direction is Direction.DENOISE else "clean",
        "normalisation": NORMALISATION[direction] + " (1 = full effect), from batch means",
        "reduction": "metric averaged over the batch",
        "positions": columns.mode.value,
        "clean_metric": clean_metric,
        "corrupted_metric": corrupted_metric,
        "n": problem.batch,
    }
    if kind in KV_KINDS:
        provenance["gqa"] = (
            f"patched per KV head; KV head g is shared by query heads "
            f"g*{model.n_heads // model.n_kv_heads} .. (g+1)*{model.n_heads // model.n_kv_heads}-1"
        )
    name = f"patch_{kind.value}_{direction.value}"
    title = f"Activation patching ({direction.value}): {kind.value}"
    common = dict(row_axis=row_axis, col_axis=col_axis, row_labels=rows, col_labels=cols)
    effect = ScoreGrid(
        name=name,
        title=title,
        values=normalise(patched, clean_metric, corrupted_metric, direction).float(),
        provenance=provenance,
        value_label="normalised effect",
        **common,
    )
    metric = ScoreGrid(
        name=f"{name}_metric",
        title=f"{title} (raw {problem.metric.value})",
        values=patched.float(),
        provenance=provenance,
        value_label=f"patched {problem.metric.value} (batch mean)",
        **common,
    )
    return PatchingResult(effect, metric, clean_metric, corrupted_metric)
