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
    parser.set_defaults(func=run, check=check, out_is_file=True)


def check(args: argparse.Namespace) -> None:
    """RUN_DIR is a folder; --out (a file) is not a folder and its folder can be written."""
    from pathlib import Path

    from wildcircuits.errors import InputError
    from wildcircuits.inputs import check_out_folder

    if not Path(args.run_dir).is_dir():
        why = "is not a folder" if Path(args.run_dir).exists() else "does not exist"
        raise InputError(f"RUN_DIR {args.run_dir!r} {why}; give a `discover` run folder")
    if args.out is not None:
        if Path(args.out).is_dir():
            raise InputError(f"--out {args.out!r} is a folder; give the path of an .html file")
        check_out_folder(Path(args.out).parent, "--out's folder")


def run(args: argparse.Namespace) -> int:
    from wildcircuits.report.html import build_report

    path = build_report(args.run_dir, args.out)
    print(f"wrote {path}")
    return 0
