"""Build and prune circuits on SmolLM2-135M's edge graph (Graph(30, 9): 123,211 edges).

Random N(0, 1) scores (seed 0). For top 1% / 10% / 100% of edges: top-n (absolute, then pruned),
greedy-from-logits (absolute, then pruned), and `prune` alone on the unpruned top-n set; plus MIB
JSON / PT export and import at 10%. Prints the median and minimum over `--rounds` runs, in ms.
Single-threaded torch by default: on a shared 2-core machine extra threads only add contention.

    python benchmarks/build_circuits.py [--rounds 7] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from wildcircuits.graph.build import greedy, prune, top_n
from wildcircuits.graph.circuit import EdgeScores
from wildcircuits.graph.graph import Graph
from wildcircuits.graph.mib import load_circuit_pt, load_mib_json, save_circuit_pt, save_mib_json


def _time(function: Callable[[], object], rounds: int) -> tuple[float, float, object]:
    times, result = [], None
    for _ in range(rounds):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3, min(times) * 1e3, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    graph = Graph(30, 9)
    generator = torch.Generator().manual_seed(0)
    scores = EdgeScores(graph, torch.randn(graph.valid.shape, generator=generator), "random")
    _ = graph.edges  # names are built once per graph; not part of any timing below
    print(f"graph: {graph.describe()}, {graph.n_edges} edges; threads {args.threads}")
    for fraction in (0.01, 0.1, 1.0):
        unpruned = top_n(scores, fraction, prune_result=False)
        cases = {
            "top-n + prune": lambda f=fraction: top_n(scores, f),
            "greedy + prune": lambda f=fraction: greedy(scores, f),
            "prune only": lambda c=unpruned: prune(c),
        }
        for name, function in cases.items():
            median, best, circuit = _time(function, args.rounds)
            print(
                f"{fraction:>5.0%} {name:<15} {circuit.n_edges:>7} edges kept  "
                f"median {median:7.1f} ms  min {best:7.1f} ms"
            )
    circuit = top_n(scores, 0.1)
    with tempfile.TemporaryDirectory() as folder:
        json_path, pt_path = Path(folder) / "c.json", Path(folder) / "c.pt"
        for name, function in {
            "save MIB JSON": lambda: save_mib_json(json_path, circuit, scores, 576),
            "load MIB JSON": lambda: load_mib_json(json_path, graph, 576),
            "save PT": lambda: save_circuit_pt(pt_path, circuit, scores, 576),
            "load PT": lambda: load_circuit_pt(pt_path, graph, 576),
        }.items():
            median, best, _ = _time(function, max(1, args.rounds // 2))
            print(f"  10% {name:<15} median {median:7.1f} ms  min {best:7.1f} ms")


if __name__ == "__main__":
    main()
