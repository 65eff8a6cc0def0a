"""Faithfulness curves over circuit size, and the areas MIB reports.

Circuit sizes are fractions k of the graph's edges; the circuit at size k is the top
n = floor(k * n_edges) edges of the scores (MIB's `int(pct * n_edges)`), ranked by signed score
(highest first; for CPR) or by |score| (for CMD); ties keep the graph's edge order. As in MIB
(`apply_topn(n, absolute, prune=True)`) the top-n set is then pruned to the edges on some
input -> logits path (`wildcircuits.graph.build.prune`); the x axis stays the nominal k, and
`n_edges` records the pruned size (`n_selected` the top-n count). Under counterfactual ablation
pruning does not change the patched forward (a dropped edge carried its corrupted value anyway),
only the edge count; under mean / zero ablation it can. `pruned=False` turns it off.

Grids: `MIB_FRACTIONS` (MIB's ten sizes, 0.1% ... 100%) and `LOG_FRACTIONS` (20 sizes log-spaced
from 1e-4 to 1e-1, for small circuits); a curve is evaluated on their union.

- CPR = trapezoid area under f over k on the MIB grid, linear k axis, signed top-k (higher is
  better). CMD = trapezoid area of |1 - f| on the same grid, absolute top-k (lower is better).
  Exactly MIB's `area_under` / `area_from_1` (x from 0.001 to 1, no point at k = 0).
- log area = trapezoid area under f over log10(k) on the log grid, divided by the log range (3
  decades): the mean faithfulness across small sizes, 1 for a curve that is 1 everywhere.
- smallest faithful circuit = the first size of the union grid (ascending) whose f reaches the
  threshold (default 0.8), plus a log-linear interpolation of the crossing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wildcircuits.errors import WildcircuitsError
from wildcircuits.evaluation.faithfulness import evaluate_circuits
from wildcircuits.graph.build import Ranking, edge_order, prune
from wildcircuits.graph.circuit import Circuit, EdgeScores
from wildcircuits.graph.graph import Graph
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.patching.ablation_spec import AblationSpec
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.patching.problem import PatchingProblem

MIB_FRACTIONS: tuple[float, ...] = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
LOG_FRACTIONS: tuple[float, ...] = tuple(float(k) for k in np.logspace(-4, -1, 20))
ALL_FRACTIONS: tuple[float, ...] = tuple(sorted(set(MIB_FRACTIONS) | set(LOG_FRACTIONS)))


def edges_at(fraction: float, n_total: int) -> int:
    """MIB's circuit size: floor(fraction * n_total) edges."""
    if not 0 <= fraction <= 1:
        raise WildcircuitsError(f"circuit size {fraction} is not a fraction in [0, 1]")
    return int(fraction * n_total)


def top_circuits(
    scores: EdgeScores, sizes: Sequence[int], ranking: Ranking, pruned: bool = True
) -> list[Circuit]:
    """The top-n circuit for every n in `sizes` (edge counts), pruned unless `pruned=False`."""
    graph = scores.graph
    order = edge_order(scores, ranking)  # (edge,) best first, ties in graph.edges order
    cells = graph.valid.nonzero()[order]  # (edge, 2) receiver, sender
    circuits = []
    for n in sizes:
        mask = torch.zeros_like(graph.valid)
        mask[cells[:n, 0], cells[:n, 1]] = True
        circuit = Circuit(graph, mask, f"top {n} ({ranking.value}) {scores.method}")
        circuits.append(prune(circuit) if pruned else circuit)
    return circuits


@dataclass(frozen=True)
class FaithfulnessCurve:
    """Normalized faithfulness of top-k circuits at each size (ascending)."""

    fractions: tuple[float, ...]
    n_edges: tuple[int, ...]
    faithfulness: tuple[float, ...]
    metric: tuple[float, ...]
    m_full: float
    m_empty: float
    m_corrupted: float | None
    ordering: Ranking
    ablation: str
    n_total_edges: int
    n_selected: tuple[int, ...] = ()
    pruned: bool = True
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def at(self, fractions: Sequence[float]) -> tuple[list[float], list[float]]:
        """(fractions, faithfulness) at the given sizes, which the curve must contain."""
        lookup = dict(zip(self.fractions, self.faithfulness, strict=True))
        missing = [k for k in fractions if k not in lookup]
        if missing:
            raise WildcircuitsError(f"curve has no point at sizes {missing}")
        return list(fractions), [lookup[k] for k in fractions]

    def to_dict(self) -> dict[str, Any]:
        return {
            "fractions": list(self.fractions),
            "n_edges": list(self.n_edges),
            "faithfulness": list(self.faithfulness),
            "metric": list(self.metric),
            "m_full": self.m_full,
            "m_empty": self.m_empty,
            "m_corrupted": self.m_corrupted,
            "ordering": self.ordering.value,
            "ablation": self.ablation,
            "n_total_edges": self.n_total_edges,
            "n_selected": list(self.n_selected),
            "pruned": self.pruned,
            "provenance": dict(self.provenance),
        }

    def save(self, path: Path | str) -> Path:
        from wildcircuits.results import save_json

        return save_json(path, self.to_dict())


def trapezoid(x: Sequence[float], y: Sequence[float]) -> float:
    """Trapezoid-rule area of y over x (x ascending)."""
    if len(x) != len(y) or len(x) < 2:
        raise WildcircuitsError("an area needs two or more (x, y) points of equal count")
    return sum((x[i + 1] - x[i]) * (y[i] + y[i + 1]) / 2 for i in range(len(x) - 1))


