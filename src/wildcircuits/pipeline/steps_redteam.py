"""Step 5: red-team checks that look for the boring explanation, each with a stated verdict.

Every check answers one question with `pass` or `warn` and the numbers behind it. Thresholds:
- random_circuit: pass when the circuit's test faithfulness beats random circuits of the same
  size (same pruning) by at least max(0.2, 2 standard deviations).
- other_seed: pass when the selected circuit keeps >= 70% of its test faithfulness on a dataset
  drawn with another seed; the edge overlap (Jaccard) with the circuit found on that dataset is
  reported, and < 0.2 also warns.
- template_subsets: pass when the circuit's faithfulness is >= 0.5 on every template alone.
- ablation_type: pass when mean and zero ablation change the selected size's faithfulness by
  at most 0.3.
- single_component: warn when one head carries >= 80% of the patching effect or of the direct
  logit effect (a simpler explanation than a circuit).
- position_only: warn when the default corruption (same positions, other tokens) keeps >= 50%
  of the clean metric: the behaviour would then come from position or template, not content.
"""

from __future__ import annotations

import statistics

from wildcircuits.pipeline.context import Context
from wildcircuits.results.behaviour import ProbeResult
from wildcircuits.results.localise import Localise
from wildcircuits.results.metrics import Metrics
from wildcircuits.results.verdicts import Check, RedTeam

_check = Check.of


def redteam(ctx: Context) -> list[str]:
    metrics = Metrics.load(ctx.folder.path("metrics.json"))
    circuit = _selected(ctx)
    f_circuit = metrics.selected.faithfulness
    ctx.say("red team: random circuits, another seed, template subsets")
    checks = [
        _random_circuit(ctx, circuit, f_circuit),
        _other_seed(ctx, circuit, f_circuit),
        _template_subsets(ctx, circuit),
        _ablation_type(metrics, f_circuit),
        *_single_component(ctx),
        _position_only(ctx),
    ]
    result = RedTeam(provenance=ctx.provenance(ctx.test, split="test"), checks=tuple(checks))
    result.save(ctx.folder.path("redteam.json"))
    return ["redteam.json"]


def _selected(ctx: Context):
    from wildcircuits.graph.mib import load_mib_json

    return load_mib_json(ctx.folder.path("circuit.json"), ctx.engine.graph).circuit


def _faithfulness(ctx: Context, problem, circuits) -> list[float]:
    from wildcircuits.evaluation.faithfulness import evaluate_circuits
    from wildcircuits.patching.ablation_spec import AblationSpec

    result = evaluate_circuits(
        ctx.model, problem, circuits, AblationSpec(ctx.config.ablation), engine=ctx.engine
    )
    return list(result.faithfulness)


def _random_circuit(ctx: Context, circuit, f_circuit: float) -> Check:
    from wildcircuits.evaluation.baselines import random_scores
    from wildcircuits.graph.build import Ranking, top_n

    seeds = [100 + s for s in ctx.config.random_seeds]
    randoms = [
        top_n(
            random_scores(ctx.engine.graph, s), circuit.n_edges, Ranking.SIGNED, prune_result=False
        )
        for s in seeds
    ]
    values = _faithfulness(ctx, ctx.test, randoms)
    mean, std = statistics.fmean(values), statistics.pstdev(values)
    ok = f_circuit >= mean + max(0.2, 2 * std)
    return _check(
        "random_circuit",
        "Does a random circuit of the same size do as well?",
        ok,
        f"the circuit keeps {f_circuit:.2f} of the effect; {len(values)} random circuits of "
        f"{circuit.n_edges} edges keep {mean:.2f} +- {std:.2f}",
        circuit=f_circuit,
        random_mean=mean,
        random_std=std,
        n_edges=circuit.n_edges,
    )


