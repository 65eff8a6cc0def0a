"""Reading a run folder (schema: docs/run_folder.md) for the report, without loading a model.

`read_run(run_dir)` returns a `RunFiles`: the required files parsed, and for every optional
file a `Part` that is either its data, "not computed" (missing) or "could not be read" (with the
reason). Nothing here imports torch except the optional `scores.pt` fallback.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from wildcircuits.errors import WildcircuitsError

REQUIRED = ("config.json", "manifest.json")
OPTIONAL = (
    "behaviour.json",
    "examples.json",
    "localise.json",
    "circuit.json",
    "circuit_sizes.json",
    "roles.json",
    "metrics.json",
    "redteam.json",
)


class RunFolderError(WildcircuitsError):
    """A run folder lacks a required file, or a required file is unreadable."""


class PartState(StrEnum):
    OK = "ok"
    MISSING = "not computed"
    BROKEN = "could not be read"


@dataclass(frozen=True)
class Part:
    """One optional file: its data when `state` is OK, else why there is none."""

    name: str
    state: PartState
    data: Any = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.state is PartState.OK

    def note(self) -> str:
        """What the report says in place of a section that has no data."""
        if self.state is PartState.MISSING:
            return f"Not computed ({self.name} is not in the run folder)."
        return f"Could not be read: {self.name}: {self.reason}"


@dataclass(frozen=True)
class RunFiles:
    root: Path
    config: Mapping[str, Any]
    manifest: Mapping[str, Any]
    parts: Mapping[str, Part] = field(default_factory=dict)

    def part(self, name: str) -> Part:
        return self.parts[name]

    def path(self, relative: str) -> Path | None:
        """A file inside the run folder (None when it is missing or escapes the folder)."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()) or not path.is_file():
            return None
        return path


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def _read_required(root: Path, name: str) -> Mapping[str, Any]:
    path = root / name
    if not path.is_file():
        raise RunFolderError(
            f"{path} is missing: a run folder needs {' and '.join(REQUIRED)} "
            "(see docs/run_folder.md)"
        )
    try:
        data = _read_json(path)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise RunFolderError(f"{path} is not valid JSON ({error})") from None
    if not isinstance(data, Mapping):
        raise RunFolderError(f"{path} must hold a JSON object, got {type(data).__name__}")
    return data


def _read_optional(root: Path, name: str) -> Part:
    path = root / name
    if not path.exists():
        return Part(name, PartState.MISSING)
    try:
        data = _read_json(path)
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as error:
        return Part(name, PartState.BROKEN, reason=str(error))
    if not isinstance(data, Mapping):
        return Part(name, PartState.BROKEN, reason=f"expected a JSON object, got {type(data)}")
    return Part(name, PartState.OK, data)


def read_run(run_dir: Path | str) -> RunFiles:
    """Parse a run folder; raises `RunFolderError` naming a missing / corrupt required file."""
    root = Path(run_dir)
    if not root.is_dir():
        raise RunFolderError(f"run folder {root} does not exist or is not a folder")
    config = _read_required(root, "config.json")
    manifest = _read_required(root, "manifest.json")
    parts = {name: _read_optional(root, name) for name in OPTIONAL}
    return RunFiles(root, config, manifest, parts)


def scores_from_pt(root: Path, names: set[str]) -> dict[str, float]:
    """Scores of the named edges from `scores.pt` ({} when it is missing or unreadable)."""
    path = root / "scores.pt"
    if not names or not path.is_file():
        return {}
    try:
        from wildcircuits.graph.circuit import EdgeScores

        scores = EdgeScores.load(path)
    except (WildcircuitsError, OSError, RuntimeError, ValueError, KeyError):
        return {}
    out = {}
    for name in names:
        try:
            out[name] = scores.of(name)
        except WildcircuitsError:  # an edge of another graph: no score rather than no report
            continue
    return out
