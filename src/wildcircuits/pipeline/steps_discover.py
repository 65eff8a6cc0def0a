"""Steps 3-4: edge scores with the chosen method, then honest evaluation on held-out data.

Evaluation runs on the test split (circuits are found on train). Curves: signed and absolute
top-k over MIB's ten sizes plus 20 log-spaced small sizes, circuits pruned; random baseline and
ablation sensitivity over MIB's sizes (signed). The selected circuit is the smallest signed top-k
circuit with test faithfulness >= 0.8, else the most faithful size evaluated.
"""

from __future__ import annotations

from typing import Any

from wildcircuits.pipeline.context import Context
from wildcircuits.results import save_json

SELECT_AT = 0.8
#: The report's size slider: sizes up to this many edges (it draws at most 1,500 per size).
SLIDER_MAX_EDGES = 3000


def discover_step(ctx: Context) -> list[str]:
    """Score every edge on the train problem; write scores.pt."""
    spec, config = ctx.method(ctx.progress)
    ctx.say(f"discover: {ctx.config.method} over {ctx.engine.graph.n_edges} edges, "
            f"{ctx.train.batch} train examples")  # fmt: skip
    scores = spec(ctx.model, ctx.train, config)
    scores.save(ctx.folder.path("scores.pt"))
    ctx.__dict__.pop("scores", None)
    return ["scores.pt"]


def evaluate_step(ctx: Context) -> list[str]:
    """Faithfulness curves, CPR / CMD, random baseline, ablation sensitivity, held-out check;
    then the selected circuit (circuit.json) and the slider sizes (circuit_sizes.json)."""
    from wildcircuits.evaluation.baselines import ablation_sensitivity, random_baseline
    from wildcircuits.evaluation.curves import (
        ALL_FRACTIONS,
        MIB_FRACTIONS,
        faithfulness_curves,
    )
    from wildcircuits.graph.build import Ranking
    from wildcircuits.patching.ablation_spec import AblationSpec
    from wildcircuits.patching.edge_ablation import edge_alternatives

    model, scores, engine = ctx.model, ctx.scores, ctx.engine
    spec = AblationSpec(ctx.config.ablation)
    ctx.say("evaluate: faithfulness curves on the held-out test split")
    curves = faithfulness_curves(
        model,
        ctx.test,
        scores,
        (Ranking.SIGNED, Ranking.ABSOLUTE),
        ALL_FRACTIONS,
        spec,
        engine=engine,
        progress=ctx.progress,
    )
    ctx.say("evaluate: random baseline, ablation sensitivity, train-split curve")
    random = random_baseline(model, ctx.test, ctx.config.random_seeds, MIB_FRACTIONS, spec,
                             engine=engine, progress=ctx.progress)  # fmt: skip
    others = edge_alternatives(spec)
    sensitivity = ablation_sensitivity(model, ctx.test, scores, others, MIB_FRACTIONS,
                                       engine=engine, progress=ctx.progress)  # fmt: skip
    train = faithfulness_curves(
        model,
        ctx.train,
        scores,
        (Ranking.SIGNED,),
        ALL_FRACTIONS,
        spec,
        engine=engine,
        progress=ctx.progress,
    )[Ranking.SIGNED]
    selected = _select(curves[Ranking.SIGNED])
    data = _metrics(ctx, curves, random, sensitivity, train, selected)
    save_json(ctx.folder.path("metrics.json"), data)
    _write_circuits(ctx, curves[Ranking.SIGNED], selected)
    _figure(ctx, curves, random)
    return ["metrics.json", "circuit.json", "circuit_sizes.json"]


def _select(curve) -> int:
    """Index of the selected size on the curve."""
    for i, f in enumerate(curve.faithfulness):
        if f >= SELECT_AT and curve.n_edges[i] > 0:
            return i
    return max(range(len(curve.faithfulness)), key=lambda i: curve.faithfulness[i])


def _curve_row(name: str, kind: str, curve, **numbers: Any) -> dict[str, Any]:
    return {
        "name": name,
        "kind": kind,
        "fractions": list(curve.fractions),
        "n_edges": list(curve.n_edges),
        "faithfulness": list(curve.faithfulness),
        **numbers,
    }


