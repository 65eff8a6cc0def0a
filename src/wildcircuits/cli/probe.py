"""`wildcircuits probe TASK --model M --out DIR`: the black-box behaviour probe."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `probe` sub-command."""
    parser = subparsers.add_parser(
        "probe",
        help="probe a behaviour on a model (baseline, corruptions, variations)",
        description="Run TASK's clean prompts, every corruption and every variation on a model; "
        "write DIR/behaviour.json and DIR/behaviour.png.",
    )
    parser.add_argument("task", help="built-in task name, or a .yaml / .jsonl task file")
    parser.add_argument("--model", required=True, help="built-in model id, hub id or path")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n", type=int, default=32, help="examples per distribution (32)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (0)")
    parser.add_argument("--split", choices=["train", "test", "all"], default="all")
    parser.add_argument("--device", default="cpu", help="torch device (cpu)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wildcircuits.models import load_model
    from wildcircuits.tasks import Split, load_task
    from wildcircuits.tasks.probe import run_probe
    from wildcircuits.tasks.probe_output import write_probe

    task = load_task(args.task)
    model = load_model(args.model, device=args.device)
    result = run_probe(
        model, task, n=args.n, seed=args.seed, split=Split(args.split),
        batch_size=args.batch_size, progress=not args.quiet,
    )  # fmt: skip
    json_path, png_path = write_probe(result, args.out)
    clean = result.clean
    print(
        f"{result.task} on {result.provenance['model_id']}: clean {result.metric} "
        f"{clean.mean:.3f} +- {clean.std:.3f}, accuracy {clean.accuracy:.2f} (n={result.n})"
    )
    for reason, count in (result.build or {}).get("dropped_examples", {}).items():
        print(f"  dataset: dropped {count} candidate examples: {reason}")
    for name, stats in result.corrupted.items():
        print(f"  {name}: {result.metric} {stats.mean:.3f}, accuracy {stats.accuracy:.2f}")
    for v in result.variations:
        print(f"  {v.name}: {v.mean:.3f}, accuracy {v.accuracy:.2f} -> {v.verdict.value}")
    print(f"wrote {json_path} and {png_path}")
    return 0
