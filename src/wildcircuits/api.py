"""The short path through the library: a few verbs that `import wildcircuits as wc` exposes.

    model = wc.load_model("smollm2-135m-instruct")
    problem = wc.load_task("ioi").problem(model, n=16, split="train")
    scores = wc.score_edges(model, problem, method="eap-ig-inputs")
    print(wc.evaluate(model, problem, scores))

Each verb is a thin call into the module that owns the work (discovery registry, evaluation);
the long forms stay available for everything these do not expose.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wildcircuits.evaluation.report import EvaluationConfig, EvaluationReport
from wildcircuits.graph.circuit import EdgeScores
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.patching.problem import PatchingProblem

DEFAULT_METHOD = "eap-ig-inputs"


def score_edges(
    model: InstrumentedModel,
    problem: PatchingProblem,
    method: str = DEFAULT_METHOD,
    settings: Mapping[str, Any] | None = None,
) -> EdgeScores:
    """Score every edge of the model's graph with a registered discovery method.

    `settings` are the method's config fields by name (e.g. `{"steps": 10}` for EAP-IG); an
    unknown method or setting raises, listing the valid ones.
    """
    from wildcircuits.discovery.registry import get_method

    spec = get_method(method)
    return spec(model, problem, spec.config(settings))


def evaluate(
    model: InstrumentedModel,
    problem: PatchingProblem,
    scores: EdgeScores,
    config: EvaluationConfig | None = None,
) -> EvaluationReport:
    """Faithfulness curves (signed and |score| top-k), CPR / CMD and a random baseline of
    `scores` on `problem` (see `EvaluationConfig` for sizes, ablation and seeds)."""
    from wildcircuits.evaluation.report import evaluate_scores

    return evaluate_scores(model, problem, scores, config)
