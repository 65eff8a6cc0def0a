"""`wildcircuits models`: list the built-in models, their shapes and whether each is installed."""

from __future__ import annotations

import argparse
import json
from typing import Any

from wildcircuits.models import zoo

COLUMNS = (
    "id",
    "layers",
    "heads",
    "kv_heads",
    "d_model",
    "d_head",
    "vocab",
    "installed",
    "weights",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `models` sub-command."""
    parser = subparsers.add_parser(
        "models",
        help="list the built-in models",
        description="List the built-in models, their shapes, weight origin and install state.",
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print the built-in models as a table or JSON."""
    rows = [model_row(model) for model in zoo.BUILTINS.values()]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(format_table(rows))
        missing = [row for row in rows if not row["installed"]]
        for row in missing:
            print(f"\nto install {row['id']}: {row['pip_install']}")
    return 0


def model_row(model: zoo.BuiltinModel) -> dict[str, Any]:
    """One built-in model as a JSON-ready dict."""
    return {
        "id": model.id,
        "default": model.id == zoo.DEFAULT_MODEL,
        "family": model.family,
        "layers": model.n_layers,
        "heads": model.n_heads,
        "kv_heads": model.n_kv_heads,
        "d_model": model.d_model,
        "d_head": model.d_head,
        "vocab": model.d_vocab,
        "weights": model.quantization,
        "installed": zoo.is_installed(model.id),
        "pip_install": model.pip_install,
        "description": model.description,
    }


def format_table(rows: list[dict[str, Any]]) -> str:
    """A plain-text table of `rows` over `COLUMNS`; the default model is starred."""
    cells = [list(COLUMNS)]
    for row in rows:
        values = {**row, "id": row["id"] + (" *" if row["default"] else "")}
        values["installed"] = "yes" if row["installed"] else "no"
        cells.append([str(values[column]) for column in COLUMNS])
    widths = [max(len(line[index]) for line in cells) for index in range(len(COLUMNS))]
    lines = [
        "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in cells
    ]
    return "\n".join(lines + ["* default model"])
