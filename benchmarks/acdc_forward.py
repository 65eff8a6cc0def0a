"""The cost of one ACDC candidate forward on Gemma3-270M IOI, against a plain forward.

ACDC evaluates `copies` candidate circuits per batched forward (32 pairs x 4 copies), resumed at
the receiver's layer with every later receiver already pruned. This times that forward through
the public engine (`EdgeForward.run_from(copies=4)`, rows grouped by padding as ACDC does) at a
few resume layers, with a seeded mask keeping 2% of the edges into every later receiver, and a
plain HF forward of the same 128 rows from the embeddings. Medians of `--repeats` runs, fp32.

Prints one line per layer with `ratio` = edge forward / plain forward, and, from a child process
without `runtime.keep_freed_memory`, `malloc speedup` = untuned / tuned time at the first layer.

    python benchmarks/acdc_forward.py [--layers 2 9 16] [--repeats 3] [--n 32]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from functools import partial

import torch

from wildcircuits.cli.attribute import load_problem
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.runtime import keep_freed_memory

COPIES = 4


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def pruned_mask(engine: EdgeForward, layer: int, keep: float = 0.02) -> torch.Tensor:
    """Edges into receivers at layers after `layer` (and the logits) removed, but 2% (seeded)."""
    graph = engine.graph
    first_later = graph.first_receiver(layer + 1)  # n_layers: the logits row
    generator = torch.Generator().manual_seed(0)
    mask = torch.zeros_like(graph.valid)
    later = torch.rand(mask[first_later:].shape, generator=generator) >= keep
    mask[first_later:] = later
    return mask & graph.valid


def edge_forward(engine, groups, ablations, states, mask, row) -> None:
    """One batched candidate forward per padding group, as ACDC runs it."""
    for part, ablation, state in zip(groups, ablations, states, strict=True):
        extra = torch.zeros(COPIES * part.batch, part.clean.seq_len, engine.model.d_model)
        engine.run_from(state, part.clean, part.positions, ablated=mask, ablation=ablation,
                        extra={row: extra}, copies=COPIES)  # fmt: skip


def plain_forward(model, groups) -> None:
    for part in groups:
        with torch.no_grad():
            model.logits(part.clean.repeat(COPIES), positions=part.positions.repeat(COPIES))


def measure(args) -> dict:
    ns = argparse.Namespace(task="ioi", model=args.model, n=args.n, seed=0, split="train",
                            corruption=None, device=args.device)  # fmt: skip
    model, problem = load_problem(ns)
    engine = EdgeForward(model)
    graph = engine.graph
    groups = [group.problem for group in problem.by_length()]
    ablations = [engine.outputs(part.corrupted) for part in groups]
    results = {}
    for layer in args.layers:
        mask = pruned_mask(engine, layer)
        row = graph.attention_receivers(layer).start  # a q receiver, as ACDC meets them
        states = [engine.state_at(part.clean, layer, mask, ablation)
                  for part, ablation in zip(groups, ablations, strict=True)]  # fmt: skip
        edge = partial(edge_forward, engine, groups, ablations, states, mask, row)
        plain = partial(plain_forward, model, groups)
        results[layer] = (median_time(edge, args.repeats), median_time(plain, args.repeats))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gemma3-270m")
    parser.add_argument("--n", type=int, default=32)
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 9, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:  # untuned malloc: time the first layer only, report as JSON
        print(json.dumps({str(k): v for k, v in measure(args).items()}))
        return
    command = [sys.executable, __file__, "--child", "--model", args.model, "--n", str(args.n),
               "--layers", str(args.layers[0]), "--repeats", str(args.repeats),
               "--device", args.device]  # fmt: skip
    untuned = json.loads(subprocess.run(command, capture_output=True, text=True,
                                        check=True).stdout.strip().splitlines()[-1])  # fmt: skip
    keep_freed_memory()
    results = measure(args)
    print(f"{args.model}, IOI n={args.n}, {COPIES} copies per forward, "
          f"{torch.get_num_threads()} threads")  # fmt: skip
    for layer, (edge, plain) in results.items():
        print(f"resume at layer {layer}: edge forward {edge:.2f} s, plain forward of the same "
              f"rows {plain:.2f} s, ratio: {edge / plain:.2f}")  # fmt: skip
    first = args.layers[0]
    before = untuned[str(first)][0]
    print(f"layer {first} without keep_freed_memory: {before:.2f} s, "
          f"malloc speedup: {before / results[first][0]:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
