"""`wildcircuits evaluate FILE --task T --model M --out DIR`: how faithful is a circuit?

FILE is any circuit or score file:
- our edge scores (`scores.pt` from `discover-edges`): the full faithfulness curve (signed and
  absolute top-k), CPR, CMD, log-size area, smallest 80%-faithful circuit, the random-circuit
  baseline and, with `--sensitivity`, the same under the other ablation types;
- a MIB circuit JSON (written by MIB / EAP-IG or by wildcircuits) or a MIB-style PT circuit: the
  faithfulness of its in-graph edges, and the curve as well when the file carries real scores
  (not all equal).
"""

from __future__ import annotations

import argparse
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `evaluate` sub-command."""
    parser = subparsers.add_parser(
        "evaluate",
        help="faithfulness of a circuit or of edge scores (curve, CPR, CMD, baselines)",
        description="Evaluate a circuit file (MIB JSON / PT) or edge scores (.pt) on a task with "
        "exact edge patching; write JSON results and a figure to DIR.",
    )
    parser.add_argument("circuit", help="edge scores (.pt) or circuit file (MIB .json / .pt)")
    parser.add_argument("--task", required=True, help="built-in task name or task file")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model id or path")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--ablation", default="counterfactual",
                        help="counterfactual (default), zero or mean[:clean][:pooled]")  # fmt: skip
    parser.add_argument("--mean-over", choices=["corrupted", "clean"], default=None,
                        help="mean ablation: prompts averaged over (corrupted)")  # fmt: skip
    parser.add_argument("--split", choices=["train", "test", "all"], default="test",
                        help="split to evaluate on (test: held out from train)")  # fmt: skip
    parser.add_argument("--n", type=int, default=16, help="examples (16)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (0)")
    parser.add_argument("--corruption", default=None, help="named corruption (task default)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--random-seeds", type=int, default=3,
                        help="random-circuit baseline: number of seeds (3; 0 = none)")  # fmt: skip
    parser.add_argument("--sensitivity", action="store_true",
                        help="also evaluate with the other two ablation types")  # fmt: skip
    parser.add_argument("--mib-grid-only", action="store_true",
                        help="only MIB's 10 sizes (no small-circuit log grid)")  # fmt: skip
    parser.add_argument("--no-prune", action="store_true", help="do not prune top-k circuits")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run, check=_spec)  # a bad --ablation fails before any work


def run(args: argparse.Namespace) -> int:
    from wildcircuits.graph.graph import Graph

    spec = _spec(args)  # a bad --ablation fails before the model loads
    model, problem = _load_problem(args)
    graph = Graph.for_model(model)
    circuit, scores = _read(Path(args.circuit), graph, model.d_model)
    out = Path(args.out)
    if circuit is not None:
        _evaluate_circuit(model, problem, circuit, spec, args, out)
    if scores is not None:
        _evaluate_scores(model, problem, scores, spec, args, out)
    print(f"wrote {out}")
    return 0


def _load_problem(args: argparse.Namespace):
    from wildcircuits.models import load_model
    from wildcircuits.patching.problem import problem_from_dataset
    from wildcircuits.tasks import Split, load_task

    task = load_task(args.task)
    model = load_model(args.model, device=args.device)
    data = task.build(model.tokenizer, n=args.n, seed=args.seed, split=Split(args.split))
    return model, problem_from_dataset(model, data, corruption=args.corruption)


def _read(path: Path, graph, d_model: int):
    """(circuit or None, scores or None) from any supported file."""
    from wildcircuits.errors import GraphError, NotScoresFileError
    from wildcircuits.graph.circuit import EdgeScores
    from wildcircuits.graph.mib import load_circuit

    if not path.exists():
        raise GraphError(f"circuit file {path} does not exist")
    if path.suffix.lower() == ".pt":
        try:
            return None, EdgeScores.load(path, graph)
        except NotScoresFileError:
            pass  # a readable .pt of another format: try it as a MIB-style PT circuit
    loaded = load_circuit(path, graph, d_model)
    scores = loaded.scores
    if scores is not None and bool((scores.values() == scores.values()[0]).all()):
        scores = None  # every score equal (e.g. a hand-made circuit): no ranking to evaluate
    return loaded.circuit, scores


def _spec(args: argparse.Namespace):
    """The `AblationSpec` of --ablation (and --mean-over for a mean), checked for edges."""
    from dataclasses import replace

    from wildcircuits.patching.ablation_spec import EDGE_ABLATIONS, AblationKind, AblationSpec

    spec = AblationSpec.parse(args.ablation).require(EDGE_ABLATIONS, "evaluate")
    if args.mean_over is not None and spec.kind is AblationKind.MEAN:
        spec = replace(spec, over=args.mean_over)
    return spec


def _evaluate_circuit(model, problem, circuit, spec, args, out: Path) -> None:
    from wildcircuits.evaluation import circuit_faithfulness
    from wildcircuits.results import save_json

    result = circuit_faithfulness(model, problem, circuit, spec, args.batch_size)
    data = {**result.to_dict(), "source": str(args.circuit)}
    save_json(out / "circuit_faithfulness.json", data)
    print(
        f"circuit {circuit.description!r}: {result.n_edges} edges ({result.fraction:.3%}); "
        f"faithfulness {result.faithfulness:.3f} (m={result.metric:.3f}, full "
        f"{result.m_full:.3f}, empty {result.m_empty:.3f}; {spec} ablation, "
        f"n={problem.batch}, split {args.split})"
    )


def _evaluate_scores(model, problem, scores, spec, args, out: Path) -> None:
    from wildcircuits.evaluation import (
        ALL_FRACTIONS,
        MIB_FRACTIONS,
        EvaluationConfig,
        evaluate_scores,
    )
    from wildcircuits.patching.edge_ablation import edge_alternatives

    others = edge_alternatives(spec) if args.sensitivity else []
    config = EvaluationConfig(
        spec=spec,
        fractions=MIB_FRACTIONS if args.mib_grid_only else ALL_FRACTIONS,
        random_seeds=tuple(range(args.random_seeds)),
        sensitivity=tuple(others),
        batch_size=args.batch_size,
        pruned=not args.no_prune,
    )
    report = evaluate_scores(model, problem, scores, config, progress=not args.quiet)
    report.save(out)
    print(f"{scores.method} scores on {args.task} ({problem.batch} examples, split {args.split}):")
    for line in report.lines():
        print(f"  {line}")
