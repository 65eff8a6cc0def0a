"""Steps 3-4: edge scores with the chosen method, then honest evaluation on held-out data.

Evaluation runs on the test split (circuits are found on train). Curves: signed and absolute
top-k over MIB's ten sizes plus 20 log-spaced small sizes, circuits pruned; random baseline and
ablation sensitivity over MIB's sizes (signed). The selected circuit (circuit.json) is the headline
circuit of metrics.json: `wildcircuits.evaluation.run_metrics.select_headline`.
"""

from __future__ import annotations

from wildcircuits.pipeline.context import Context
from wildcircuits.results.circuits import CircuitSizes, SizeEntry

#: The report's size slider: sizes up to this many edges (it draws at most 1,500 per size).
SLIDER_MAX_EDGES = 3000


def discover_step(ctx: Context) -> list[str]:
    """Score every edge on the train problem; write scores.pt."""
    spec, config = ctx.method(ctx.progress)
    ctx.say(
        f"discover: {ctx.config.method} over {ctx.engine.graph.n_edges} edges, "
        f"{ctx.train.batch} train examples"
    )
    scores = spec(ctx.model, ctx.train, config)
    scores.save(ctx.folder.path("scores.pt"))
    ctx.__dict__.pop("scores", None)
    return ["scores.pt"]


def evaluate_step(ctx: Context) -> list[str]:
    """Faithfulness curves, CPR / CMD, random baseline, ablation sensitivity, held-out check
    (metrics.json); then the selected circuit (circuit.json) and the slider sizes
    (circuit_sizes.json)."""
    from wildcircuits.evaluation.run_metrics import build_metrics, select_headline
    from wildcircuits.graph.build import Ranking

    curves, random, sensitivity, train = _measure(ctx)
    signed = curves[Ranking.SIGNED]
    data = build_metrics(
        provenance=ctx.provenance(
            ctx.test, split="test", evaluation_split="test", discovery_split="train"
        ),
        method=ctx.config.method,
        ablation=ctx.config.ablation,
        split="test",
        curves=curves,
        random=random,
        sensitivity=sensitivity,
        held_out=[("train", ctx.train.batch, train), ("test", ctx.test.batch, signed)],
    )
    data.save(ctx.folder.path("metrics.json"))
    _write_circuits(ctx, signed, select_headline(signed))
    _figure(ctx, curves, random)
    return ["metrics.json", "circuit.json", "circuit_sizes.json", "figures/faithfulness.png"]


def _measure(ctx: Context):
    """(test curves by ranking, random baseline, sensitivity rows, signed train curve)."""
    from wildcircuits.evaluation.baselines import ablation_sensitivity, random_baseline
    from wildcircuits.evaluation.curves import ALL_FRACTIONS, MIB_FRACTIONS, faithfulness_curves
    from wildcircuits.graph.build import Ranking
    from wildcircuits.patching.ablation_spec import AblationSpec
    from wildcircuits.patching.edge_ablation import edge_alternatives

    model, scores, engine, progress = ctx.model, ctx.scores, ctx.engine, ctx.progress
    spec = AblationSpec(ctx.config.ablation)
    ctx.say("evaluate: faithfulness curves on the held-out test split")
    both = (Ranking.SIGNED, Ranking.ABSOLUTE)
    curves = faithfulness_curves(
        model, ctx.test, scores, both, ALL_FRACTIONS, spec, engine=engine, progress=progress
    )
    ctx.say("evaluate: random baseline, ablation sensitivity, train-split curve")
    random = random_baseline(
        model,
        ctx.test,
        ctx.config.random_seeds,
        MIB_FRACTIONS,
        spec,
        engine=engine,
        progress=progress,
    )
    others = edge_alternatives(spec)
    sensitivity = ablation_sensitivity(
        model, ctx.test, scores, others, MIB_FRACTIONS, engine=engine, progress=progress
    )
    train = faithfulness_curves(
        model,
        ctx.train,
        scores,
        (Ranking.SIGNED,),
        ALL_FRACTIONS,
        spec,
        engine=engine,
        progress=progress,
    )[Ranking.SIGNED]
    return curves, random, sensitivity, train


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
        edges = tuple(e.name for e in circuit.edge_list())
        sizes.append(SizeEntry(fraction, circuit.n_edges, edges, curve.faithfulness[i]))
    result = CircuitSizes(
        provenance=ctx.provenance(ctx.test, split="test"),
        sizes=tuple(sizes),
        selected=selected_index,
    )
    result.save(ctx.folder.path("circuit_sizes.json"))


def _figure(ctx: Context, curves, random) -> None:
    from wildcircuits.report.figures import save_lines

    ctx.folder.path("figures").mkdir(exist_ok=True)
    series = {f"{ordering.value} top-k": list(c.faithfulness) for ordering, c in curves.items()}
    first = next(iter(curves.values()))
    lookup = dict(zip(random.curves[0].fractions, random.mean_faithfulness, strict=True))
    series["random (mean)"] = [lookup.get(k, float("nan")) for k in first.fractions]
    save_lines(
        first.fractions,
        series,
        ctx.folder.path("figures") / "faithfulness",
        f"Faithfulness vs circuit size ({ctx.config.method}, test split)",
        "fraction of edges (log)",
        "normalized faithfulness",
        ctx.provenance(ctx.test, split="test"),
        log_x=True,
        html=False,
    )
