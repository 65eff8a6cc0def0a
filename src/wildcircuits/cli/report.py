"""`wildcircuits report RUN_DIR`: rebuild RUN_DIR/report.html from the saved files alone."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `report` sub-command."""
    parser = subparsers.add_parser(
        "report",
        help="rebuild a run folder's report.html from its saved files (no model is loaded)",
        description="Read RUN_DIR (config.json, manifest.json and whichever result files exist; "
        "see docs/run_folder.md) and write one self-contained RUN_DIR/report.html. Sections whose "
        "files are missing say 'not computed'.",
    )
    parser.add_argument("run_dir", help="a run folder written by `wildcircuits discover`")
    parser.add_argument(
        "--out", default=None, help="write the page here (default RUN_DIR/report.html)"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wildcircuits.report.html import build_report

    path = build_report(args.run_dir, args.out)
    print(f"wrote {path}")
    return 0
