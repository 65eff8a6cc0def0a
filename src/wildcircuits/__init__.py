"""wildcircuits: find, test and verify circuits inside real pretrained language models.

The public API is re-exported here. Names are resolved lazily so that `wildcircuits --help`
and other light commands do not import torch.

    import wildcircuits as wc
    model = wc.load_model("smollm2-135m-instruct")
    problem = wc.load_task("ioi").problem(model, n=16, split="train")
    scores = wc.score_edges(model, problem, method="eap-ig-inputs")
    print(wc.evaluate(model, problem, scores))
    explanation = wc.explain(model, problem, heldout_problem)  # classes, paths, backup
    verification = wc.verify(model, "ioi", "runs/demo/hypothesis.yaml")  # claims, verdicts
    wc.catalogue("ioi,greater_than", "smollm2-135m-instruct,gemma3-270m", "cat/")  # many cells
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "WildcircuitsError": "wildcircuits.errors",
    "score_edges": "wildcircuits.api",
    "evaluate": "wildcircuits.api",
    "explain": "wildcircuits.api",
    "verify": "wildcircuits.api",
    "VerifySettings": "wildcircuits.verification.run",
    "EvaluationConfig": "wildcircuits.evaluation.report",
    "EvaluationReport": "wildcircuits.evaluation.report",
    "Circuit": "wildcircuits.graph.circuit",
    "EdgeScores": "wildcircuits.graph.circuit",
    "Ranking": "wildcircuits.graph.build",
    "top_n": "wildcircuits.graph.build",
    "direct_logit_attribution": "wildcircuits.localise",
    "logit_lens": "wildcircuits.localise",
    "activation_patching": "wildcircuits.patching.activation",
    "path_patch": "wildcircuits.patching.path",
    "PatchingProblem": "wildcircuits.patching.problem",
    "problem_from_dataset": "wildcircuits.patching.problem",
    "DiscoverConfig": "wildcircuits.pipeline",
    "discover": "wildcircuits.pipeline",
    "Split": "wildcircuits.tasks",
    "load_task": "wildcircuits.tasks",
    "InstrumentedModel": "wildcircuits.models",
    "ModelInfo": "wildcircuits.models",
    "RunResult": "wildcircuits.models",
    "Tokens": "wildcircuits.models",
    "load_model": "wildcircuits.models",
    "wrap_hf_model": "wildcircuits.models",
    "Intervention": "wildcircuits.patching.hooks",
    "Mode": "wildcircuits.patching.hooks",
    "replace": "wildcircuits.patching.hooks",
    "Component": "wildcircuits.patching.sites",
    "Site": "wildcircuits.patching.sites",
    "format_site": "wildcircuits.patching.sites",
    "parse_site": "wildcircuits.patching.sites",
    "verify_model": "wildcircuits.models.verify",
    "catalogue": "wildcircuits.catalogue",
    "VerifiedCriteria": "wildcircuits.results.catalogue",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'wildcircuits' has no attribute {name!r}")
    module = importlib.import_module(_EXPORTS[name])
    value = module if module.__name__ == f"wildcircuits.{name}" else getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from wildcircuits import catalogue as catalogue
    from wildcircuits.api import evaluate as evaluate
    from wildcircuits.api import explain as explain
    from wildcircuits.api import score_edges as score_edges
    from wildcircuits.api import verify as verify
    from wildcircuits.errors import WildcircuitsError as WildcircuitsError
    from wildcircuits.evaluation.report import EvaluationConfig as EvaluationConfig
    from wildcircuits.evaluation.report import EvaluationReport as EvaluationReport
    from wildcircuits.graph.build import Ranking as Ranking
    from wildcircuits.graph.build import top_n as top_n
    from wildcircuits.graph.circuit import Circuit as Circuit
    from wildcircuits.graph.circuit import EdgeScores as EdgeScores
    from wildcircuits.localise import direct_logit_attribution as direct_logit_attribution
    from wildcircuits.localise import logit_lens as logit_lens
    from wildcircuits.models import InstrumentedModel as InstrumentedModel
    from wildcircuits.models import ModelInfo as ModelInfo
    from wildcircuits.models import RunResult as RunResult
    from wildcircuits.models import Tokens as Tokens
    from wildcircuits.models import load_model as load_model
    from wildcircuits.models import wrap_hf_model as wrap_hf_model
    from wildcircuits.models.verify import verify_model as verify_model
    from wildcircuits.patching.activation import activation_patching as activation_patching
    from wildcircuits.patching.hooks import Intervention as Intervention
    from wildcircuits.patching.hooks import Mode as Mode
    from wildcircuits.patching.hooks import replace as replace
    from wildcircuits.patching.path import path_patch as path_patch
    from wildcircuits.patching.problem import PatchingProblem as PatchingProblem
    from wildcircuits.patching.problem import problem_from_dataset as problem_from_dataset
    from wildcircuits.patching.sites import Component as Component
    from wildcircuits.patching.sites import Site as Site
    from wildcircuits.patching.sites import format_site as format_site
    from wildcircuits.patching.sites import parse_site as parse_site
    from wildcircuits.pipeline import DiscoverConfig as DiscoverConfig
    from wildcircuits.pipeline import discover as discover
    from wildcircuits.results.catalogue import VerifiedCriteria as VerifiedCriteria
    from wildcircuits.tasks import Split as Split
    from wildcircuits.tasks import load_task as load_task
