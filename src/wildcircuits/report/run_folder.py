"""Reading a run folder (schema: docs/run_folder.md) for the report, without loading a model.

`read_run(run_dir)` returns a `RunFiles`: the required files parsed (`DiscoverConfig`,
`Manifest`), and for every optional file a `Part` that is either its result (the type
`wildcircuits.results.RESULT_KINDS` names for the file), "not computed" (missing) or "could not be
read" (with the reason, naming the key that does not fit) or "computed from other settings" (its
step's fingerprint does not agree with config.json: `wildcircuits.pipeline.fingerprint`; such a
file is not shown and `RunFiles.notice()` says so). Nothing here imports torch except the
optional `scores.pt` fallback.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from wildcircuits.errors import WildcircuitsError
from wildcircuits.pipeline.config import DiscoverConfig
from wildcircuits.pipeline.fingerprint import stale_steps
from wildcircuits.results import RESULT_KINDS, Result, load_json
from wildcircuits.results.manifest import Manifest

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
    "explanation.json",
    "verification.json",
)


def _kind(name: str) -> type[Result]:
    return RESULT_KINDS[name]


class RunFolderError(WildcircuitsError):
    """A run folder lacks a required file, or a required file is unreadable."""


class PartState(StrEnum):
    OK = "ok"
    MISSING = "not computed"
    BROKEN = "could not be read"
    STALE = "computed from other settings"


@dataclass(frozen=True)
class Part:
    """One optional file: its parsed result when `state` is OK, else why there is none."""

    name: str
    state: PartState
    data: Result | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.state is PartState.OK

    def note(self) -> str:
        """What the report says in place of a section that has no data."""
        if self.state is PartState.MISSING:
            return f"Not computed ({self.name} is not in the run folder)."
        if self.state is PartState.STALE:
            return (
                f"Not shown: {self.name} does not agree with this run's settings ({self.reason}); "
                "rerun `wildcircuits discover ... --resume` to recompute it."
            )
        return f"Could not be read: {self.name}: {self.reason}"


@dataclass(frozen=True)
class RunFiles:
    """A run folder as read for the report: the required files and every optional part."""

    root: Path
    config: DiscoverConfig
    manifest: Manifest
    parts: Mapping[str, Part] = field(default_factory=dict)
    #: step -> why its outputs do not agree with config.json (they are not shown).
    stale: Mapping[str, str] = field(default_factory=dict)

    def notice(self) -> str | None:
        """The report's warning when some outputs were hidden (None when all agree)."""
        if not self.stale:
            return None
        why = "; ".join(f"{step}: {reason}" for step, reason in self.stale.items())
        return (
            "Some outputs in this run folder were computed from other settings or other "
            f"upstream results and are not shown ({why}). Rerun `wildcircuits discover ... "
            "--resume` with this folder's settings to recompute them."
        )

    def part(self, name: str) -> Part:
        return self.parts[name]

    def result(self, name: str) -> Any:
        """The parsed result of an optional file, or None when it is missing or unreadable."""
        return self.part(name).data

    def path(self, relative: str) -> Path | None:
        """A file inside the run folder (None when it is missing or escapes the folder)."""
        path = (self.root / relative).resolve()
        if not path.is_relative_to(self.root.resolve()) or not path.is_file():
            return None
        return path


def _read_required(root: Path, name: str, parse: Callable[[Any], Any]) -> Any:
    path = root / name
    if not path.is_file():
        raise RunFolderError(
            f"{path} is missing: a run folder needs {' and '.join(REQUIRED)} "
            "(see docs/run_folder.md)"
        )
    try:
        data = load_json(path)
    except WildcircuitsError as error:
        raise RunFolderError(str(error)) from None
    if not isinstance(data, Mapping):
        raise RunFolderError(f"{path} must hold a JSON object, got {type(data).__name__}")
    try:
        return parse(data)
    except WildcircuitsError as error:  # names the file and the key
        raise RunFolderError(str(error)) from None
    except (TypeError, ValueError) as error:
        raise RunFolderError(f"{path}: {error}") from None


def _read_optional(root: Path, name: str) -> Part:
    path = root / name
    if not path.exists():
        return Part(name, PartState.MISSING)
    try:
        return Part(name, PartState.OK, _kind(name).load(path))
    except (OSError, UnicodeDecodeError, WildcircuitsError) as error:
        return Part(name, PartState.BROKEN, reason=_reason(error, path))


def _reason(error: Exception, path: Path) -> str:
    """The error without the file's own path in front (the note names the file)."""
    text = str(error)
    return text.removeprefix(f"{path}: ")


def read_run(run_dir: Path | str) -> RunFiles:
    """Parse a run folder; raises `RunFolderError` naming a missing / corrupt required file."""
    root = Path(run_dir)
    if not root.is_dir():
        raise RunFolderError(f"run folder {root} does not exist or is not a folder")
    config = _read_required(root, "config.json", DiscoverConfig.from_dict)
    manifest = _read_required(root, "manifest.json", Manifest.from_json)
    stale = _stale(root, config, manifest)
    parts = {name: _hide(_read_optional(root, name), stale) for name in OPTIONAL}
    return RunFiles(root, config, manifest, parts, stale)


def _stale(root: Path, config: DiscoverConfig, manifest: Manifest) -> dict[str, str]:
    """Steps whose outputs disagree with config.json; in a folder whose manifest carries
    fingerprints, a file whose step is not recorded disagrees too."""
    stale = stale_steps(config.to_dict(), manifest, root, legacy_ok=True)
    if any(r.fingerprint for r in manifest.steps.values()):
        for name in OPTIONAL:
            step = _kind(name).STEP
            if (root / name).exists() and step not in manifest.steps:
                stale.setdefault(step, f"{name} is not recorded in manifest.json")
    return stale


def _hide(part: Part, stale: Mapping[str, str]) -> Part:
    step = _kind(part.name).STEP
    if part.state is PartState.MISSING or step not in stale:
        return part
    return Part(part.name, PartState.STALE, reason=stale[step])


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
