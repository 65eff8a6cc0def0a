"""`Result`: the base of every run-folder file type, and the registry of them by file name.

A result type is a frozen dataclass that subclasses `Result` and names its `FILE`, the pipeline
`STEP` that writes it and its `SCHEMA` version; `@register` adds it to `RESULT_KINDS`. Then
`to_json()` / `from_json(data)` / `save(path)` / `load(path)` work through `codec`. The next
issues' results (an explained circuit, hypothesis tests) are added the same way: one record, one
`@register`, one section in docs/run_folder.md (a test checks the docs against the registry).

Schema versions: files written before the types existed carry no `schema_version` and read as
version 0; they load when their keys fit the type, else the error says how to rebuild them. A file
from a newer schema than this code knows is refused.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from wildcircuits.results.codec import KeyPath, decode, encode
from wildcircuits.results.io import REQUIRED_PROVENANCE, load_json, save_json

SCHEMA_KEY = "schema_version"
R = TypeVar("R", bound=type["Result"])


@dataclass(frozen=True)
class Result:
    """A run-folder file as a frozen record (see the module docstring)."""

    FILE: ClassVar[str] = ""
    STEP: ClassVar[str] = ""
    SCHEMA: ClassVar[int | None] = 1  # None: an outside format (MIB), no version written
    PROVENANCE: ClassVar[tuple[str, ...]] = REQUIRED_PROVENANCE

    @classmethod
    def rebuild_hint(cls) -> str:
        """One line saying how to write this file again."""
        if cls.STEP == "start":
            return "start the run again in a new --out folder"
        return (
            f"rebuild it with `wildcircuits discover ... --resume` (it recomputes the "
            f"{cls.STEP} step)"
        )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON data, with the schema version first."""
        data = encode(self)
        return data if self.SCHEMA is None else {SCHEMA_KEY: self.SCHEMA, **data}

    @classmethod
    def from_json(cls, data: Any, file: str | None = None) -> Self:
        """Parse `data` (as read from `file`, default `FILE`); `ResultFileError` names the key."""
        path = KeyPath(file or cls.FILE, hint=cls.rebuild_hint())
        if isinstance(data, Mapping) and cls.SCHEMA is not None:
            version = data.get(SCHEMA_KEY, 0)
            if not isinstance(version, int) or version > cls.SCHEMA:
                path.child(SCHEMA_KEY).fail(
                    f"schema {version!r} is newer than this wildcircuits reads ({cls.SCHEMA}); "
                    "upgrade wildcircuits"
                )
        return decode(cls, data, path)

    def save(self, path: Path | str) -> Path:
        """Atomic JSON; provenance (keys `PROVENANCE`) is checked by `save_json`."""
        return save_json(path, self.to_json(), required=self.PROVENANCE)

    @classmethod
    def load(cls, path: Path | str) -> Self:
        """Read and parse `path`; missing, corrupt or ill-typed files raise a WildcircuitsError."""
        return cls.from_json(load_json(path), file=str(path))


#: file name -> result type, for every run-folder file that has one.
RESULT_KINDS: dict[str, type[Result]] = {}


def register(cls: R) -> R:
    """Add a result type to `RESULT_KINDS` under its `FILE`."""
    if cls.FILE in RESULT_KINDS:
        raise ValueError(f"two result types for {cls.FILE}")
    RESULT_KINDS[cls.FILE] = cls
    return cls


def load_result(path: Path | str) -> Result:
    """Load a run-folder file as the type registered for its file name."""
    from wildcircuits.results import kinds  # noqa: F401  (fills the registry)

    path = Path(path)
    kind = RESULT_KINDS.get(path.name)
    if kind is None:
        from wildcircuits.errors import WildcircuitsError

        raise WildcircuitsError(
            f"{path.name} is not a run-folder result file; known: {', '.join(RESULT_KINDS)}"
        )
    return kind.load(path)
