"""`wildcircuits discover-edges TASK --method M --model MODEL --out DIR`: score every edge.

Writes DIR/scores.pt (`EdgeScores.save`: (receiver, sender) scores, method, settings,
provenance) and DIR/discovery.json (settings, timing, clean / corrupted metric, top edges,
top nodes, provenance); ACDC also writes its own circuit (the edges it kept) to DIR/circuit.json
(MIB format; `wildcircuits evaluate DIR/circuit.json` measures it). Method settings: `--steps`,
`--riemann`, `--batch-size` where the method has them, `--ablation` (an ablation spec such as
counterfactual, mean, mean:clean or zero, where the method supports it), any other config field with
`--set NAME=VALUE` (repeatable; VALUE parsed as JSON, else a string). `--seed` seeds the
dataset and, for methods with a `seed` setting, the method.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

KNOWN = "eap, eap-ig-inputs, eap-ig-activations, node-attribution, random, acdc"


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `discover-edges` sub-command."""
    parser = subparsers.add_parser(
        "discover-edges",
        help="score every edge of the model's graph with a discovery method",
        description="Score every edge (EAP, EAP-IG, ...) on TASK; write DIR/scores.pt and "
        "DIR/discovery.json.",
    )
    parser.add_argument("task", help="built-in task name, or a .yaml / .jsonl task file")
    parser.add_argument("--method", default="eap-ig-inputs", help=f"one of: {KNOWN}")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model id or path")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n", type=int, default=16, help="examples (16)")
    parser.add_argument("--seed", type=int, default=0, help="dataset (and method) seed (0)")
    parser.add_argument("--split", choices=["train", "test", "all"], default="train",
                        help="dataset split (train; evaluate on test)")  # fmt: skip
    parser.add_argument("--corruption", default=None, help="named corruption (task default)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu)")
    parser.add_argument("--steps", type=int, default=None, help="EAP-IG steps m (5)")
    parser.add_argument("--riemann", choices=["left", "right"], default=None,
                        help="EAP-IG sum: left k=0..m-1 (default) or right k=1..m")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=None, help="rows per chunk (16)")
    parser.add_argument("--ablation", default=None,
                        help="what an ablated edge carries: counterfactual (default), "
                        "mean[:clean][:pooled] or zero, where the method supports it")  # fmt: skip
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="any other method setting, e.g. --set threshold=0.01")  # fmt: skip
    parser.add_argument("--top", type=int, default=20, help="edges to print and save (20)")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run, check=config_from_args)


def method_settings(args: argparse.Namespace, fields: set[str]) -> dict[str, Any]:
    """The method config's settings from the options; an option the method lacks raises."""
    from wildcircuits.discovery.registry import DiscoveryError

    settings: dict[str, Any] = {}
    for item in args.set:
        name, sep, text = item.partition("=")
        if not sep:
            raise DiscoveryError(f"--set {item!r}: expected NAME=VALUE")
        try:
            settings[name.strip()] = json.loads(text)
        except json.JSONDecodeError:
            settings[name.strip()] = text
    if args.ablation is not None:  # checked by the method's config, which names its choices
        settings["ablation"] = args.ablation
    explicit = {"steps": args.steps, "riemann": args.riemann, "batch_size": args.batch_size}
    for name, value in explicit.items():
        if value is None:
            continue
        if name not in fields:
            raise DiscoveryError(f"method {args.method!r} has no {name} setting")
        settings[name] = value
    if "seed" in fields:
        settings.setdefault("seed", args.seed)
    if "progress" in fields:
        settings.setdefault("progress", not args.quiet)
    return settings


def config_from_args(args: argparse.Namespace):
    """(method spec, its config) from the options, every setting type-checked (before any work)."""
    import dataclasses

    from wildcircuits.discovery.registry import get_method

    spec = get_method(args.method)  # unknown names fail before the model loads
    fields = {f.name for f in dataclasses.fields(spec.config_type)}
    return spec, spec.config(method_settings(args, fields))


