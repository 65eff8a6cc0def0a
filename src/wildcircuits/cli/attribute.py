"""`wildcircuits attribute TASK --method dla|logit-lens|atp --model M --out DIR`.

dla: direct logit attribution of the logit difference per layer (attn / mlp) and per head.
logit-lens: metric, answer rank and probability read from every layer's residual stream.
atp: attribution patching (gradient estimate of activation patching) of heads, MLPs or the
residual stream (`--target`, `--direction`).
"""

from __future__ import annotations

import argparse
import sys

METHODS = ("dla", "logit-lens", "atp")


def add_problem_options(parser: argparse.ArgumentParser) -> None:
    """TASK and the options every localisation command shares."""
    parser.add_argument("task", help="built-in task name, or a .yaml / .jsonl task file")
    parser.add_argument("--model", default="smollm2-135m-instruct", help="model id or path")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--n", type=int, default=16, help="examples (16)")
    parser.add_argument("--seed", type=int, default=0, help="dataset seed (0)")
    parser.add_argument("--split", choices=["train", "test", "all"], default="all")
    parser.add_argument("--corruption", default=None, help="named corruption (task default)")
    parser.add_argument("--device", default="cpu", help="torch device (cpu)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def load_problem(args: argparse.Namespace):
    """(model, problem) from the parsed options."""
    from wildcircuits.models import load_model
    from wildcircuits.patching.problem import problem_from_dataset
    from wildcircuits.tasks import Split, load_task

    task = load_task(args.task)
    model = load_model(args.model, device=args.device)
    data = task.build(model.tokenizer, n=args.n, seed=args.seed, split=Split(args.split))
    return model, problem_from_dataset(model, data, corruption=args.corruption)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `attribute` sub-command."""
    parser = subparsers.add_parser(
        "attribute",
        help="direct logit attribution, logit lens or attribution patching on a task",
        description="Localise TASK's behaviour with one method; write JSON results and figures "
        "(PNG + HTML) to DIR.",
    )
    add_problem_options(parser)
    parser.add_argument("--method", choices=METHODS, required=True)
    parser.add_argument("--target", choices=["heads", "mlp", "resid"], default="heads",
                        help="atp only: what to score (heads)")  # fmt: skip
    parser.add_argument("--direction", choices=["denoise", "noise"], default="denoise",
                        help="atp only: denoise = clean into corrupted (default)")  # fmt: skip
    parser.add_argument("--top", type=int, default=10, help="components to print (10)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    model, problem = load_problem(args)
    if args.method == "dla":
        return _dla(model, problem, args)
    if args.method == "logit-lens":
        return _lens(model, problem, args)
    return _atp(model, problem, args)


def _dla(model, problem, args) -> int:
    from wildcircuits.localise import direct_logit_attribution

    result = direct_logit_attribution(model, problem, args.batch_size, progress=not args.quiet)
    result.save(args.out)
    summary = result.summary()
    print(
        f"logit diff {summary['total_logit_diff']:.3f} (n={problem.batch}); parts sum "
        f"{summary['parts_sum']:.3f}, max error {summary['max_abs_sum_error']:.1e}; "
        f"embed {summary['embed']:.3f}"
    )
    print("top heads by DLA:")
    for name, value in result.top_components(args.top, heads=True):
        print(f"  {name:<9} {value:+.3f}")
    print("top layer components:")
    for name, value in result.top_components(args.top, heads=False):
        print(f"  {name:<9} {value:+.3f}")
    print(f"wrote {args.out}")
    return 0


def _lens(model, problem, args) -> int:
    from wildcircuits.localise import logit_lens

    lens = logit_lens(model, problem, args.batch_size, progress=not args.quiet)
    lens.save(args.out)
    grid = lens.grid()
    print(f"{'stage':<16} {problem.metric.value:>12} {'rank':>8} {'prob':>8}")
    for label, row in zip(grid.row_labels, grid.values.tolist(), strict=True):
        print(f"{label:<16} {row[0]:>12.3f} {row[1]:>8.1f} {row[2]:>8.3f}")
    print(f"wrote {args.out}")
    return 0


def _atp(model, problem, args) -> int:
    from wildcircuits.errors import WildcircuitsError

    try:
        from wildcircuits.patching.attribution import attribution_patch
    except ImportError as error:
        raise WildcircuitsError(
            "attribution patching (wildcircuits.patching.attribution.attribution_patch) is not "
            f"available in this installation ({error}); use --method dla or --method logit-lens"
        ) from error
    grid = attribution_patch(
        model, problem, args.target, args.direction, batch_size=args.batch_size,
        progress=not args.quiet,
    )  # fmt: skip
    grid.save(args.out)
    print(f"{grid.title} (n={problem.batch}):", file=sys.stdout)
    for row, col, value in grid.top(args.top):
        print(f"  {row} {col:<12} {value:+.4f}")
    print(f"wrote {args.out}")
    return 0
