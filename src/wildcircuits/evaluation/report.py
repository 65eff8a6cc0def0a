"""One evaluation of edge scores: curves, MIB areas, baselines, sensitivity, held-out numbers.

`evaluate_scores(model, problem, scores, config)` runs everything a score file needs and returns an
`EvaluationReport`; `.save(folder)` writes `report.json`, one JSON file per curve and the figure
(faithfulness vs circuit size, log x, method against the random baseline).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wildcircuits.evaluation.baselines import (
    RandomBaseline,
    SensitivityRow,
    ablation_sensitivity,
    random_baseline,
)
from wildcircuits.evaluation.curves import (
    ALL_FRACTIONS,
    FaithfulnessCurve,
    Ranking,
    faithfulness_curves,
)
from wildcircuits.evaluation.heldout import HeldOutResult, curve_summary
from wildcircuits.graph.circuit import EdgeScores
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.patching.ablation_spec import AblationSpec
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.results.metrics import Metrics


@dataclass(frozen=True)
class EvaluationConfig:
    """What to compute. `sensitivity`: the other ablation types to compare (may be empty)."""

    spec: AblationSpec = field(default_factory=AblationSpec)
    fractions: tuple[float, ...] = ALL_FRACTIONS
    random_seeds: tuple[int, ...] = (0, 1, 2)
    sensitivity: tuple[AblationSpec | str, ...] = ()
    batch_size: int = 16
    pruned: bool = True

    def describe(self) -> dict[str, Any]:
        return {
            **self.spec.describe(),
            "n_sizes": len(self.fractions),
            "random_seeds": list(self.random_seeds),
            "sensitivity": [AblationSpec.coerce(a).format() for a in self.sensitivity],
            "batch_size": self.batch_size,
            "pruned": self.pruned,
        }


@dataclass(frozen=True)
class EvaluationReport:
    """Everything measured about one set of edge scores on one problem."""

    curves: Mapping[Ranking, FaithfulnessCurve]
    random: RandomBaseline | None
    sensitivity: tuple[SensitivityRow, ...]
    heldout: HeldOutResult | None
    provenance: Mapping[str, Any]

    def summary(self) -> dict[str, Any]:
        return {
            **curve_summary(dict(self.curves)),
            "random": None if self.random is None else self.random.summary(),
            "sensitivity": [row.summary() for row in self.sensitivity],
            "heldout": None if self.heldout is None else self.heldout.summary(),
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "summary": self.summary(),
            "curves": {o.value: c.to_dict() for o, c in self.curves.items()},
            "provenance": dict(self.provenance),
        }

    def metrics(self) -> Metrics:
        """This report as the run folder's metrics.json (the one writer, `build_metrics`)."""
        from wildcircuits.evaluation.run_metrics import build_metrics

        signed = self.curves[Ranking.SIGNED]
        held_out = []
        if self.heldout is not None:
            for split, pair in (("train", self.heldout.train), ("test", self.heldout.test)):
                curve = pair[Ranking.SIGNED]
                held_out.append((split, curve.provenance.get("n_examples"), curve))
        return build_metrics(
            provenance=self.provenance,
            method=str(signed.provenance.get("scores_method", "scores")),
            ablation=signed.ablation,
            split=self.provenance.get("split"),
            curves=self.curves,
            random=self.random,
            sensitivity=self.sensitivity,
            held_out=held_out,
        )

    def save(self, folder: Path | str) -> Path:
        """report.json, metrics.json (run-folder schema), curve_<ordering>.json,
        random_seed<seed>.json and faithfulness.png / .html in `folder`."""
        from wildcircuits.results import save_json

        folder = Path(folder)
        save_json(folder / "report.json", self.to_dict())
        self.metrics().save(folder / "metrics.json")
        for ordering, curve in self.curves.items():
            curve.save(folder / f"curve_{ordering.value}.json")
        if self.random is not None:
            for seed, curve in zip(self.random.seeds, self.random.curves, strict=True):
                curve.save(folder / f"random_seed{seed}.json")
        save_curve_figure(folder / "faithfulness", self.curves, self.random, self.provenance)
        return folder / "report.json"

    def lines(self) -> list[str]:
        """A short human-readable summary."""
        s = self.summary()
        out = [f"CPR {_num(s['cpr'])}  CMD {_num(s['cmd'])}  log-area (signed) "
               f"{_num(s['log_area_signed'])}"]  # fmt: skip
        for ordering, small in s["smallest_80"].items():
            text = "not reached" if small is None else (
                f"{small['n_edges']} edges ({small['fraction']:.4%}), f={small['faithfulness']:.3f}"
            )  # fmt: skip
            out.append(f"smallest circuit with f >= 0.8 ({ordering}): {text}")
        if s["random"] is not None:
            r = s["random"]
            out.append(f"random ({len(r['seeds'])} seeds): CPR {_spread(r['cpr'])}  "
                       f"CMD {_spread(r['cmd'])}")  # fmt: skip
        for row in s["sensitivity"]:
            out.append(f"ablation {row['ablation']:<14} CPR {_num(row['cpr'])}  "
                       f"CMD {_num(row['cmd'])}")  # fmt: skip
        return out

    def __str__(self) -> str:
        return "\n".join(self.lines())

    def _repr_html_(self) -> str:
        from wildcircuits.report.notebook import evaluation_html

        return evaluation_html(self)


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def _spread(spread: Mapping[str, float] | None) -> str:
    return "n/a" if spread is None else f"{spread['mean']:.3f} +- {spread['std']:.3f}"