def _require(curve: FaithfulnessCurve, ordering: Ranking, name: str) -> None:
    if curve.ordering is not ordering:
        raise WildcircuitsError(
            f"{name} is defined on the {ordering.value} top-k curve; got a "
            f"{curve.ordering.value} curve"
        )


def cpr(curve: FaithfulnessCurve, grid: Sequence[float] = MIB_FRACTIONS) -> float:
    """MIB CPR: area under f over k (linear axis), signed top-k; higher is better."""
    _require(curve, Ranking.SIGNED, "CPR")
    return trapezoid(*curve.at(grid))


def cmd(curve: FaithfulnessCurve, grid: Sequence[float] = MIB_FRACTIONS) -> float:
    """MIB CMD: area of |1 - f| over k (linear axis), absolute top-k; lower is better."""
    _require(curve, Ranking.ABSOLUTE, "CMD")
    x, f = curve.at(grid)
    return trapezoid(x, [abs(1 - v) for v in f])


def log_area(curve: FaithfulnessCurve, grid: Sequence[float] = LOG_FRACTIONS) -> float:
    """Area under f over log10(k) divided by the log range: mean f over small sizes."""
    x, f = curve.at(grid)
    logs = [math.log10(k) for k in x]
    return trapezoid(logs, f) / (logs[-1] - logs[0])


def if_defined(area, curve: FaithfulnessCurve) -> float | None:
    """`area(curve)` (cpr / cmd / log_area), or None when the curve lacks that area's grid."""
    try:
        return area(curve)
    except WildcircuitsError as error:
        if "no point at sizes" in str(error):
            return None
        raise


@dataclass(frozen=True)
class SmallestCircuit:
    """The first evaluated size reaching `threshold`, and the interpolated crossing."""

    threshold: float
    fraction: float
    n_edges: int
    faithfulness: float
    interpolated_fraction: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def smallest_faithful(curve: FaithfulnessCurve, threshold: float = 0.8) -> SmallestCircuit | None:
    """First size (ascending) with f >= threshold; None when no size reaches it."""
    points = list(zip(curve.fractions, curve.n_edges, curve.faithfulness, strict=True))
    for i, (k, n, f) in enumerate(points):
        if f >= threshold:
            crossing = k
            if i > 0 and points[i - 1][0] > 0:
                k0, _, f0 = points[i - 1]
                t = (threshold - f0) / (f - f0)  # f0 < threshold <= f
                crossing = 10 ** (math.log10(k0) + t * (math.log10(k) - math.log10(k0)))
            return SmallestCircuit(threshold, k, n, f, crossing)
    return None


def faithfulness_curves(
    model: InstrumentedModel,
    problem: PatchingProblem,
    scores: EdgeScores,
    orderings: Sequence[Ranking] = (Ranking.SIGNED, Ranking.ABSOLUTE),
    fractions: Sequence[float] = ALL_FRACTIONS,
    spec: AblationSpec | str | None = None,
    batch_size: int = 16,
    engine: EdgeForward | None = None,
    progress: bool = False,
    pruned: bool = True,
) -> dict[Ranking, FaithfulnessCurve]:
    """One curve per ordering, all evaluated in one pass over the batch.

    Per chunk: the ablation values once, then one forward per distinct circuit (at most
    len(orderings) per size, plus the empty circuit; the full circuit is the k = 1 point).
    """
    spec = AblationSpec.coerce(spec)
    graph = _check_graph(scores, engine, model)
    fractions = sorted(fractions)
    sizes = [edges_at(k, graph.n_edges) for k in fractions]
    orderings = [Ranking(o) for o in orderings]
    circuits = [c for o in orderings for c in top_circuits(scores, sizes, o, pruned)]
    result = evaluate_circuits(model, problem, circuits, spec, batch_size, engine, progress)
    provenance = {
        **result.provenance,
        "scores_method": scores.method,
        "scores_settings": dict(scores.settings),
        "scores_provenance": dict(scores.provenance),
        "size_rule": "top floor(k * n_edges) edges" + (", pruned" if pruned else ", unpruned"),
        "n_examples": result.n_examples,
    }
    curves = {}
    for i, ordering in enumerate(orderings):
        part = slice(i * len(sizes), (i + 1) * len(sizes))
        curves[ordering] = FaithfulnessCurve(
            fractions=tuple(fractions),
            n_edges=tuple(c.n_edges for c in circuits[part]),
            faithfulness=result.faithfulness[part],
            metric=result.metric[part],
            m_full=result.m_full,
            m_empty=result.m_empty,
            m_corrupted=result.m_corrupted,
            ordering=ordering,
            ablation=spec.format(),
            n_total_edges=graph.n_edges,
            n_selected=tuple(sizes),
            pruned=pruned,
            provenance={**provenance, "ordering": ordering.value},
        )
    return curves


def _check_graph(scores: EdgeScores, engine: EdgeForward | None, model) -> Graph:
    graph = engine.graph if engine is not None else Graph.for_model(model)
    if (graph.n_layers, graph.n_heads, graph.parallel_attn_mlp) != (
        scores.graph.n_layers,
        scores.graph.n_heads,
        scores.graph.parallel_attn_mlp,
    ):
        raise WildcircuitsError(
            f"scores are for a graph of {scores.graph.describe()}; this model's graph is "
            f"{graph.describe()}"
        )
    return scores.graph
