"""localise.json: score grids (DLA, activation patching), head roles and attention patterns.

`GridData` is a `ScoreGrid` (wildcircuits.patching.grid) as saved: plain nested lists, no torch,
so the report reads it without loading a model; `ScoreGrid.to_dict()` is `GridData.to_json()`.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from wildcircuits.results.base import Result, register
from wildcircuits.results.codec import KeyPath, decode, encode


@dataclass(frozen=True)
class GridData:
    """values: (rows, cols) nested lists; null (NaN when saved) for undefined cells."""

    name: str
    title: str
    row_axis: str
    col_axis: str
    row_labels: tuple[str, ...]
    col_labels: tuple[str, ...]
    values: tuple[tuple[float | None, ...], ...]
    provenance: dict[str, Any] = field(default_factory=dict)
    value_label: str = "score"

    def _json_out(self, data: dict[str, Any]) -> dict[str, Any]:
        order = (
            "name",
            "title",
            "row_axis",
            "col_axis",
            "row_labels",
            "col_labels",
            "value_label",
            "values",
            "provenance",
        )
        return {key: data[key] for key in order}  # ScoreGrid.to_dict's key order

    def to_dict(self) -> dict[str, Any]:
        return encode(self)

    def cells(self) -> Iterator[tuple[str, str, float | None]]:
        """(row label, column label, value) for every cell, row by row."""
        for row, values in zip(self.row_labels, self.values, strict=True):
            for col, value in zip(self.col_labels, values, strict=True):
                yield row, col, value

    def lookup(self) -> dict[str, float | None]:
        """ "ROW.COL" (e.g. "L3.H2", "L5.mlp") -> value."""
        return {f"{row}.{col}": value for row, col, value in self.cells()}


@dataclass(frozen=True)
class HeadRoleRow:
    """One head's role scores (flat in the JSON: `head layer index <role>... labels`)."""

    head: str
    layer: int
    index: int
    scores: dict[str, float]
    labels: tuple[str, ...] = ()

    @classmethod
    def _json_in(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        fixed = {"head", "layer", "index", "labels"}
        scores = {k: v for k, v in data.items() if k not in fixed and not isinstance(v, str)}
        return {**{k: v for k, v in data.items() if k in fixed}, "scores": scores}

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> HeadRoleRow:
        """From a `HeadRoles.table()` row."""
        return decode(cls, row, KeyPath("head-role table"))

    def _json_out(self, data: dict[str, Any]) -> dict[str, Any]:
        scores = data.pop("scores")
        labels = data.pop("labels")
        return {**data, **scores, "labels": labels}


@dataclass(frozen=True)
class HeadRoleTable:
    """`HeadRoles` as saved: thresholds, units, one row per head."""

    thresholds: dict[str, float]
    heads: tuple[HeadRoleRow, ...]
    provenance: dict[str, Any] = field(default_factory=dict)
    units: dict[str, str] = field(default_factory=dict)

    def by_head(self) -> dict[str, HeadRoleRow]:
        return {row.head: row for row in self.heads}


@dataclass(frozen=True)
class AttentionPattern:
    """One key head's attention on one prompt: the (pos, kv_pos) `pattern` with its `tokens`,
    or a `figure` path relative to the run folder, or both."""

    head: str
    why: str = ""
    prompt_index: int = 0
    tokens: tuple[str, ...] = ()
    pattern: tuple[tuple[float, ...], ...] = ()
    figure: str | None = None

    def _json_out(self, data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if k != "figure" or v is not None}


@register
@dataclass(frozen=True)
class Localise(Result):
    """localise.json (the localise step)."""

    FILE: ClassVar[str] = "localise.json"
    STEP: ClassVar[str] = "localise"

    provenance: dict[str, Any]
    grids: dict[str, GridData]
    head_roles: HeadRoleTable | None = None
    attention_patterns: tuple[AttentionPattern, ...] = ()
    clean_metric: float | None = None
    corrupted_metric: float | None = None