def _other_seed(ctx: Context, circuit, f_circuit: float) -> Check:
    from wildcircuits.graph.build import Ranking, top_n

    seed = ctx.config.seed + 1
    train = ctx.problem_of(ctx.dataset("train", seed=seed))
    test = ctx.problem_of(ctx.dataset("test", seed=seed))
    spec, config = ctx.method(progress=False)
    other = top_n(spec(ctx.model, train, config), circuit.n_edges, Ranking.SIGNED)
    both = circuit.edges & other.edges
    either = circuit.edges | other.edges
    overlap = float(both.sum()) / max(1, int(either.sum()))
    (f_new,) = _faithfulness(ctx, test, [circuit])
    keeps = f_new >= 0.7 * f_circuit
    ok = keeps and overlap >= 0.2
    return _check(
        "other_seed",
        "Does the result survive another seed (new prompts, rediscovered)?",
        ok,
        f"on prompts drawn with seed {seed} the circuit keeps {f_new:.2f} (was {f_circuit:.2f}); "
        f"rediscovering there gives a circuit with edge overlap (Jaccard) {overlap:.2f}",
        faithfulness_new_seed=f_new,
        faithfulness=f_circuit,
        jaccard=overlap,
        seed=seed,
    )


def _template_subsets(ctx: Context, circuit) -> Check:
    groups: dict[str, list[int]] = {}
    for i, example in enumerate(ctx.test_data.examples):
        groups.setdefault(example.template, []).append(i)
    per = {}
    for template, rows in sorted(groups.items()):
        if len(rows) < 2:
            continue
        try:
            (per[template],) = _faithfulness(ctx, ctx.test.select(rows), [circuit])
        except Exception as error:  # e.g. no effect on this subset: report, don't crash
            per[template] = None
            ctx.say(f"red team: template {template}: {error}")
    values = [v for v in per.values() if v is not None]
    if not values:
        return _check(
            "template_subsets",
            "Does the circuit hold on each template alone?",
            False,
            "not enough examples per template to test",
            per_template=per,
        )
    worst = min(values)
    return _check(
        "template_subsets",
        "Does the circuit hold on each template alone?",
        worst >= 0.5,
        f"faithfulness per template ranges {worst:.2f} .. {max(values):.2f} over {len(values)} "
        "templates",
        per_template=per,
        worst=worst,
    )


def _ablation_type(metrics: Metrics, f_circuit: float) -> Check:
    rows = metrics.ablation_sensitivity
    diffs = {r.ablation: r.faithfulness - f_circuit for r in rows}
    ok = all(abs(d) <= 0.3 for d in diffs.values())
    text = ", ".join(f"{r.ablation} {r.faithfulness:.2f} at {r.n_edges} edges" for r in rows)
    return _check(
        "ablation_type",
        "Does the circuit depend on the ablation type?",
        ok,
        f"{metrics.ablation} ablation gives {f_circuit:.2f}; {text}",
        differences=diffs,
    )


def _single_component(ctx: Context) -> list[Check]:
    localise = Localise.load(ctx.folder.path("localise.json"))
    patch = localise.grids["patch_head"]
    best = max((abs(v), r, c) for r, c, v in patch.cells() if v is not None)
    checks = [
        _check(
            "single_component_patching",
            "Does a single head carry most of the effect?",
            best[0] < 0.8,
            f"the largest single-head denoising effect is {best[0]:.2f} ({best[1]}.{best[2]}) of "
            "the full effect",
            largest=best[0],
            head=f"{best[1]}.{best[2]}",
        )
    ]
    dla = localise.grids["dla_head"]
    total = localise.clean_metric
    top, name = max((abs(v), f"{r}.{c}") for r, c, v in dla.cells() if v is not None)
    share = top / abs(total) if total else 0.0
    checks.append(
        _check(
            "single_component_dla",
            "Does a single head write most of the answer directly?",
            share < 0.8,
            f"the largest direct logit effect of one head is {top:.2f} ({name}), {share:.0%} of "
            f"the clean metric {total:.2f}",
            largest=top,
            share=share,
            head=name,
        )
    )
    return checks


def _position_only(ctx: Context) -> Check:
    data = ProbeResult.load(ctx.folder.path("behaviour.json"))
    clean, corrupted = data.clean.mean, data.baseline.mean
    share = corrupted / clean if clean else 0.0
    if not data.higher_is_better:
        share = clean / corrupted if corrupted else 0.0
    return _check(
        "position_only",
        "Could position or template alone explain the behaviour?",
        share < 0.5,
        f"with the same positions but other tokens ({data.default_corruption}), the metric is "
        f"{corrupted:.2f} vs {clean:.2f} clean ({share:.0%})",
        share=share,
    )
