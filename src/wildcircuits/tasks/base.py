"""The task interface every task kind (template, Python, JSONL) implements."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from wildcircuits.errors import TaskError
from wildcircuits.tasks.dataset import Dataset
from wildcircuits.tasks.spec import MetricKind, Split


@dataclass(frozen=True)
class Preview:
    """One example as text, built without a tokenizer (for listings and docs)."""

    clean: str
    corrupted: Mapping[str, str]
    answers: tuple[str, ...]
    distractors: tuple[str, ...]


@dataclass(frozen=True)
class Variation:
    """A probe variation: a grouping of the baseline examples, or a derived task to run.

    Exactly one of `group_by` (a key of `Example.metadata`, or `template`) and `task` is set.
    """

    name: str
    description: str
    group_by: str | None = None
    task: Task | None = None
    metadata: Mapping[str, Any] = field(default_factory=dict)


@runtime_checkable
class Task(Protocol):
    """A behaviour: builds datasets for a tokenizer and names its probe variations."""

    @property
    def name(self) -> str: ...

    @property
    def description(self) -> str: ...

    @property
    def metric(self) -> MetricKind: ...

    @property
    def default_corruption(self) -> str: ...

    @property
    def corruption_names(self) -> tuple[str, ...]: ...

    def build(
        self,
        tokenizer: Any,
        n: int,
        seed: int = 0,
        split: Split = Split.ALL,
        min_n: int | None = None,
    ) -> Dataset:
        """`n` examples (at least `min_n`, default `n`, else TaskError) for this tokenizer."""
        ...

    def variations(self) -> tuple[Variation, ...]: ...

    def preview(self, seed: int = 0) -> Preview: ...

    def problem(
        self,
        model: Any,
        n: int,
        split: Split | str = Split.ALL,
        seed: int = 0,
        corruption: str | None = None,
    ) -> Any:
        """`n` examples for `model` as a `PatchingProblem` (every task kind: `task_problem`)."""
        ...


def task_problem(
    task: Task,
    model: Any,
    n: int,
    split: Split | str = Split.ALL,
    seed: int = 0,
    corruption: str | None = None,
) -> Any:
    """`n` examples of `task` built for `model`'s tokenizer, as a `PatchingProblem` on its device
    (clean / corrupted token batches, targets, metric positions, provenance).

    `corruption` defaults to the task's own; the split is one of all / train / test. Every task
    class binds this as its `problem` method.
    """
    from wildcircuits.inputs import check_seed
    from wildcircuits.patching.problem import problem_from_dataset

    check_task_n(task, "n", n)
    check_seed("seed", seed)
    if model.tokenizer is None:
        raise TaskError(
            f"task {task.name!r} needs the model's tokenizer and model "
            f"{model.info.model_id!r} has none; load a model folder with tokenizer files"
        )
    dataset = task.build(model.tokenizer, n=n, seed=seed, split=_split(split))
    return problem_from_dataset(model, dataset, corruption)


def max_examples(task: Task) -> int | None:
    """How many distinct prompts `task` can make at most (every template filled every way; the
    split and the token checks keep fewer), or None when that is unbounded in practice."""
    bound = getattr(task, "max_examples", None)
    return None if bound is None else bound()


def check_task_n(task: Task, what: str, n: Any) -> int:
    """`n` as a number of examples of `task`: 1 .. the task's `max_examples` (and the global
    `inputs.MAX_EXAMPLES`), else an `InputError` naming both, before any prompt is built."""
    from wildcircuits.errors import InputError
    from wildcircuits.inputs import check_n

    n = check_n(what, n)
    bound = max_examples(task)
    if bound is not None and n > bound:
        raise InputError(
            f"{what} {n} is more than task {task.name!r} can build: its templates and word "
            f"lists make at most {bound} distinct prompts (before the train / test split and "
            f"the token checks); ask for at most {bound}"
        )
    return n


def _split(split: Split | str) -> Split:
    try:
        return Split(split)
    except ValueError:
        choices = ", ".join(s.value for s in Split)
        raise TaskError(f"unknown split {split!r}; choose one of {choices}") from None
