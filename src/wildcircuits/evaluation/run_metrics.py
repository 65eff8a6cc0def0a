"""An `EvaluationReport` as the run folder's `metrics.json` (schema: docs/run_folder.md).

The headline circuit is the smallest top-k circuit reaching 80% faithfulness, signed or
absolute ranking, whichever is smaller (its `ordering` is recorded); the sensitivity and held-out
rows give the faithfulness of that same size and ranking under each ablation and on each split
(empty lists when no size reaches 80%). Extra keys (CPR / CMD per ablation, the absolute curve)
are allowed by the schema and kept.
"""

from __future__ import annotations

from typing import Any

from wildcircuits.evaluation.curves import (
    FaithfulnessCurve,
    cmd,
    cpr,
    if_defined,
    log_area,
    smallest_faithful,
)
from wildcircuits.graph.build import Ranking


def _curve_entry(name: str, kind: str, curve: FaithfulnessCurve) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "ordering": curve.ordering.value,
        "fractions": list(curve.fractions),
        "n_edges": list(curve.n_edges),
        "faithfulness": list(curve.faithfulness),
    }


def _at(curve: FaithfulnessCurve, fraction: float) -> dict[str, Any] | None:
    if fraction not in curve.fractions:
        return None
    i = curve.fractions.index(fraction)
    return {"n_edges": curve.n_edges[i], "faithfulness": curve.faithfulness[i]}


def metrics_json(report) -> dict[str, Any]:
    """The `metrics.json` mapping of an `EvaluationReport`."""
    signed, absolute = report.curves[Ranking.SIGNED], report.curves[Ranking.ABSOLUTE]
    method = str(signed.provenance.get("scores_method", "scores"))
    curves = [
        {**_curve_entry(method, "method", signed), "cpr": if_defined(cpr, signed),
         "log_area": if_defined(log_area, signed)},
        {**_curve_entry(f"{method} (|score|)", "method", absolute),
         "cmd": if_defined(cmd, absolute), "log_area": if_defined(log_area, absolute)},
    ]  # fmt: skip
    if report.random is not None:
        summary = report.random.summary()
        first = report.random.curves[0]
        curves.append({
            **_curve_entry("random", "random", first),
            "faithfulness": summary["faithfulness_mean"],
            "faithfulness_std": summary["faithfulness_std"],
            "n_samples": len(report.random.seeds),
            "cpr": summary["cpr"], "cmd": summary["cmd"],
        })  # fmt: skip
    candidates = [(s, r) for r in Ranking if (s := smallest_faithful(report.curves[r])) is not None]
    small, ranking = min(candidates, key=lambda c: c[0].fraction) if candidates else (None, None)
    sensitivity, held_out = [], []
    if small is not None:
        for row in report.sensitivity:
            point = _at(row.signed if ranking is Ranking.SIGNED else row.absolute, small.fraction)
            if point is not None:
                sensitivity.append({"ablation": row.ablation, **point,
                                    "cpr": if_defined(cpr, row.signed),
                                    "cmd": if_defined(cmd, row.absolute)})  # fmt: skip
        if report.heldout is not None:
            for split, pair in (("train", report.heldout.train), ("test", report.heldout.test)):
                point = _at(pair[ranking], small.fraction)
                n = pair[Ranking.SIGNED].provenance.get("n_examples")
                if point is not None:
                    held_out.append({"split": split, "n": n, **point})
    return {
        "provenance": dict(report.provenance),
        "method": method,
        "metric": report.provenance.get("metric"),
        "ablation": signed.ablation,
        "split": report.provenance.get("split"),
        "curves": curves,
        "smallest_80": None if small is None else {
            "ordering": ranking.value, "fraction": small.fraction, "n_edges": small.n_edges,
            "faithfulness": small.faithfulness,
            "interpolated_fraction": small.interpolated_fraction,
        },
        "ablation_sensitivity": sensitivity,
        "held_out": held_out,
    }  # fmt: skip
