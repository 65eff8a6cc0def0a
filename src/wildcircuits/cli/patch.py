"""`wildcircuits patch TASK --kind heads --direction denoise --out DIR`: activation patching.

Writes DIR/patch_<kind>_<direction>.json (normalised effect, 1 = full effect) and
DIR/patch_<kind>_<direction>_metric.json (raw patched metric), each with a PNG + HTML heatmap,
and prints the top entries.
"""

from __future__ import annotations

import argparse

KINDS = ["resid", "attn_out", "mlp_out", "heads", "heads_by_pos", "q", "k", "v", "pattern"]


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `patch` sub-command."""
    parser = subparsers.add_parser(
        "patch",
        help="activation patching: effect of each layer / position / head on a task",
        description=(
            "Patch activations between the clean and corrupted prompts of TASK, one site at a "
            "time, and write the normalised effect (denoise: (m_patched - m_corr) / (m_clean - "
            "m_corr); noise: (m_clean - m_patched) / (m_clean - m_corr); 1 = full effect, from "
            "batch means) as JSON + heatmaps."
        ),
    )
    parser.add_argument("task", nargs="?", help="built-in task name, or a .yaml / .jsonl file")
    parser.add_argument("--task-file", help="a user task file (.yaml / .jsonl) instead of TASK")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model id or path")
    parser.add_argument("--kind", choices=KINDS, default="heads", help="what to patch (heads)")
    parser.add_argument("--direction", choices=["denoise", "noise"], default="denoise")
    parser.add_argument(
        "--positions",
        choices=["auto", "absolute", "named", "all"],
        default="auto",
        help="position columns for resid / attn_out / mlp_out / heads_by_pos (auto)",
    )
    parser.add_argument("--corruption", help="named corruption (default: the task's)")
    parser.add_argument("--split", choices=["train", "test", "all"], default="all")
    parser.add_argument("--n", type=int, default=16, help="number of examples (16)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (0)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu)")
    parser.add_argument("--max-rows", type=int, default=320, help="rows per batched forward")
    parser.add_argument("--top", type=int, default=10, help="entries to print (10)")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wildcircuits.errors import TaskError
    from wildcircuits.models import load_model
    from wildcircuits.patching.activation import activation_patching
    from wildcircuits.patching.problem import problem_from_dataset
    from wildcircuits.tasks import Split, load_task

    if (args.task is None) == (args.task_file is None):
        raise TaskError("give exactly one of TASK or --task-file")
    if args.n < 1:
        raise TaskError(f"--n must be at least 1, got {args.n}")
    task = load_task(args.task_file or args.task)
    model = load_model(args.model, device=args.device)
    dataset = task.build(model.tokenizer, n=args.n, seed=args.seed, split=Split(args.split))
    problem = problem_from_dataset(model, dataset, corruption=args.corruption)
    result = activation_patching(
        model, problem, kind=args.kind, direction=args.direction, positions=args.positions,
        max_rows=args.max_rows, progress=not args.quiet,
    )  # fmt: skip
    result.save(args.out)
    _print_summary(result, args)
    return 0


def _print_summary(result, args: argparse.Namespace) -> None:
    effect = result.effect
    provenance = effect.provenance
    print(
        f"{provenance.get('task', '?')} on {provenance.get('model')}: clean "
        f"{provenance.get('metric')} {result.clean_metric:.3f}, corrupted "
        f"{result.corrupted_metric:.3f} (n={provenance['n']}); {args.direction} {args.kind}, "
        f"effect = {provenance['normalisation']}"
    )
    print(f"top {args.top} by |effect|:")
    for row, column, value in effect.top(args.top):
        print(f"  {_entry_name(row, column, effect.col_axis):<28} {value:+.3f}")
    print(f"wrote {args.out}/{effect.name}.json (+ _metric.json, heatmaps)")


def _entry_name(row: str, column: str, col_axis: str) -> str:
    """L12.H3 for head grids, else `row @ column`."""
    if col_axis in ("head", "kv_head"):
        return f"{row}.{column}"
    return f"{row} @ {column}"
