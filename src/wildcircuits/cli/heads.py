"""`wildcircuits heads TASK --model M --out DIR [--patterns L12.H3,L14.H0 --prompt-index 0]`.

Scores every head for each role (previous-token, induction, duplicate-token, OV copying / copy
suppression, name-mover-like), prints the highlights, writes DIR/head_roles.json, a layer x head
heatmap per role, and attention-pattern figures (the chosen heads, or the top head of each role).
"""

from __future__ import annotations

import argparse

from wildcircuits.cli.attribute import add_problem_options


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `heads` sub-command."""
    parser = subparsers.add_parser(
        "heads",
        help="score every head's role (induction, previous-token, name mover, ...)",
        description="Score every head of the model for each role on TASK and on random repeated "
        "token sequences; write the labelled table, role heatmaps and attention patterns to DIR.",
    )
    add_problem_options(parser)
    parser.add_argument(
        "--patterns",
        default=None,
        help="heads to draw, e.g. L12.H3,L14.H0 (default: top head per role)",
    )
    parser.add_argument(
        "--prompt-index",
        type=int,
        default=0,
        help="which clean prompt the patterns are drawn on (0)",
    )
    parser.add_argument(
        "--answer-position",
        default=None,
        help="named position of the answer in the prompt (e.g. IO); default: "
        "the answer token's last occurrence before the metric position",
    )
    parser.add_argument(
        "--random-length",
        type=int,
        default=20,
        help="length of the random sequence that is repeated (20)",
    )
    parser.add_argument("--random-batch", type=int, default=8, help="random sequences (8)")
    parser.add_argument("--top", type=int, default=5, help="heads to print per role (5)")
    parser.set_defaults(func=run, check=_patterns)  # fmt: skip


def _patterns(args: argparse.Namespace, model=None) -> list[tuple[int, int]] | None:
    """--patterns as (layer, head) pairs (checked against the model when given)."""
    from wildcircuits import inputs
    from wildcircuits.names import parse_head, split_names

    if not args.patterns:
        return None
    if model is not None:
        return inputs.check_heads("--patterns", args.patterns, model)
    return [(h.layer, h.head) for h in map(parse_head, split_names(args.patterns))]


def run(args: argparse.Namespace) -> int:
    from wildcircuits import inputs
    from wildcircuits.cli.attribute import load_problem
    from wildcircuits.localise import RandomSequences, head_roles, save_patterns

    model, problem = load_problem(args)
    chosen = _patterns(args, model)  # check the names and the prompt before the slow part
    inputs.check_index("--prompt-index", args.prompt_index, problem.clean.batch, "clean prompts")
    sequences = RandomSequences(args.random_batch, args.random_length, args.seed)
    roles = head_roles(model, problem, sequences, answer_position=args.answer_position,
                       batch_size=args.batch_size)  # fmt: skip
    path = roles.save(args.out)
    _print_highlights(roles, args.top)
    heads = chosen if chosen is not None else _top_heads(roles)
    figures = save_patterns(model, problem.clean, heads, args.out, args.prompt_index,
                            roles.provenance)  # fmt: skip
    print(f"wrote {path}, {len(roles.scores)} role heatmaps and {len(figures)} attention patterns")
    return 0


def _top_heads(roles) -> list[tuple[int, int]]:
    """The top head of each role (name movers: also the most negative), without repeats."""
    from wildcircuits.names import parse_head

    names = [
        roles.top(role, 1)[0][0] for role in roles.scores if not roles.scores[role].isnan().all()
    ]
    if "name_mover" in roles.scores:
        names.append(roles.top("name_mover", 1, negative=True)[0][0])
    heads = [parse_head(name) for name in dict.fromkeys(names)]
    return [(head.layer, head.head) for head in heads]


def _print_highlights(roles, top: int) -> None:
    print("thresholds: " + ", ".join(f"{k}>={v}" for k, v in vars(roles.thresholds).items()))
    for role in roles.scores:
        best = ", ".join(f"{name} {value:.2f}" for name, value in roles.top(role, top))
        print(f"{role:<17} top: {best}")
    if "name_mover" in roles.scores:
        worst = roles.top("name_mover", top, negative=True)
        print(f"{'negative movers':<17} top: " + ", ".join(f"{n} {v:.2f}" for n, v in worst))
    labelled = [row for row in roles.table() if row["labels"]]
    print(f"labelled heads ({len(labelled)}):")
    for row in labelled:
        print(f"  {row['head']:<8} {', '.join(row['labels'])}")
