"""Throughput of one 2-thread worker against two 1-thread workers on the catalogue's work.

    python benchmarks/cell_threads.py [--model smollm2-135m-instruct] [--task ioi] [--reps 8]

A catalogue cell's forwards are small (16 prompts of 6 to 57 tokens), where torch's intra-op
threads scale poorly; whole cells, on the other hand, are independent. This measures, in one
run, the seconds per unit of work (an edge-engine forward with half the (node, position) pairs
ablated plus a forward-backward for receiver gradients, as the methods do) for: one process with 2
threads; one process with 1 thread; two 1-thread processes at once. It prints the throughput
ratio of the last against the first: above 1, cells run faster as parallel 1-thread workers
(`--executor ray`, one CPU per cell) than one after another.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time


def work(model_name: str, task: str, reps: int, threads: int) -> float:
    """Seconds per unit of work in this process with `threads` torch threads."""
    import torch

    torch.set_num_threads(threads)
    from wildcircuits.models import load_model
    from wildcircuits.patching.edges import EdgeForward
    from wildcircuits.patching.problem import problem_from_dataset
    from wildcircuits.tasks import Split, load_task

    model = load_model(model_name)
    dataset = load_task(task).build(model.tokenizer, 16, seed=0, split=Split("train"))
    problem = problem_from_dataset(model, dataset)
    engine = EdgeForward(model)
    ablation = engine.outputs(problem.corrupted)
    shape = (problem.batch, problem.clean.seq_len, engine.graph.n_senders)
    nodes = torch.rand(shape, generator=torch.Generator().manual_seed(0)) < 0.5

    def unit() -> None:
        engine.run(problem.clean, problem.positions, ablation=ablation, node_ablated=nodes)
        engine.receiver_gradients(problem.clean, problem.positions, lambda logits: logits.sum())

    unit()  # warm-up
    start = time.perf_counter()
    for _ in range(reps):
        unit()
    return (time.perf_counter() - start) / reps


def child(args: argparse.Namespace, threads: int) -> subprocess.Popen:
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); from cell_threads import work; "
        f"print(json.dumps(work({args.model!r}, {args.task!r}, {args.reps}, {threads})))"
    )
    return subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)


def seconds(process: subprocess.Popen) -> float:
    out, _ = process.communicate()
    if process.returncode:
        raise SystemExit(f"a worker failed (exit {process.returncode})")
    return float(json.loads(out.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--task", default="ioi")
    parser.add_argument("--reps", type=int, default=8)
    args = parser.parse_args()
    two = seconds(child(args, 2))
    one = seconds(child(args, 1))
    pair = [child(args, 1), child(args, 1)]
    both = [seconds(p) for p in pair]
    print(f"{args.model}, {args.task}: seconds per unit of work")
    print(f"  one worker, 2 threads : {two:.3f}")
    print(f"  one worker, 1 thread  : {one:.3f}")
    print(f"  two 1-thread workers  : {both[0]:.3f}, {both[1]:.3f} (at once)")
    ratio = two / (max(both) / 2)
    print(f"throughput of two 1-thread workers / one 2-thread worker: {ratio:.2f}x")


if __name__ == "__main__":
    main()
