"""Tasks: behaviours as data (clean / corrupted prompts, answers, metric) and the behaviour probe.

from wildcircuits.tasks import load_task
task = load_task("ioi")                       # built-in name, or a .yaml / .jsonl path
data = task.build(model.tokenizer, n=32, seed=0, split=Split.TRAIN)
"""

from __future__ import annotations

from pathlib import Path

from wildcircuits.errors import TaskError
from wildcircuits.tasks.base import Preview, Task, Variation
from wildcircuits.tasks.dataset import BuildReport, Dataset, Example, Prompt
from wildcircuits.tasks.library import builtin_names, builtin_task
from wildcircuits.tasks.spec import MetricKind, Split

__all__ = [
    "BuildReport",
    "Dataset",
    "Example",
    "MetricKind",
    "Preview",
    "Prompt",
    "Split",
    "Task",
    "Variation",
    "builtin_names",
    "load_task",
]


def load_task(name_or_path: str | Path) -> Task:
    """A built-in task by name, or a user task from a `.yaml`/`.yml` or `.jsonl` file."""
    text = str(name_or_path)
    suffix = Path(text).suffix.lower()
    if suffix in (".yaml", ".yml"):
        from wildcircuits.tasks.files import load_yaml_spec
        from wildcircuits.tasks.template_task import TemplateTask

        return TemplateTask(load_yaml_spec(text))
    if suffix == ".jsonl":
        from wildcircuits.tasks.jsonl_task import load_jsonl_task

        return load_jsonl_task(text)
    if Path(text).exists():
        raise TaskError(f"{text}: expected a .yaml, .yml or .jsonl task file")
    return builtin_task(text)
