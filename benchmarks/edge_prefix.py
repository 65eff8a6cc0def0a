"""Edge-circuit evaluation, head patching and EAP-IG with and without the shared clean prefix,
per task, in one run.

    python benchmarks/edge_prefix.py [--model smollm2-135m-instruct] [--tasks a,b] [--n 16]
        [--circuits 4] [--what evaluate,patching,eap-ig]

For each task: the share of tokens every clean and corrupted prompt of the batch agree on (the
prefix length over the padded length); then per measured call the seconds with every column
and with the prefix, their ratio, and the largest difference of the results (float rounding
only): `evaluate_circuits` on the same random circuits (counterfactual ablation),
`activation_patching` of every head (denoising), and EAP-IG-inputs edge scores (5 steps).
"""

from __future__ import annotations

import argparse
import time

import torch

from wildcircuits.evaluation.faithfulness import evaluate_circuits
from wildcircuits.graph.circuit import Circuit
from wildcircuits.models import load_model
from wildcircuits.patching.edge_prefix import shared_length
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.patching.problem import problem_from_dataset
from wildcircuits.tasks import Split, load_task

TASKS = "colored_objects,entity_tracking,greater_than,multiple_choice,a_an,ioi"


def timed(model, problem, circuits, engine, share: bool) -> tuple[float, list[float]]:
    start = time.perf_counter()
    result = evaluate_circuits(
        model, problem, circuits, "counterfactual", engine=engine, share_prefix=share
    )
    return time.perf_counter() - start, list(result.metric)


def patching(model, problem, share: bool) -> tuple[float, list[float]]:
    from wildcircuits.patching.activation import activation_patching

    start = time.perf_counter()
    result = activation_patching(model, problem, "heads", progress=False, share_prefix=share)
    return time.perf_counter() - start, result.metric.values.flatten().tolist()


def eap_ig(model, problem, share: bool) -> tuple[float, list[float]]:
    from wildcircuits.discovery import eap_ig as module

    real = module.counterfactual_prefix
    if not share:
        module.counterfactual_prefix = lambda *args, **kwargs: None
    try:
        start = time.perf_counter()
        scores = module.eap_ig_inputs(model, problem, module.EAPIGConfig()).scores
        return time.perf_counter() - start, scores.flatten().tolist()
    finally:
        module.counterfactual_prefix = real


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--tasks", default=TASKS)
    parser.add_argument("--n", type=int, default=16)
    parser.add_argument("--circuits", type=int, default=4)
    parser.add_argument("--what", default="evaluate,patching,eap-ig")
    args = parser.parse_args()
    model = load_model(args.model)
    engine = EdgeForward(model)
    graph = engine.graph
    generator = torch.Generator().manual_seed(0)
    circuits = [
        Circuit(graph, (torch.rand(graph.valid.shape, generator=generator) < p) & graph.valid)
        for p in torch.linspace(0.05, 0.5, args.circuits).tolist()
    ]
    calls = {
        "evaluate": lambda problem, share: timed(model, problem, circuits, engine, share),
        "patching": lambda problem, share: patching(model, problem, share),
        "eap-ig": lambda problem, share: eap_ig(model, problem, share),
    }
    print(f"{args.model}, {args.n} prompts; evaluate: {len(circuits)} circuits + full, empty")
    print(f"{'task':24s} {'shared':>6s} {'call':>9s} {'every column s':>14s} {'prefix s':>9s} "
          f"{'ratio':>6s} {'max diff':>9s}")  # fmt: skip
    for task in args.tasks.split(","):
        dataset = load_task(task).build(model.tokenizer, args.n, seed=0, split=Split("test"))
        problem = problem_from_dataset(model, dataset)
        length = shared_length(
            problem.clean, problem.corrupted, problem.positions, problem.position_mask
        )
        share = length / problem.clean.seq_len
        for what in args.what.split(","):
            slow, a = calls[what](problem, False)
            fast, b = calls[what](problem, True)
            diff = max(abs(x - y) for x, y in zip(a, b, strict=True) if x == x)  # not NaN
            print(f"{task:24s} {share:6.2f} {what:>9s} {slow:14.2f} {fast:9.2f} "
                  f"{slow / fast:5.2f}x {diff:9.1e}")  # fmt: skip


if __name__ == "__main__":
    main()
