"""Time the explain step on SmolLM2 IOI and count its forward passes against the naive plan.

Runs `wildcircuits.explanation.run.explain` once (search on the train split, held out on test) and
measures, per stage (compact circuit, classes, backup, class paths), the wall time and the
forward passes actually run: every layer's MLP module counts the rows it processes (every
engine, the edge engine included, runs the model's own MLP modules), and rows / (layers x
prompts) is the number of full-model, full-batch forwards (partial forwards count by the layers
they run; backward passes are not counted). Next to them:
the naive counts the stages report themselves, in the same run: `PositionCircuit.naive_forwards`
(one forward per candidate pair at each search step) and `class_paths.forward_counts` (one
path-patching run per class pair: its two cached runs and one or two patched runs). Classes and
backup have no cheaper plan claimed; they enter the totals at their measured count on both sides.

    python benchmarks/explain.py [--model smollm2-135m-instruct] [--task ioi] [--n 16]
        [--run RUN_DIR]   (candidates: that run's circuit.json nodes, as the pipeline step)
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass, field

import wildcircuits as wc
from wildcircuits.models.counting import ForwardCount, attach_counter

STAGES = {
    "circuit": ("wildcircuits.explanation.position_search", "find_position_circuit"),
    "classes": ("wildcircuits.explanation.classes", "classify"),
    "backup": ("wildcircuits.explanation.backup", "find_backup"),
    "paths": ("wildcircuits.explanation.class_paths", "class_paths"),
}


@dataclass
class Counter:
    """Rows through every layer's MLP module (`models.counting`), and per-stage tallies."""

    count: ForwardCount
    stages: dict[str, tuple[float, int]] = field(default_factory=dict)

    @property
    def rows(self) -> int:
        return self.count.rows


def wrap_stages(counter: Counter) -> None:
    """Replace each stage function by one that records (seconds, rows) around the real call;
    `explain` imports the stages when it runs, so it calls the wrappers."""
    for stage, (module_name, name) in STAGES.items():
        module = sys.modules.get(module_name) or __import__(module_name, fromlist=[name])
        real = getattr(module, name)

        def timed(*args, _real=real, _stage=stage, **kwargs):
            start, rows = time.perf_counter(), counter.rows
            value = _real(*args, **kwargs)
            counter.stages[_stage] = (time.perf_counter() - start, counter.rows - rows)
            return value

        setattr(module, name, timed)


def run_nodes(run_dir: str) -> list[str]:
    """The heads and MLPs of a run folder's circuit.json (the pipeline step's candidates)."""
    from wildcircuits.names import NodeKind, parse_node
    from wildcircuits.results.circuits import CircuitFile

    circuit = CircuitFile.load(f"{run_dir}/circuit.json")
    nodes = [parse_node(n) for n in circuit.in_graph("nodes")]
    return [n.display for n in nodes if n.kind in (NodeKind.HEAD, NodeKind.MLP)]


def planned_paths(model, heldout, classes) -> dict[str, int]:
    """class_paths' own count of its forwards and of the naive plan's (same jobs)."""
    from wildcircuits.explanation.class_paths import forward_counts, path_jobs

    return forward_counts(path_jobs(model, heldout, classes), heldout.batch)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--task", default="ioi")
    parser.add_argument("--n", type=int, default=16, help="prompts per split")
    parser.add_argument("--run", default=None, help="restrict candidates to RUN_DIR's circuit")
    args = parser.parse_args()
    from wildcircuits.explanation.run import explain

    model = wc.load_model(args.model)
    task = wc.load_task(args.task)
    search = task.problem(model, n=args.n, split="train")
    heldout = task.problem(model, n=args.n, split="test")
    nodes = run_nodes(args.run) if args.run else None
    counter = Counter(ForwardCount(model.n_layers))
    attach_counter(model, counter.count)
    wrap_stages(counter)
    start = time.perf_counter()
    result = explain(model, search, heldout, nodes=nodes, progress=False)
    total = time.perf_counter() - start
    planned = planned_paths(model, heldout, result.classes)
    report(args, model, result, counter, planned, total, len(nodes) if nodes else None)
    print(check_hypothesis(model, heldout, result, args))


def position_names(problem) -> tuple[str, ...]:
    from wildcircuits.explanation.positions import position_index

    return tuple(position_index(problem)[0])


def check_hypothesis(model, heldout, result, args) -> str:
    """Draft hypothesis.yaml from the result, write it and load it back through every check."""
    import tempfile
    from pathlib import Path

    from wildcircuits.explanation.hypothesis import (
        hypothesis_from_explanation,
        load_hypothesis,
        write_hypothesis,
    )
    from wildcircuits.names import Shape

    positions = position_names(heldout)
    draft = hypothesis_from_explanation(result, args.task, args.model)
    with tempfile.TemporaryDirectory() as folder:
        path = write_hypothesis(Path(folder) / "hypothesis.yaml", draft, positions)
        loaded = load_hypothesis(path, Shape(model.n_layers, model.n_heads), positions)
    assert loaded == draft
    return (
        f"hypothesis.yaml: {len(draft.classes)} classes, {len(draft.paths)} claimed paths "
        f"(|effect| >= 0.05), {len(draft.unexplained)} unexplained pairs; reads back equal"
    )


def report(args, model, result, counter: Counter, planned, total: float, n_nodes) -> None:
    per_forward = model.n_layers * args.n
    measured = {s: rows / per_forward for s, (_, rows) in counter.stages.items()}
    naive = dict(measured)
    naive["circuit"] = float(result.circuit.naive_forwards)
    naive["paths"] = float(planned["naive_forwards"])
    print(
        f"explain on {args.model} / {args.task}: {args.n} search + {args.n} held-out prompts, "
        f"candidates {'all heads and MLPs' if n_nodes is None else f'{n_nodes} circuit nodes'}"
    )
    print(f"  {'stage':<8} {'seconds':>8} {'passes':>9} {'naive':>9} {'ratio':>7}")
    for stage in STAGES:
        seconds, _ = counter.stages.get(stage, (0.0, 0))
        ours, theirs = measured.get(stage, 0.0), naive.get(stage, 0.0)
        ratio = f"{theirs / ours:6.1f}x" if ours else "    n/a"
        print(f"  {stage:<8} {seconds:8.1f} {ours:9.1f} {theirs:9.0f} {ratio}")
    ours, theirs = sum(measured.values()), sum(naive.values())
    print(f"  {'total':<8} {total:8.1f} {ours:9.1f} {theirs:9.0f} {theirs / max(ours, 1e-9):6.1f}x")
    print(
        f"  (the stages' own counts: search {result.circuit.forwards} forwards vs "
        f"{result.circuit.naive_forwards} naive; class paths {planned['forwards']} vs "
        f"{planned['naive_forwards']} over {planned['arrows']} arrows)"
    )
    c = result.circuit
    faithful = ", ".join(f"{f.ablation} {f.faithfulness:.2f}" for f in c.faithfulness)
    print(
        f"compact circuit: {len(c.pairs)} pairs, {c.n_heads} heads, {c.n_mlps} MLPs; held-out "
        f"faithfulness {faithful}; {len(result.classes)} classes, {len(result.paths)} paths"
    )


if __name__ == "__main__":
    main()
