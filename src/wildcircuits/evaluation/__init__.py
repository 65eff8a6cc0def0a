"""Honest circuit evaluation on the edge graph: faithfulness, curves, MIB areas, baselines.

from wildcircuits.evaluation import EvaluationConfig, evaluate_scores
report = evaluate_scores(model, problem, scores, EvaluationConfig())
report.save("runs/ioi-eap")   # report.json, curve_*.json, faithfulness.png/.html
"""

from wildcircuits.evaluation.baselines import (
    RandomBaseline,
    SensitivityRow,
    ablation_sensitivity,
    random_baseline,
    random_scores,
)
from wildcircuits.evaluation.curves import (
    ALL_FRACTIONS,
    LOG_FRACTIONS,
    MIB_FRACTIONS,
    FaithfulnessCurve,
    SmallestCircuit,
    cmd,
    cpr,
    edges_at,
    faithfulness_curves,
    log_area,
    smallest_faithful,
    top_circuits,
    trapezoid,
)
from wildcircuits.evaluation.faithfulness import (
    CircuitMetrics,
    Faithfulness,
    circuit_faithfulness,
    evaluate_circuits,
    normalized_faithfulness,
)
from wildcircuits.evaluation.heldout import HeldOutResult, heldout_check, shared_prompts
from wildcircuits.evaluation.report import EvaluationConfig, EvaluationReport, evaluate_scores
from wildcircuits.patching.ablation_spec import (
    EDGE_ABLATIONS,
    AblationKind,
    AblationSpec,
    Distribution,
)
from wildcircuits.patching.edge_ablation import AblationCache, mean_outputs

__all__ = [
    "ALL_FRACTIONS",
    "LOG_FRACTIONS",
    "MIB_FRACTIONS",
    "EDGE_ABLATIONS",
    "AblationCache",
    "AblationKind",
    "AblationSpec",
    "CircuitMetrics",
    "Distribution",
    "EvaluationConfig",
    "EvaluationReport",
    "Faithfulness",
    "FaithfulnessCurve",
    "HeldOutResult",
    "RandomBaseline",
    "SensitivityRow",
    "SmallestCircuit",
    "ablation_sensitivity",
    "cmd",
    "cpr",
    "edges_at",
    "evaluate_circuits",
    "evaluate_scores",
    "circuit_faithfulness",
    "faithfulness_curves",
    "heldout_check",
    "log_area",
    "mean_outputs",
    "normalized_faithfulness",
    "random_baseline",
    "random_scores",
    "shared_prompts",
    "smallest_faithful",
    "top_circuits",
    "trapezoid",
]
