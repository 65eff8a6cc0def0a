"""`wildcircuits catalogue --tasks ... --models ... --out DIR`: one `discover` cell per (task,
model), resumable, verified by stated criteria, into DIR/catalogue.json and DIR/index.html."""

from __future__ import annotations

import argparse

from wildcircuits.pipeline.config import DiscoverConfig


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `catalogue` sub-command."""
    defaults = DiscoverConfig()
    parser = subparsers.add_parser(
        "catalogue",
        help="a catalogue of circuits: the whole discover run for every task x model",
        description=(
            "Run `discover` for every (task, model) cell into DIR/cells/TASK--MODEL/, decide "
            "which cells are verified (criteria in docs/catalogue_guide.md, stored in "
            "DIR/catalogue.json) and write DIR/index.html."
        ),
    )
    parser.add_argument(
        "--tasks",
        required=True,
        help="'all' (every built-in task) or comma-separated names / task files",
    )
    parser.add_argument("--models", required=True, help="comma-separated model names or files")
    parser.add_argument("--out", required=True, help="catalogue folder (created if missing)")
    parser.add_argument(
        "--executor",
        choices=("local", "ray"),
        default="local",
        help="local: cells one after another here (default); ray: one Ray task "
        "per cell (pip install wildcircuits[ray])",
    )
    parser.add_argument("--ray-address", default=None, help="Ray cluster to join (ray only)")
    parser.add_argument(
        "--resume", action="store_true", help="continue a catalogue in DIR: finished cells are kept"
    )
    parser.add_argument(
        "--n",
        type=int,
        default=defaults.n_examples,
        help="train examples per cell (the held-out split has as many)",
    )
    parser.add_argument("--method", default=defaults.method)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--device", default=defaults.device)
    parser.add_argument(
        "--min-accuracy",
        type=float,
        default=defaults.min_accuracy,
        help="the behaviour gate: clean accuracy a model needs to do a task",
    )
    parser.add_argument(
        "--rebuild",
        action="store_true",
        help="only rewrite catalogue.json and index.html from DIR's cells",
    )
    parser.add_argument("--quiet", action="store_true", help="no progress lines")
    parser.add_argument("--verbose", action="store_true", help="also each cell's step lines")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wildcircuits.catalogue.run import CATALOGUE_FILE, INDEX_FILE, catalogue, rebuild

    if args.rebuild:
        result = rebuild(args.out)
    else:
        config = DiscoverConfig(
            method=args.method,
            n_examples=args.n,
            n_heldout=args.n,
            seed=args.seed,
            device=args.device,
            min_accuracy=args.min_accuracy,
        )
        result = catalogue(
            args.tasks,
            args.models,
            args.out,
            config=config,
            executor=args.executor,
            ray_address=args.ray_address,
            resume=args.resume,
            progress=not args.quiet,
            verbose=args.verbose,
        )
    counts = ", ".join(f"{n} {s}" for s, n in result.counts().items() if n)
    print(f"catalogue: {counts}")
    print(f"{args.out}/{CATALOGUE_FILE}\n{args.out}/{INDEX_FILE}")
    return 0
