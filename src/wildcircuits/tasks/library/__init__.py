"""Built-in tasks: YAML files in this folder, plus two Python tasks that need code."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from wildcircuits.errors import TaskError
from wildcircuits.tasks.base import Task
from wildcircuits.tasks.library.greater_than import GreaterThanTask
from wildcircuits.tasks.library.induction import InductionTask

_PYTHON_TASKS: dict[str, type] = {"induction": InductionTask, "greater_than": GreaterThanTask}


def _yaml_files() -> dict[str, Path]:
    folder = resources.files("wildcircuits.tasks.library")
    return {Path(f.name).stem: Path(str(f)) for f in folder.iterdir() if f.name.endswith(".yaml")}


def builtin_names() -> list[str]:
    """Every built-in task name, sorted."""
    return sorted({*_PYTHON_TASKS, *_yaml_files()})


def builtin_task(name: str) -> Task:
    """A built-in task by name (TaskError lists the known names)."""
    if name in _PYTHON_TASKS:
        return _PYTHON_TASKS[name]()
    files = _yaml_files()
    if name not in files:
        raise TaskError(f"unknown task {name!r}; built-in tasks: {', '.join(builtin_names())}")
    from wildcircuits.tasks.files import load_yaml_spec
    from wildcircuits.tasks.template_task import TemplateTask

    return TemplateTask(load_yaml_spec(files[name]))
