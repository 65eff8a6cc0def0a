"""`ScoreGrid`: one labelled 2-D table of scores, the common result of localisation methods.

Activation patching (layer x position, layer x head), attribution patching, direct logit
attribution and logit lens all return a `ScoreGrid`; it saves itself as JSON with provenance and
draws itself as a heatmap, so every method gets the same files and pictures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wildcircuits.errors import WildcircuitsError
from wildcircuits.names import head_label, layer_label
from wildcircuits.results import load_json, save_json
from wildcircuits.results.codec import KeyPath, decode
from wildcircuits.results.localise import GridData


@dataclass(frozen=True)
class ScoreGrid:
    """values: (rows, cols) with named axes and one label per row / column.

    `provenance` says how the numbers were obtained (model, quantization, task, split, seed,
    metric, direction or ablation, normalisation). `name` is a file-safe id such as
    "patch_heads_denoise".
    """

    name: str
    title: str
    values: torch.Tensor
    row_axis: str
    col_axis: str
    row_labels: Sequence[str]
    col_labels: Sequence[str]
    provenance: Mapping[str, Any] = field(default_factory=dict)
    value_label: str = "score"

    def __post_init__(self) -> None:
        rows, cols = len(self.row_labels), len(self.col_labels)
        if tuple(self.values.shape) != (rows, cols):
            raise WildcircuitsError(
                f"{self.name}: values shape {tuple(self.values.shape)} does not match "
                f"{rows} row labels x {cols} column labels"
            )

    def top(self, k: int = 10, by_abs: bool = True) -> list[tuple[str, str, float]]:
        """The k largest entries as (row label, column label, value)."""
        flat = self.values.flatten()
        key = torch.nan_to_num(flat.abs() if by_abs else flat, nan=-float("inf"))  # NaN last
        order = key.argsort(descending=True)[:k]
        cols = len(self.col_labels)
        return [
            (self.row_labels[i // cols], self.col_labels[i % cols], float(flat[i]))
            for i in order.tolist()
        ]

    def _repr_html_(self) -> str:
        from wildcircuits.report.notebook import grid_html

        return grid_html(self)

    def saved(self) -> GridData:
        """This grid as saved in files (torch-free; `wildcircuits.results.localise`)."""
        return GridData(
            name=self.name,
            title=self.title,
            row_axis=self.row_axis,
            col_axis=self.col_axis,
            row_labels=tuple(self.row_labels),
            col_labels=tuple(self.col_labels),
            values=tuple(map(tuple, self.values.detach().cpu().tolist())),
            provenance=dict(self.provenance),
            value_label=self.value_label,
        )

    def to_dict(self) -> dict[str, Any]:
        return self.saved().to_dict()

    @classmethod
    def from_saved(cls, data: GridData) -> ScoreGrid:
        values = np.array(data.values, dtype=float)  # None (NaN on save) -> nan
        return cls(
            name=data.name,
            title=data.title,
            values=torch.tensor(values, dtype=torch.float32),
            row_axis=data.row_axis,
            col_axis=data.col_axis,
            row_labels=list(data.row_labels),
            col_labels=list(data.col_labels),
            provenance=dict(data.provenance),
            value_label=data.value_label,
        )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], file: str = "grid") -> ScoreGrid:
        """Parse saved JSON; a missing or ill-typed key raises naming `file` and the key."""
        return cls.from_saved(decode(GridData, data, KeyPath(file)))

    def save(self, folder: Path | str, figure: bool = True) -> Path:
        """Write `<folder>/<name>.json` (atomic) and, by default, its heatmap PNG + HTML."""
        folder = Path(folder)
        path = save_json(folder / f"{self.name}.json", self.to_dict())
        if figure:
            from wildcircuits.report.figures import save_heatmap

            save_heatmap(
                self.values.detach().cpu().numpy(),
                self.row_labels,
                self.col_labels,
                folder / self.name,
                self.title,
                self.row_axis,
                self.col_axis,
                self.provenance,
                colorbar=self.value_label,
            )
        return path


def load_grid(path: Path | str) -> ScoreGrid:
    return ScoreGrid.from_dict(load_json(path), file=str(path))


def layer_labels(n_layers: int) -> list[str]:
    """Row labels L0, L1, ...; a row's label, '.', and a head column's label name the head."""
    return [layer_label(layer) for layer in range(n_layers)]


def head_labels(n_heads: int) -> list[str]:
    """Column labels H0, H1, ..."""
    return [head_label(head) for head in range(n_heads)]


def position_labels(str_tokens: Sequence[str]) -> list[str]:
    """Position labels `i:token` (token repr without quotes, so whitespace is visible)."""
    return [f"{i}:{repr(t)[1:-1]}" for i, t in enumerate(str_tokens)]