def _metrics(ctx, curves, random, sensitivity, train, selected: int) -> dict[str, Any]:
    from wildcircuits.evaluation.curves import cmd, cpr, if_defined, log_area, smallest_faithful
    from wildcircuits.graph.build import Ranking

    signed, absolute = curves[Ranking.SIGNED], curves[Ranking.ABSOLUTE]
    method = ctx.config.method
    rsum = random.summary()
    small = smallest_faithful(signed, SELECT_AT)
    at = signed.fractions[selected]
    return {
        "provenance": ctx.provenance(ctx.test, split="test", evaluation_split="test",
                                     discovery_split="train"),
        "method": method,
        "metric": ctx.test.metric.value,
        "ablation": ctx.config.ablation,
        "split": "test",
        "m_full": signed.m_full,
        "m_empty": signed.m_empty,
        "curves": [
            _curve_row(f"{method} (signed top-k)", "method", signed, cpr=if_defined(cpr, signed),
                       log_area=if_defined(log_area, signed)),
            _curve_row(f"{method} (|score| top-k)", "method", absolute,
                       cmd=if_defined(cmd, absolute), log_area=if_defined(log_area, absolute)),
            {"name": "random", "kind": "random", "fractions": rsum["fractions"],
             "n_edges": list(random.curves[0].n_edges),
             "faithfulness": rsum["faithfulness_mean"],
             "faithfulness_std": rsum["faithfulness_std"], "n_samples": len(random.seeds),
             "cpr": (rsum["cpr"] or {}).get("mean"), "cmd": (rsum["cmd"] or {}).get("mean")},
        ],
        "cpr": if_defined(cpr, signed),
        "cmd": if_defined(cmd, absolute),
        "log_area": if_defined(log_area, signed),
        "smallest_80": None if small is None else small.to_dict(),
        "selected": {"fraction": at, "n_edges": signed.n_edges[selected],
                     "faithfulness": signed.faithfulness[selected]},
        "ablation_sensitivity": [_sensitivity_row(row, at) for row in sensitivity],
        "held_out": [
            {"split": "train", "n": ctx.train.batch, "n_edges": train.n_edges[selected],
             "faithfulness": train.faithfulness[selected]},
            {"split": "test", "n": ctx.test.batch, "n_edges": signed.n_edges[selected],
             "faithfulness": signed.faithfulness[selected]},
        ],
    }  # fmt: skip


def _sensitivity_row(row, fraction: float) -> dict[str, Any]:
    summary = row.summary()
    curve = row.signed
    nearest = min(range(len(curve.fractions)), key=lambda i: abs(curve.fractions[i] - fraction))
    return {"ablation": row.ablation, "fraction": curve.fractions[nearest],
            "n_edges": curve.n_edges[nearest], "faithfulness": curve.faithfulness[nearest],
            "cpr": summary["cpr"], "cmd": summary["cmd"]}  # fmt: skip


def _write_circuits(ctx: Context, curve, selected: int) -> None:
    from wildcircuits.graph.build import Ranking, top_n
    from wildcircuits.graph.mib import save_mib_json

    scores = ctx.scores
    chosen = top_n(scores, curve.n_selected[selected], Ranking.SIGNED)
    save_mib_json(ctx.folder.path("circuit.json"), chosen, scores, d_model=ctx.model.d_model)
    sizes, selected_index = [], None
    for i, (fraction, wanted) in enumerate(zip(curve.fractions, curve.n_selected, strict=True)):
        if curve.n_edges[i] > SLIDER_MAX_EDGES and i != selected:
            continue
        circuit = top_n(scores, wanted, Ranking.SIGNED)
        if i == selected:
            selected_index = len(sizes)
        sizes.append({"fraction": fraction, "n_edges": circuit.n_edges,
                      "faithfulness": curve.faithfulness[i],
                      "edges": [e.name for e in circuit.edge_list()]})  # fmt: skip
    data = {"provenance": ctx.provenance(ctx.test, split="test"), "selected": selected_index,
            "ranking": "signed top-k, pruned", "sizes": sizes}  # fmt: skip
    save_json(ctx.folder.path("circuit_sizes.json"), data)


def _figure(ctx: Context, curves, random) -> None:
    from wildcircuits.report.figures import save_lines

    ctx.folder.path("figures").mkdir(exist_ok=True)
    series = {f"{ordering.value} top-k": list(c.faithfulness) for ordering, c in curves.items()}
    first = next(iter(curves.values()))
    lookup = dict(zip(random.curves[0].fractions, random.mean_faithfulness, strict=True))
    series["random (mean)"] = [lookup.get(k, float("nan")) for k in first.fractions]
    save_lines(first.fractions, series, ctx.folder.path("figures") / "faithfulness",
               f"Faithfulness vs circuit size ({ctx.config.method}, test split)",
               "fraction of edges (log)", "normalized faithfulness",
               ctx.provenance(ctx.test, split="test"), log_x=True, html=False)  # fmt: skip
