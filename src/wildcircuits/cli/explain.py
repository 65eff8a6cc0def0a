"""`wildcircuits explain RUN_DIR`: recompute a finished run's explanation (components at
positions, classes, class diagram, backup heads) and its drafted hypothesis.yaml."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `explain` sub-command."""
    parser = subparsers.add_parser(
        "explain",
        help="explain a run folder's selected circuit: classes, class diagram, hypothesis.yaml",
        description=(
            "Read RUN_DIR (written by `wildcircuits discover`; its evaluate step must be done), "
            "load the run's model and task from config.json, find the smallest set of "
            "components at named positions that keeps the circuit's effect, group its heads "
            "into functional classes, measure the class-to-class paths and the backup heads, and "
            "write RUN_DIR/explanation.json and RUN_DIR/hypothesis.yaml (docs/hypothesis.md); "
            "report.html is rebuilt when the run has one."
        ),
    )
    parser.add_argument("run_dir", help="a run folder written by `wildcircuits discover`")
    parser.add_argument(
        "--device", default=None, help="where to load the model (default: the run's device)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    parser.set_defaults(func=run, check=check)


def check(args: argparse.Namespace) -> None:
    """RUN_DIR is a readable run folder whose evaluate step finished and agrees with it."""
    from wildcircuits.pipeline.steps_explain import check_explainable

    check_explainable(args.run_dir)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from wildcircuits.pipeline.steps_explain import explain_run_folder

    written = explain_run_folder(args.run_dir, device=args.device, progress=not args.quiet)
    for name in written:
        print(f"wrote {Path(args.run_dir) / name}")
    return 0