def run(args: argparse.Namespace) -> int:
    from wildcircuits.cli.attribute import load_problem

    spec, config = config_from_args(args)
    model, problem = load_problem(args)
    print(f"{args.method}: {problem.batch} examples, model {model.info.model_id}", file=sys.stderr)
    start = time.perf_counter()
    scores = spec(model, problem, config)
    seconds = time.perf_counter() - start
    out = Path(args.out)
    scores.save(out / "scores.pt")
    summary = _summary(model, problem, scores, seconds, args.top)
    from wildcircuits.results import save_json

    if args.method == "acdc":
        summary["acdc_circuit"] = _save_acdc_circuit(model, scores, config.threshold, out)
    save_json(out / "discovery.json", summary)
    _print(summary, out)
    return 0


def _save_acdc_circuit(model, scores, tau: float, out: Path) -> dict[str, Any]:
    """ACDC's own result: the edges it kept (score >= tau), as MIB JSON for `evaluate`."""
    from wildcircuits.graph.build import threshold
    from wildcircuits.graph.mib import save_mib_json

    circuit = threshold(scores, tau, ranking="signed", prune_result=False)
    path = save_mib_json(out / "circuit.json", circuit, scores, d_model=model.d_model)
    return {"file": path.name, "n_edges": circuit.n_edges, "rule": f"score >= tau = {tau:g}"}


def _summary(model, problem, scores, seconds: float, top: int) -> dict[str, Any]:
    clean = problem.score(model.logits(problem.clean, positions=problem.positions)).mean()
    corrupted = problem.score(model.logits(problem.corrupted, positions=problem.positions)).mean()
    nodes = _node_totals(scores)  # (sender,)
    order = nodes.abs().argsort(descending=True)[:top].tolist()
    return {
        "method": scores.method,
        "settings": dict(scores.settings),
        "n_edges": scores.graph.n_edges,
        "n_examples": problem.batch,
        "seconds": round(seconds, 3),
        "metric": {"clean": float(clean), "corrupted": float(corrupted)},
        "top_edges": [{"edge": e, "score": s} for e, s in scores.top(top)],
        "top_nodes": [
            {"node": scores.graph.senders[i].name, "score": float(nodes[i])} for i in order
        ],
        "node_score": "the node's own score"
        if scores.method == "node-attribution"
        else "sum of the node's outgoing edge scores",
        "provenance": {**dict(scores.provenance), "package_version": _version()},
    }


def _node_totals(scores):
    """One value per sender: node-attribution's node score (every sender feeds the logits
    receiver, whose row holds it), else the sum of the sender's outgoing edge scores."""
    if scores.method == "node-attribution":
        return scores.scores[scores.graph.logits_receiver]
    return scores.scores.sum(0)


def _print(summary: dict[str, Any], out: Path) -> None:
    metric = summary["metric"]
    print(
        f"{summary['method']} over {summary['n_edges']} edges, n={summary['n_examples']}, "
        f"{summary['seconds']:.1f} s; metric clean {metric['clean']:.3f}, "
        f"corrupted {metric['corrupted']:.3f}"
    )
    print("top edges (score ~ loss increase when the edge is corrupted):")
    for row in summary["top_edges"]:
        print(f"  {row['edge']:<28} {row['score']:+.5f}")
    print(f"top nodes ({summary['node_score']}):")
    for row in summary["top_nodes"][:10]:
        print(f"  {row['node']:<28} {row['score']:+.5f}")
    if "acdc_circuit" in summary:
        kept = summary["acdc_circuit"]
        print(f"ACDC circuit ({kept['rule']}): {kept['n_edges']} edges -> {out / kept['file']}")
    print(f"wrote {out / 'scores.pt'} and {out / 'discovery.json'}")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wildcircuits")
    except PackageNotFoundError:
        return "unknown"
