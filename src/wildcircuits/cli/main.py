"""The `wildcircuits` command: one sub-command per module in this package.

Each module named in `COMMANDS` exposes `register(subparsers)`, which adds its parser and sets
`func` (called with the parsed arguments, returning an exit status). Modules import torch and
transformers inside their `func`, so `--help` and argument errors stay instant.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from wildcircuits.errors import WildcircuitsError

COMMANDS = [
    "models",
    "verify_model",
    "tasks",
    "probe",
    "patch",
    "attribute",
    "heads",
    "report",
    "ablate",
    "path_patch",
    "evaluate",
    "discover",
    "discover_edges",
]

EXIT_USAGE_ERROR = 2


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="wildcircuits",
        description="Find, test and verify circuits inside real pretrained language models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"wildcircuits.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]), run the sub-command, return its exit status.

    A `WildcircuitsError` is printed as `error: <message>` with exit status 2, without a traceback.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    from wildcircuits.runtime import keep_freed_memory

    keep_freed_memory()  # faster long runs on glibc (see wildcircuits.runtime)
    try:
        status = args.func(args)
    except WildcircuitsError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_USAGE_ERROR
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return int(status or 0)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wildcircuits")
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
