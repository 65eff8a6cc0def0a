"""The one writer of metrics.json (`wildcircuits.results.metrics.Metrics`) and the one headline
rule; used by the pipeline's evaluate step and by `EvaluationReport.save` (`wildcircuits
evaluate`).

The headline circuit (`select_headline`): on the signed top-k curve, the smallest size with at
least one edge whose faithfulness reaches SELECT_AT (0.8); when no size does, the most faithful
size evaluated. This is the rule the pipeline always used (it writes that circuit as
circuit.json and red-teams it): it always yields a circuit, and the signed ranking is the one
CPR is defined on. `wildcircuits evaluate` used to take the smaller of the signed and absolute
80% circuits, and gave no circuit when neither reached 80%; it now reports the same headline,
and records the absolute 80% size as `smallest_80_absolute`.

The sensitivity rows and held-out rows give the faithfulness at the headline size: the nearest
evaluated size of each ablation's signed curve, and the headline size of each split's signed
curve.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from wildcircuits.evaluation.baselines import RandomBaseline, SensitivityRow
from wildcircuits.evaluation.curves import (
    FaithfulnessCurve,
    cmd,
    cpr,
    if_defined,
    log_area,
    smallest_faithful,
)
from wildcircuits.graph.build import Ranking
from wildcircuits.results.metrics import (
    Curve,
    CurveKind,
    HeldOutPoint,
    Metrics,
    Selected,
    SensitivityPoint,
    Smallest,
)

SELECT_AT = 0.8


def select_headline(curve: FaithfulnessCurve) -> int:
    """Index of the headline size on the signed curve (see the module docstring)."""
    for i, f in enumerate(curve.faithfulness):
        if f >= SELECT_AT and curve.n_edges[i] > 0:
            return i
    return max(range(len(curve.faithfulness)), key=lambda i: curve.faithfulness[i])


def _nearest(curve: FaithfulnessCurve, fraction: float) -> int:
    return min(range(len(curve.fractions)), key=lambda i: abs(curve.fractions[i] - fraction))


def _method_curves(method: str, signed, absolute) -> list[Curve]:
    def curve(name: str, c: FaithfulnessCurve, **areas: float | None) -> Curve:
        return Curve(
            name=name,
            kind=CurveKind.METHOD,
            ordering=c.ordering.value,
            fractions=c.fractions,
            n_edges=c.n_edges,
            faithfulness=c.faithfulness,
            log_area=if_defined(log_area, c),
            **areas,
        )

    return [
        curve(f"{method} (signed top-k)", signed, cpr=if_defined(cpr, signed)),
        curve(f"{method} (|score| top-k)", absolute, cmd=if_defined(cmd, absolute)),
    ]


def _random_curve(random: RandomBaseline) -> Curve:
    summary = random.summary()
    spread_cpr, spread_cmd = summary["cpr"] or {}, summary["cmd"] or {}
    return Curve(
        name="random",
        kind=CurveKind.RANDOM,
        ordering=Ranking.SIGNED.value,
        fractions=tuple(summary["fractions"]),
        n_edges=random.curves[0].n_edges,
        faithfulness=tuple(summary["faithfulness_mean"]),
        faithfulness_std=tuple(summary["faithfulness_std"]),
        n_samples=len(random.seeds),
        cpr=spread_cpr.get("mean"),
        cmd=spread_cmd.get("mean"),
        cpr_std=spread_cpr.get("std"),
        cmd_std=spread_cmd.get("std"),
    )


def _smallest(curve: FaithfulnessCurve) -> Smallest | None:
    small = smallest_faithful(curve, SELECT_AT)
    if small is None:
        return None
    return Smallest(ordering=curve.ordering.value, **small.to_dict())


def _sensitivity(row: SensitivityRow, fraction: float) -> SensitivityPoint:
    i = _nearest(row.signed, fraction)
    return SensitivityPoint(
        ablation=row.ablation,
        fraction=row.signed.fractions[i],
        n_edges=row.signed.n_edges[i],
        faithfulness=row.signed.faithfulness[i],
        cpr=if_defined(cpr, row.signed),
        cmd=if_defined(cmd, row.absolute),
    )


def _held_out(split: str, n: int | None, curve: FaithfulnessCurve, fraction: float):
    i = _nearest(curve, fraction)
    return HeldOutPoint(
        split=split, n=n, n_edges=curve.n_edges[i], faithfulness=curve.faithfulness[i]
    )


def build_metrics(
    *,
    provenance: Mapping[str, Any],
    method: str,
    ablation: str,
    split: str | None,
    curves: Mapping[Ranking, FaithfulnessCurve],
    random: RandomBaseline | None = None,
    sensitivity: Sequence[SensitivityRow] = (),
    held_out: Sequence[tuple[str, int | None, FaithfulnessCurve]] = (),
) -> Metrics:
    """metrics.json from the signed and absolute curves of one set of scores on one split;
    `held_out`: (split, n examples, signed curve) per split."""
    signed, absolute = curves[Ranking.SIGNED], curves[Ranking.ABSOLUTE]
    chosen = select_headline(signed)
    at = signed.fractions[chosen]
    extra = [] if random is None else [_random_curve(random)]
    return Metrics(
        provenance=dict(provenance),
        method=method,
        metric=provenance.get("metric"),
        ablation=ablation,
        split=split,
        m_full=signed.m_full,
        m_empty=signed.m_empty,
        curves=(*_method_curves(method, signed, absolute), *extra),
        cpr=if_defined(cpr, signed),
        cmd=if_defined(cmd, absolute),
        log_area=if_defined(log_area, signed),
        smallest_80=_smallest(signed),
        smallest_80_absolute=_smallest(absolute),
        selected=Selected(
            fraction=at, n_edges=signed.n_edges[chosen], faithfulness=signed.faithfulness[chosen]
        ),
        ablation_sensitivity=tuple(_sensitivity(row, at) for row in sensitivity),
        held_out=tuple(_held_out(s, n, c, at) for s, n, c in held_out),
    )