def save_curve_figure(
    stem: Path | str,
    curves: Mapping[Ranking, FaithfulnessCurve],
    random: RandomBaseline | None,
    provenance: Mapping[str, Any],
):
    """Faithfulness vs circuit size (log x): each ordering's curve and the random mean."""
    from wildcircuits.report.figures import save_lines

    first = next(iter(curves.values()))
    method = first.provenance.get("scores_method", "scores")
    series = {f"{method} ({o.value} top-k)": list(c.faithfulness) for o, c in curves.items()}
    if random is not None and random.curves[0].fractions == first.fractions:
        series[f"random (mean of {len(random.seeds)})"] = list(random.mean_faithfulness)
    x = [max(k, 1e-5) for k in first.fractions]
    return save_lines(
        x, series, stem, f"Faithfulness vs circuit size ({first.ablation} ablation)",
        "fraction of edges (log)", "normalized faithfulness", dict(provenance), log_x=True,
    )  # fmt: skip


def evaluate_scores(
    model: InstrumentedModel,
    problem: PatchingProblem,
    scores: EdgeScores,
    config: EvaluationConfig | None = None,
    heldout: HeldOutResult | None = None,
    progress: bool = False,
) -> EvaluationReport:
    """Curves (signed + absolute), random baseline and ablation sensitivity for `scores`."""
    config = config or EvaluationConfig()
    engine = EdgeForward(model)
    both = (Ranking.SIGNED, Ranking.ABSOLUTE)
    curves = faithfulness_curves(model, problem, scores, both, config.fractions, config.spec,
                                 config.batch_size, engine, progress, config.pruned)  # fmt: skip
    random = None
    if config.random_seeds:
        random = random_baseline(model, problem, config.random_seeds, config.fractions,
                                 config.spec, config.batch_size, engine, progress,
                                 config.pruned)  # fmt: skip
    rows: Sequence[SensitivityRow] = ()
    if config.sensitivity:
        others = [AblationSpec.coerce(a) for a in config.sensitivity]
        ablations = list(dict.fromkeys([config.spec, *others]))
        rows = ablation_sensitivity(model, problem, scores, ablations, config.fractions,
                                    config.batch_size, engine, progress, config.pruned,
                                    done={config.spec: curves})  # fmt: skip
    provenance = {**curves[Ranking.SIGNED].provenance, "evaluation": config.describe()}
    provenance.pop("ordering", None)
    return EvaluationReport(curves, random, tuple(rows), heldout, provenance)
