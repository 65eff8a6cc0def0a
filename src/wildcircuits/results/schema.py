"""docs/run_folder.md's field tables, generated from the result types.

Each registered file (`RESULT_KINDS`) has one block in the docs between
`<!-- schema: FILE -->` and `<!-- /schema -->`: a table per record (the file's type first, then
every record it holds), one row per key with its type and default. A test checks the docs
against the types; `python -m wildcircuits.results.schema docs/run_folder.md` rewrites the blocks.
"""

from __future__ import annotations

import dataclasses
import enum
import re
import sys
import typing
from pathlib import Path

from wildcircuits.results.base import RESULT_KINDS, SCHEMA_KEY, Result
from wildcircuits.results.codec import hints

BLOCK = re.compile(r"<!-- schema: (?P<file>[\w.]+) -->\n.*?<!-- /schema -->", re.S)


def _records(cls: type) -> list[type]:
    """`cls` and every record and enum type its fields hold, depth first, each once."""
    found: list[type] = []

    def visit(hint: object) -> None:
        if isinstance(hint, type) and issubclass(hint, enum.Enum) and hint not in found:
            found.append(hint)
        if isinstance(hint, type) and dataclasses.is_dataclass(hint):
            if hint in found:
                return
            found.append(hint)
            for inner in hints(hint).values():
                visit(inner)
        for arg in typing.get_args(hint):
            visit(arg)

    visit(cls)
    return found


def _default(f: dataclasses.Field) -> str:
    if f.default is not dataclasses.MISSING:
        return f"`{f.default!r}`"
    if f.default_factory is not dataclasses.MISSING:
        return f"`{f.default_factory()!r}`"
    return "required"


def _table(cls: type) -> list[str]:
    if issubclass(cls, enum.Enum):
        return [f"`{cls.__name__}`: one of {', '.join(f'`{m.value}`' for m in cls)}.", ""]
    doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
    lines = [f"`{cls.__name__}`: {doc}", "", "| key | type | default |", "|---|---|---|"]
    if issubclass(cls, Result) and cls.SCHEMA is not None:
        lines.append(f"| `{SCHEMA_KEY}` | int | `{cls.SCHEMA}` (absent: 0, before the types) |")
    for f in dataclasses.fields(cls):
        kind = str(f.type).replace("|", "\\|")
        lines.append(f"| `{f.name}` | `{kind}` | {_default(f)} |")
    return [*lines, ""]


def block(file: str) -> str:
    """The generated block for one registered file."""
    kind = RESULT_KINDS[file]
    lines = [f"<!-- schema: {file} -->", f"Written by the `{kind.STEP}` step.", ""]
    for record in _records(kind):
        lines += _table(record)
    return "\n".join([*lines, "<!-- /schema -->"])


def update(text: str) -> str:
    """`text` with every schema block regenerated."""
    return BLOCK.sub(lambda m: block(m["file"]), text)


def missing_blocks(text: str) -> list[str]:
    """Registered files that have no schema block in `text`."""
    present = {m["file"] for m in BLOCK.finditer(text)}
    return [file for file in RESULT_KINDS if file not in present]


def main(argv: list[str]) -> int:
    (path,) = argv
    doc = Path(path)
    doc.write_text(update(doc.read_text()))
    missing = missing_blocks(doc.read_text())
    if missing:
        print(f"{path}: add a '<!-- schema: FILE -->' block for {', '.join(missing)}")
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main(sys.argv[1:]))
