"""The catalogue's plan: which cells, their folders and settings, checked before any cell runs.

A cell is one (task, model) pair; its run folder is `DIR/cells/TASK--MODEL/`, where each name
becomes a safe folder name (`cell_folder_name`). The plan is saved as `DIR/plan.json` so that
catalogue.json can be rebuilt from disk alone (`wildcircuits.catalogue.run.rebuild`).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wildcircuits.errors import InputError, WildcircuitsError
from wildcircuits.pipeline.config import DiscoverConfig
from wildcircuits.results.catalogue import VerifiedCriteria
from wildcircuits.results.io import load_json, save_json

PLAN_FILE = "plan.json"
CELLS = "cells"
_FILE_SUFFIXES = (".gguf", ".jsonl", ".yaml", ".yml", ".json", ".safetensors")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class CellSpec:
    """One cell: the task and model as given, and its folder under DIR/cells/."""

    task: str
    model: str
    folder: str

    def config(self, base: DiscoverConfig) -> DiscoverConfig:
        return base.with_(task=self.task, model=self.model)


@dataclass(frozen=True)
class Plan:
    """Every cell in order (tasks outer, models inner), the shared settings and the criteria."""

    tasks: tuple[str, ...]
    models: tuple[str, ...]
    base: DiscoverConfig
    criteria: VerifiedCriteria
    cells: tuple[CellSpec, ...]

    def settings(self) -> dict[str, Any]:
        """The shared DiscoverConfig fields (task and model are per cell)."""
        data = self.base.to_dict()
        data.pop("task"), data.pop("model")
        return data

    def save(self, root: Path) -> Path:
        from wildcircuits.results.codec import encode

        data = {
            "tasks": list(self.tasks),
            "models": list(self.models),
            "settings": self.settings(),
            "criteria": encode(self.criteria),
        }
        return save_json(root / PLAN_FILE, data, require_provenance=False)


def _name_part(name: str) -> str:
    """A safe folder-name part: a file path gives its stem and a short hash of the whole path
    (two files with one stem stay apart); a name keeps [A-Za-z0-9._-], the rest become '_'."""
    looks_like_file = name.lower().endswith(_FILE_SUFFIXES) or name.startswith(("/", ".", "~"))
    if looks_like_file:
        stem = _UNSAFE.sub("_", Path(name).stem).strip("._") or "file"
        return f"{stem}-{hashlib.sha256(name.encode()).hexdigest()[:6]}"
    return _UNSAFE.sub("_", name).strip("._") or "_"


def cell_folder_name(task: str, model: str) -> str:
    """`TASK--MODEL` as a safe folder name (see `_name_part`)."""
    return f"{_name_part(task)}--{_name_part(model)}"


def resolve_tasks(tasks: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """`all` (every built-in task) or a comma-separated string / list of names and files."""
    from wildcircuits.tasks import builtin_names

    names = _split(tasks, "--tasks")
    if names == ("all",):
        return tuple(builtin_names())
    return names


def _split(value: str | list[str] | tuple[str, ...], option: str) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(dict.fromkeys(s.strip() for s in items if s and s.strip()))
    if not names:
        raise InputError(f"{option} names nothing; give a comma-separated list")
    return names


def check_task(name: str) -> None:
    """A task loads (built-in name or a task file); its error names the problem."""
    from wildcircuits.tasks import load_task

    try:
        load_task(name)
    except WildcircuitsError as error:
        raise InputError(f"--tasks: {error}") from None


def check_model(name: str) -> None:
    """A model is a built-in id, an existing file or folder, or a hub id (owner/name); a typo
    is an error listing the built-ins, before any cell runs (no model is loaded here)."""
    from wildcircuits.models.zoo import BUILTINS

    if name in BUILTINS or Path(name).expanduser().exists():
        return
    if not name.lower().endswith(".gguf") and _HUB_ID.match(name):
        return
    raise InputError(
        f"--models: {name!r} is not a built-in model, an existing file or folder, or a hub id "
        f"(owner/name); built-in models: {', '.join(BUILTINS)}"
    )


def make_plan(
    tasks: str | list[str] | tuple[str, ...],
    models: str | list[str] | tuple[str, ...],
    base: DiscoverConfig | None = None,
    criteria: VerifiedCriteria | None = None,
) -> Plan:
    """Check every task and model name and build the cells; any bad name raises here."""
    task_names, model_names = resolve_tasks(tasks), _split(models, "--models")
    for task in task_names:
        check_task(task)
    for model in model_names:
        check_model(model)
    cells = tuple(CellSpec(t, m, cell_folder_name(t, m)) for t in task_names for m in model_names)
    seen: dict[str, CellSpec] = {}
    for cell in cells:
        if cell.folder in seen:
            other = seen[cell.folder]
            raise InputError(
                f"cells ({other.task}, {other.model}) and ({cell.task}, {cell.model}) would share "
                f"the folder {cell.folder}; rename one of them"
            )
        seen[cell.folder] = cell
    return Plan(
        task_names, model_names, base or DiscoverConfig(), criteria or VerifiedCriteria(), cells
    )


def load_plan(root: Path) -> Plan:
    """DIR/plan.json back as a `Plan` (names are not re-checked: the cells are on disk)."""
    from wildcircuits.results.codec import KeyPath, decode

    data = load_json(root / PLAN_FILE)
    try:
        settings = dict(data["settings"])
        base = DiscoverConfig.from_dict({**settings, "task": "_", "model": "_"})
        criteria = decode(VerifiedCriteria, data["criteria"], KeyPath(str(root / PLAN_FILE)))
        tasks, models = tuple(data["tasks"]), tuple(data["models"])
    except (KeyError, TypeError) as error:
        raise WildcircuitsError(
            f"{root / PLAN_FILE} cannot be read ({error}); start the catalogue in a new --out"
        ) from None
    cells = tuple(CellSpec(t, m, cell_folder_name(t, m)) for t in tasks for m in models)
    return Plan(tasks, models, base, criteria, cells)
