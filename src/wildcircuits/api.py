"""The short path through the library: a few verbs that `import wildcircuits as wc` exposes.

    model = wc.load_model("smollm2-135m-instruct")
    problem = wc.load_task("ioi").problem(model, n=16, split="train")
    scores = wc.score_edges(model, problem, method="eap-ig-inputs")
    print(wc.evaluate(model, problem, scores))
    explanation = wc.explain(model, problem, heldout)  # compact circuit, classes, paths

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


def explain(
    model: InstrumentedModel,
    search: PatchingProblem,
    heldout: PatchingProblem,
    nodes: Any = None,
    progress: bool = True,
) -> Any:
    """Explain how the model does the task (`wildcircuits.explanation.run.explain`): the compact
    circuit of components at named positions (searched on `search`, measured on `heldout`),
    its functional classes, the backup heads, the class-to-class paths and the algorithm in
    words, as an `Explanation`. `nodes`: restrict the candidates (e.g. a discovered circuit's)."""
    from wildcircuits.explanation.run import explain as run_explain

    return run_explain(model, search, heldout, nodes=nodes, progress=progress)


def verify(
    model: InstrumentedModel,
    task: Any,
    hypothesis: Any,
    settings: Any = None,
    corruption: str | None = None,
    progress: bool = True,
) -> Any:
    """Test a hypothesis (`wildcircuits.verification.run.verify`): the IOI paper's criteria,
    Shi et al.'s tests, causal scrubbing and the harder red-team checks on the task's held-out
    prompts, one verdict per claim, as a `Verification`. `task`: a task or its name;
    `hypothesis`: a `Hypothesis` or a path to a hypothesis file; `settings`: `VerifySettings`."""
    from wildcircuits.explanation.hypothesis import Hypothesis, load_hypothesis
    from wildcircuits.names import Shape
    from wildcircuits.tasks import load_task
    from wildcircuits.verification.run import verify as run_verify

    task = load_task(task) if isinstance(task, str) else task
    source = None
    if not isinstance(hypothesis, Hypothesis):
        source = hypothesis
        hypothesis = load_hypothesis(hypothesis, Shape(model.n_layers, model.n_heads))
    return run_verify(model, task, hypothesis, settings, corruption=corruption, source=source,
                      progress=progress)  # fmt: skip
