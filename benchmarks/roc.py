"""Every discovery method scored against the planted circuits' true edges: ROC AUC per method.

InterpBench's protocol on the planted models of tests/planted_models.py, whose circuits are
known by construction: run each registered method on the model's own problem, rank the edges
(|score|; ACDC by its signed score), and report the ROC AUC against the true edges
(`wildcircuits.evaluation.roc.score_against_planted`). Two protocols per model: counterfactual
ablation scored against the edges the corruption exercises (`planted_edges(scope="corruption")`),
and zero ablation scored against every mechanism edge (`scope="mechanism"`); a method runs
under each ablation it supports (random ablates nothing and runs once, under the first).

Columns: AUC (noise floor 1e-6 of the largest |score|), raw AUC (no floor: rounding-level
scores ranked as they fall), seconds (one call, after a warm-up call on 2 rows), forwards (calls
of the unembedding module during the call: every forward pass that reaches the logits; ACDC also
reports its batched forwards). Single-threaded torch by default (a shared 2-core machine).

ACDC runs once per `--acdc-thresholds` tau (default: its default 0.01, and 1e-4 for small
effects); its rows are labelled with tau.

    python benchmarks/roc.py [--n 8] [--threads 1] [--methods eap acdc ...] [--models ...]
        [--acdc-thresholds 0.01 0.0001]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # for tests.planted_models

PROTOCOLS = (("counterfactual", "corruption"), ("zero", "mechanism"))


def count_forwards(model):
    """A counter of the unembedding module's calls and a function removing its hook."""
    calls = [0]
    head = model.hf_model.get_output_embeddings()
    handle = head.register_forward_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls, handle.remove


def variants(spec, ablation: str, thresholds: list[float]) -> list[tuple[str, object]]:
    """(label, config) of each run of `spec` under `ablation`: ACDC once per threshold."""
    settings = {} if ablation == "counterfactual" or not spec.ablations else {"ablation": ablation}
    if spec.name != "acdc":
        return [(spec.name, spec.config(settings))]
    return [
        (f"acdc tau={tau:g}", spec.config({**settings, "progress": False, "threshold": tau}))
        for tau in thresholds
    ]


def supports(spec, ablation: str) -> bool:
    return any(kind.value == ablation for kind in spec.ablations)


def run_method(spec, model, problem, config):
    """(scores, seconds, forwards) of one call, after a warm-up call on 2 rows."""
    spec(model, problem.select(slice(0, 2)), config)
    calls, remove = count_forwards(model)
    try:
        start = time.perf_counter()
        scores = spec(model, problem, config)
        seconds = time.perf_counter() - start
    finally:
        remove()
    return scores, seconds, calls[0]


def rows_for(name: str, methods: list[str], n: int, thresholds: list[float]) -> list[tuple]:
    from tests.planted_models import planted_case, planted_edges

    from wildcircuits.discovery import get_method
    from wildcircuits.evaluation.roc import score_against_planted

    model, problem = planted_case(name, n)
    rows = []
    for ablation, scope in PROTOCOLS:
        truth = planted_edges(name, scope)
        for method in methods:
            spec = get_method(method)
            if not spec.ablations:  # ablates nothing: once, with the first protocol
                if ablation != PROTOCOLS[0][0]:
                    continue
            elif not supports(spec, ablation):
                continue
            for label, config in variants(spec, ablation, thresholds):
                scores, seconds, forwards = run_method(spec, model, problem, config)
                auc = score_against_planted(scores, truth)
                raw = score_against_planted(scores, truth, noise=0.0)
                if "batched_forwards" in scores.settings:
                    forwards = f"{forwards} ({scores.settings['batched_forwards']} batched)"
                used = ablation if spec.ablations else "none"
                rows.append((name, used, f"{scope} ({len(truth)})", label, auc, raw, seconds,
                             forwards))  # fmt: skip
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=8, help="prompts per problem")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--methods", nargs="*", default=None, help="default: every method")
    parser.add_argument("--models", nargs="*", default=None, help="default: every planted one")
    parser.add_argument("--acdc-thresholds", nargs="*", type=float, default=[0.01, 1e-4])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    from tests.planted_models import PLANTED_MODELS

    from wildcircuits.discovery import method_names

    methods = args.methods or method_names()
    models = args.models or list(PLANTED_MODELS)
    total = time.perf_counter()
    header = ("model", "ablation", "truth (edges)", "method", "AUC", "raw AUC", "seconds",
              "forwards")  # fmt: skip
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name in models:
        for model, ablation, truth, method, auc, raw, seconds, forwards in rows_for(
            name, methods, args.n, args.acdc_thresholds
        ):
            print(f"| {model} | {ablation} | {truth} | {method} | {auc:.3f} | {raw:.3f} | "
                  f"{seconds:.2f} | {forwards} |", flush=True)  # fmt: skip
    seconds = time.perf_counter() - total
    print(f"\n{len(models)} planted model(s), {len(methods)} methods, n={args.n}, "
          f"{torch.get_num_threads()} thread(s), {seconds:.1f} s in all")  # fmt: skip


if __name__ == "__main__":
    main()
