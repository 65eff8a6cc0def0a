"""Baselines for faithfulness numbers: random circuits, and the choice of ablation.

Random baseline: scores drawn i.i.d. from a standard normal (seeded) on the real edges. The
signed and the absolute top-n of i.i.d. normal scores are both uniformly random n-edge subsets,
so one curve per seed serves as the random baseline for CPR and CMD alike (its CPR is read from
it as if signed, its CMD as if absolute). Reported as mean and standard deviation over seeds.

Ablation sensitivity: the same score-ranked circuits evaluated with counterfactual, mean and zero
ablation, each normalised by its own m(full) / m(empty), reported side by side.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from wildcircuits.evaluation.curves import (
    ALL_FRACTIONS,
    FaithfulnessCurve,
    Ranking,
    cmd,
    cpr,
    faithfulness_curves,
    if_defined,
    log_area,
    smallest_faithful,
)
from wildcircuits.graph.circuit import EdgeScores
from wildcircuits.graph.graph import Graph
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.patching.ablation_spec import EDGE_ABLATIONS, AblationSpec
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.patching.problem import PatchingProblem


def random_scores(graph: Graph, seed: int, provenance: dict[str, Any] | None = None) -> EdgeScores:
    """Standard-normal scores on the real edges (seeded, CPU generator: same on every device)."""
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randn(graph.valid.shape, generator=generator)
    return EdgeScores(graph, scores, "random", {"seed": seed, "distribution": "normal(0, 1)"},
                      provenance or {})  # fmt: skip


def _as_signed(curve: FaithfulnessCurve) -> FaithfulnessCurve:
    return replace(curve, ordering=Ranking.SIGNED)


def _as_absolute(curve: FaithfulnessCurve) -> FaithfulnessCurve:
    return replace(curve, ordering=Ranking.ABSOLUTE)


def _spread(values: Sequence[float | None]) -> dict[str, float] | None:
    if any(v is None for v in values):
        return None
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return {"mean": statistics.fmean(values), "std": std, "min": min(values), "max": max(values)}


@dataclass(frozen=True)
class RandomBaseline:
    """Random-circuit curves (one per seed) and their summary numbers."""

    curves: tuple[FaithfulnessCurve, ...]
    seeds: tuple[int, ...]

    @property
    def mean_faithfulness(self) -> tuple[float, ...]:
        per_size = zip(*(c.faithfulness for c in self.curves), strict=True)
        return tuple(statistics.fmean(f) for f in per_size)

    def summary(self) -> dict[str, Any]:
        per_size = list(zip(*(c.faithfulness for c in self.curves), strict=True))
        return {
            "seeds": list(self.seeds),
            "cpr": _spread([if_defined(cpr, _as_signed(c)) for c in self.curves]),
            "cmd": _spread([if_defined(cmd, _as_absolute(c)) for c in self.curves]),
            "log_area": _spread([if_defined(log_area, c) for c in self.curves]),
            "fractions": list(self.curves[0].fractions),
            "faithfulness_mean": [statistics.fmean(f) for f in per_size],
            "faithfulness_std": [statistics.stdev(f) if len(f) > 1 else 0.0 for f in per_size],
            "smallest_80": [
                None if (s := smallest_faithful(c)) is None else s.to_dict() for c in self.curves
            ],
        }


def random_baseline(
    model: InstrumentedModel,
    problem: PatchingProblem,
    seeds: Sequence[int] = (0, 1, 2),
    fractions: Sequence[float] = ALL_FRACTIONS,
    spec: AblationSpec | str | None = None,
    batch_size: int = 16,
    engine: EdgeForward | None = None,
    progress: bool = False,
    pruned: bool = True,
) -> RandomBaseline:
    """Faithfulness of random circuits at the given sizes, one curve per seed."""
    engine = engine or EdgeForward(model)
    curves = []
    for seed in seeds:
        scores = random_scores(engine.graph, seed, dict(problem.provenance))
        curve = faithfulness_curves(
            model, problem, scores, (Ranking.SIGNED,), fractions, spec, batch_size, engine,
            progress, pruned,
        )[Ranking.SIGNED]  # fmt: skip
        curves.append(curve)
    return RandomBaseline(tuple(curves), tuple(seeds))


@dataclass(frozen=True)
class SensitivityRow:
    """CPR / CMD and the curves of one ablation type."""

    ablation: str
    signed: FaithfulnessCurve
    absolute: FaithfulnessCurve

    def summary(self) -> dict[str, Any]:
        small = smallest_faithful(self.signed)
        return {
            "ablation": self.ablation,
            "cpr": if_defined(cpr, self.signed),
            "cmd": if_defined(cmd, self.absolute),
            "log_area_signed": if_defined(log_area, self.signed),
            "smallest_80_signed": None if small is None else small.to_dict(),
            "m_full": self.signed.m_full,
            "m_empty": self.signed.m_empty,
            "faithfulness_signed": list(self.signed.faithfulness),
            "faithfulness_abs": list(self.absolute.faithfulness),
        }


def ablation_sensitivity(
    model: InstrumentedModel,
    problem: PatchingProblem,
    scores: EdgeScores,
    ablations: Sequence[AblationSpec | str] = EDGE_ABLATIONS,
    fractions: Sequence[float] = ALL_FRACTIONS,
    batch_size: int = 16,
    engine: EdgeForward | None = None,
    progress: bool = False,
    pruned: bool = True,
    done: dict[AblationSpec, dict[Ranking, FaithfulnessCurve]] | None = None,
) -> list[SensitivityRow]:
    """The same circuits under each ablation (specs or their strings; `done` reuses curves
    already computed)."""
    engine = engine or EdgeForward(model)
    rows = []
    for ablation in map(AblationSpec.coerce, ablations):
        curves = (done or {}).get(ablation)
        if curves is None:
            curves = faithfulness_curves(
                model, problem, scores, (Ranking.SIGNED, Ranking.ABSOLUTE), fractions,
                ablation, batch_size, engine, progress, pruned,
            )  # fmt: skip
        rows.append(SensitivityRow(ablation.format(), curves[Ranking.SIGNED],
                                   curves[Ranking.ABSOLUTE]))  # fmt: skip
    return rows
