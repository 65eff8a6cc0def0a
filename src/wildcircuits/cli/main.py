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

from wildcircuits.cli.checks import check_arguments
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
    "explain",
    "verify",
    "catalogue",
]

EXIT_USAGE_ERROR = 2
EXIT_BUG = 1
EXIT_INTERRUPTED = 130


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="wildcircuits",
        description="Find, test and verify circuits inside real pretrained language models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on an unexpected error, print the full traceback here instead of to a file",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMANDS:
        module = importlib.import_module(f"wildcircuits.cli.{name}")
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse `argv` (default: sys.argv[1:]), run the sub-command, return its exit status.

    A `WildcircuitsError` (bad input, with the fix in its message) is printed as
    `error: <message>` with exit status 2. Any other exception is a bug: one line says so and
    where its full traceback was written (`--debug` prints it instead), exit status 1.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s", stream=sys.stderr)
    from wildcircuits.runtime import keep_freed_memory

    keep_freed_memory()  # faster long runs on glibc (see wildcircuits.runtime)
    try:
        check_arguments(args)  # the input boundary: every option, before any work
        status = args.func(args)
    except WildcircuitsError as error:
        print(f"error: {_one_line(str(error))}", file=sys.stderr)
        return EXIT_USAGE_ERROR
    except BrokenPipeError:  # output piped into e.g. `head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as error:  # the safety net: never a bare traceback for the user
        return _report_bug(args, error)
    return int(status or 0)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _report_bug(args: argparse.Namespace, error: Exception) -> int:
    """Print one line naming the bug and where its traceback went; the trace itself goes to
    `<--out>/wildcircuits-error.txt` when the command has an existing output folder, else to a
    temporary file (or to stderr with `--debug`)."""
    import traceback

    trace = "".join(traceback.format_exception(error))
    summary = _one_line(f"{type(error).__name__}: {error}")[:300]
    if getattr(args, "debug", False):
        print(trace, file=sys.stderr, end="")
        print(f"error: internal error (a bug in wildcircuits): {summary}", file=sys.stderr)
        return EXIT_BUG
    where = _write_trace(getattr(args, "out", None), " ".join(sys.argv), trace)
    print(
        f"error: internal error (a bug in wildcircuits): {summary}; the full traceback is in "
        f"{where} (rerun with --debug to print it); please report it with that file",
        file=sys.stderr,
    )
    return EXIT_BUG


def _write_trace(out: object, command: str, trace: str) -> str:
    import tempfile
    from pathlib import Path

    text = f"wildcircuits {_version()}\ncommand: {command}\n\n{trace}"
    folder = Path(out) if isinstance(out, str | Path) and Path(out).is_dir() else None
    if folder is not None:
        try:
            path = folder / "wildcircuits-error.txt"
            path.write_text(text)
            return str(path)
        except OSError:
            pass
    fd, name = tempfile.mkstemp(prefix="wildcircuits-error-", suffix=".txt")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    return name


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("wildcircuits")
    except PackageNotFoundError:
        return "unknown"


if __name__ == "__main__":
    sys.exit(main())
