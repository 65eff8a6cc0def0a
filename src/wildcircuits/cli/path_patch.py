"""`wildcircuits path-patch TASK --receivers logits|L14.H3:q,L9.mlp,... --out DIR`.

Path patching (Wang et al. convention, see `wildcircuits.patching.path`) of every head, alone, as
the sender into the receivers: a layer x head heatmap (PNG + HTML) and JSON in DIR.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `path-patch` sub-command."""
    from wildcircuits.cli.attribute import add_problem_options

    parser = subparsers.add_parser(
        "path-patch",
        help="path patching: every head -> the logits or chosen heads' q / k / v / MLP inputs",
        description="Path-patch each head of the model (corrupted output, other heads frozen) "
        "into the receivers; write a layer x head grid as JSON and a heatmap to DIR.",
    )
    add_problem_options(parser)
    parser.add_argument(
        "--receivers",
        default="logits",
        help="'logits', or e.g. L14.H3:q,L14.H1:k,L9.mlp (k, v: KV heads)",
    )
    parser.add_argument("--max-rows", type=int, default=128,
                        help="rows per batched forward (sender sets x examples; 128)")  # fmt: skip
    parser.add_argument("--top", type=int, default=10, help="heads to print (10)")
    parser.set_defaults(func=run, check=_receivers)


def _receivers(args: argparse.Namespace, model=None) -> list:
    """--receivers parsed (and, given the model, checked against its layers and heads)."""
    from wildcircuits.errors import InputError, WildcircuitsError
    from wildcircuits.names import Shape, parse_display_receiver, split_names

    shape = None if model is None else Shape(model.n_layers, model.n_heads, model.n_kv_heads)
    names = split_names(args.receivers)
    if not names:
        raise InputError("--receivers '' names no receiver; give 'logits' or e.g. L14.H3:q")
    try:
        return [parse_display_receiver(name, shape) for name in names]
    except WildcircuitsError as error:
        raise type(error)(f"--receivers {args.receivers!r}: {error}") from None


def run(args: argparse.Namespace) -> int:
    from wildcircuits.cli.attribute import load_problem
    from wildcircuits.patching.path import path_patch_heads

    model, problem = load_problem(args)
    receivers = _receivers(args, model)
    grid = path_patch_heads(
        model, problem, receivers, max_rows=args.max_rows, progress=not args.quiet
    )
    path = grid.save(args.out)
    provenance = grid.provenance
    print(
        f"{grid.title} (n={problem.batch}; clean {provenance['clean_metric']:.3f}, "
        f"corrupted {provenance['corrupted_metric']:.3f}; score 1 = whole difference):"
    )
    for row, col, value in grid.top(args.top):
        print(f"  {row}.{col:<4} {value:+.3f}")
    print(f"wrote {path}")
    return 0
