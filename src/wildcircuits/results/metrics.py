"""metrics.json: faithfulness curves, MIB areas, the headline circuit, sensitivity, held-out.

One writer fills it: `wildcircuits.evaluation.run_metrics.build_metrics`, used by the pipeline's
evaluate step and by `wildcircuits evaluate`; the headline rule is stated there (`SELECT_AT`).
Faithfulness is the normalized `(m(C) - m(empty)) / (m(full) - m(empty))`.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from wildcircuits.results.base import Result, register


class CurveKind(StrEnum):
    METHOD = "method"
    RANDOM = "random"
    OTHER = "other"


@dataclass(frozen=True, kw_only=True)
class Curve:
    """Faithfulness at each size (fraction of edges; `n_edges` after pruning). Random curves
    hold the mean over `n_samples` seeds and its `faithfulness_std`; areas are None where the
    curve lacks that area's grid (for random: the mean over seeds, `*_std` their spread)."""

    name: str
    kind: CurveKind
    ordering: str | None = None
    fractions: tuple[float, ...]
    n_edges: tuple[int, ...]
    faithfulness: tuple[float | None, ...]
    faithfulness_std: tuple[float | None, ...] | None = None
    n_samples: int | None = None
    cpr: float | None = None
    cmd: float | None = None
    log_area: float | None = None
    cpr_std: float | None = None
    cmd_std: float | None = None

    def _json_out(self, data: dict[str, Any]) -> dict[str, Any]:
        optional = {
            "ordering",
            "faithfulness_std",
            "n_samples",
            "cpr",
            "cmd",
            "log_area",
            "cpr_std",
            "cmd_std",
        }
        return {k: v for k, v in data.items() if k not in optional or v is not None}


@dataclass(frozen=True, kw_only=True)
class Smallest:
    """The first evaluated size whose faithfulness reaches `threshold`, and the log-linear
    interpolation of the crossing."""

    ordering: str | None = None
    threshold: float = 0.8
    fraction: float
    n_edges: int
    faithfulness: float
    interpolated_fraction: float | None = None


@dataclass(frozen=True, kw_only=True)
class Selected:
    """The headline circuit (the run's circuit.json): one size of the `ordering` curve."""

    ordering: str = "signed"
    fraction: float
    n_edges: int
    faithfulness: float


@dataclass(frozen=True, kw_only=True)
class SensitivityPoint:
    """The headline size under another ablation type (nearest size of that curve)."""

    ablation: str
    fraction: float | None = None
    n_edges: int
    faithfulness: float | None
    cpr: float | None = None
    cmd: float | None = None


@dataclass(frozen=True, kw_only=True)
class HeldOutPoint:
    """The headline size on one split."""

    split: str
    n: int | None = None
    n_edges: int
    faithfulness: float | None


@register
@dataclass(frozen=True, kw_only=True)
class Metrics(Result):
    """metrics.json (the evaluate step, or `wildcircuits evaluate`)."""

    FILE: ClassVar[str] = "metrics.json"
    STEP: ClassVar[str] = "evaluate"

    @classmethod
    def rebuild_hint(cls) -> str:
        return f"{super().rebuild_hint()}, or run `wildcircuits evaluate` again"

    provenance: dict[str, Any]
    method: str
    metric: str | None
    ablation: str
    split: str | None
    m_full: float | None = None
    m_empty: float | None = None
    curves: tuple[Curve, ...]
    cpr: float | None = None
    cmd: float | None = None
    log_area: float | None = None
    smallest_80: Smallest | None = None
    smallest_80_absolute: Smallest | None = None
    selected: Selected
    ablation_sensitivity: tuple[SensitivityPoint, ...] = ()
    held_out: tuple[HeldOutPoint, ...] = ()

    def settings(self) -> dict[str, Any]:
        """The run settings this file records (for the report's settings table)."""
        return {
            "method": self.method,
            "metric": self.metric,
            "ablation": self.ablation,
            "split": self.split,
        }
