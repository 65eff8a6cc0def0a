"""JSONL tasks: explicit (clean, corrupted, answer, distractor) rows, one JSON object per line.

Row keys: `clean` (str); `corrupted` (str, or a mapping corruption name -> str; a plain string is
named `corrupted`); `answer` (str or list of str, each one token); `distractor` (same); optional
`template` (str) and `metadata` (mapping of str). Every row must name the same corruptions.
Only the `END` position is known for JSONL rows.

Loss rows: instead of `answer` / `distractor`, a row may give `loss_after` (str, a prefix of
`clean` ending at a token boundary): the metric is then the mean next-token loss of every clean
token after that prefix (e.g. clean "abcdabcd", loss_after "abcda": predict b, c, d from the
repeat), the `loss` metric read at many positions per row. Every row of a file is of one kind.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wildcircuits.errors import TaskError, TaskFileError
from wildcircuits.files import FileCheck, kind_of, parse_json, read_text_file
from wildcircuits.tasks.base import Preview, Variation, task_problem
from wildcircuits.tasks.dataset import (
    BuildReport,
    Dataset,
    Example,
    check_aligned,
    in_split,
    require_size,
    single_token_id,
    tokenize_prompt,
    tokenizer_name,
)
from wildcircuits.tasks.spec import MetricKind, Split


@dataclass(frozen=True)
class Row:
    """One JSONL row."""

    clean: str
    corrupted: Mapping[str, str]
    answers: tuple[str, ...]
    distractors: tuple[str, ...]
    template: str = "row"
    metadata: Mapping[str, str] = field(default_factory=dict)
    loss_after: str | None = None

    def to_json(self) -> str:
        targets = (
            {"answer": list(self.answers), "distractor": list(self.distractors)}
            if self.loss_after is None
            else {"loss_after": self.loss_after}
        )
        return json.dumps(
            {
                "clean": self.clean,
                "corrupted": dict(self.corrupted),
                **targets,
                "template": self.template,
                "metadata": dict(self.metadata),
            }
        )


@dataclass(frozen=True)
class JsonlTask:
    """A task given by explicit rows."""

    problem = task_problem

    name: str
    rows: tuple[Row, ...]
    metric: MetricKind = MetricKind.LOGIT_DIFF
    description: str = "user task from JSONL rows"

    @property
    def corruption_names(self) -> tuple[str, ...]:
        return tuple(self.rows[0].corrupted)

    def max_examples(self) -> int:
        """One example per row at most."""
        return len(self.rows)

    @property
    def default_corruption(self) -> str:
        return self.corruption_names[0]

    def build(
        self,
        tokenizer: Any,
        n: int,
        seed: int = 0,
        split: Split = Split.ALL,
        min_n: int | None = None,
    ) -> Dataset:
        """The first `n` rows (file order) of `split` that pass the token checks."""
        examples: list[Example] = []
        reasons: Counter[str] = Counter()
        attempts = 0
        for row in self.rows:
            if len(examples) >= n:
                break
            attempts += 1
            if not in_split(row.clean, seed, split):
                reasons[f"row belongs to the other split than {split.value}"] += 1
                continue
            example, reason = _example(row, tokenizer)
            if example is None:
                reasons[reason] += 1
            else:
                examples.append(example)
        report = BuildReport(n, len(examples), attempts, (), dict(reasons))
        dataset = Dataset(
            self.name, tokenizer_name(tokenizer), seed, split, self.metric,
            self.default_corruption, "END", tuple(examples), report,
        )  # fmt: skip
        return require_size(dataset, n if min_n is None else min_n)

    def variations(self) -> tuple[Variation, ...]:
        templates = {r.template for r in self.rows}
        if len(templates) < 2:
            return ()
        return (Variation("template", "each template of the rows", group_by="template"),)

    def preview(self, seed: int = 0) -> Preview:
        row = self.rows[0]
        return Preview(row.clean, dict(row.corrupted), row.answers, row.distractors)


def _example(row: Row, tokenizer: Any) -> tuple[Example | None, str]:
    clean = tokenize_prompt(tokenizer, row.clean, ())
    corrupted = {}
    for name, text in row.corrupted.items():
        prompt = tokenize_prompt(tokenizer, text, ())
        reason = check_aligned(clean, prompt)
        if reason is not None:
            return None, f"corruption {name}: {reason}"
        corrupted[name] = prompt
    if row.loss_after is not None:
        return _loss_example(row, tokenizer, clean, corrupted)
    ids = []
    for text in (*row.answers, *row.distractors):
        token = single_token_id(tokenizer, text)
        if token is None:
            return None, "an answer or distractor is not a single token"
        ids.append(token)
    k = len(row.answers)
    example = Example(
        clean, corrupted, tuple(ids[:k]), tuple(ids[k:]), row.template,
        row.answers, row.distractors, dict(row.metadata),
    )  # fmt: skip
    return example, ""


def _loss_example(row: Row, tokenizer: Any, clean, corrupted) -> tuple[Example | None, str]:
    """A loss example: targets are the clean tokens after `loss_after`, each read at the token
    before it."""
    offsets = tokenizer(row.clean, return_offsets_mapping=True)["offset_mapping"]
    cut = len(row.loss_after)
    if not any(end == cut for _, end in offsets):
        return None, "loss_after does not end at a token boundary of clean"
    first = sum(1 for _, end in offsets if end <= cut)  # the first target token
    ids = clean.token_ids
    if first >= len(ids):
        return None, "no clean token after loss_after"
    example = Example(
        clean, corrupted, (), (), row.template, metadata=dict(row.metadata),
        loss_positions=tuple(range(first - 1, len(ids) - 1)), loss_targets=tuple(ids[first:]),
    )  # fmt: skip
    return example, ""


def load_jsonl_task(
    path: str | Path, metric: MetricKind = MetricKind.LOGIT_DIFF, name: str | None = None
) -> JsonlTask:
    """Read a JSONL task; TaskFileError (one line) names the file, line and key on any problem."""
    path = Path(path)
    check = FileCheck(path, JSONL_FILE, TaskFileError)
    rows: list[Row] = []
    # split on "\n" only: str.splitlines would also split inside strings (e.g. at U+2028)
    for number, line in enumerate(read_text_file(path, JSONL_FILE, TaskFileError).split("\n"), 1):
        if not line.strip():
            continue
        data = parse_json(line, check, line=number)
        try:
            rows.append(parse_row(data))
        except TaskError as error:
            raise check.problem(f"JSONL line {number}: {error}") from None
        if set(rows[-1].corrupted) != set(rows[0].corrupted):
            raise check.problem(
                f"JSONL line {number}: corruptions {sorted(rows[-1].corrupted)} differ from "
                f"the first row's {sorted(rows[0].corrupted)}"
            )
        if (rows[-1].loss_after is None) != (rows[0].loss_after is None):
            raise check.problem(
                f"JSONL line {number}: mixes answer rows and loss_after rows; give every row "
                "answer / distractor, or every row loss_after"
            )
    if not rows:
        raise check.problem("expected at least one JSON row, found none")
    if rows[0].loss_after is not None:
        metric = MetricKind.LOSS
    return JsonlTask(name or path.stem, tuple(rows), metric)


JSONL_FILE = "JSONL task file"


def parse_row(data: Any) -> Row:
    """One row from its parsed JSON; TaskError names the key."""
    if not isinstance(data, dict):
        raise TaskError(f"not a JSON object (got {kind_of(data)}); each line is one row object")
    keys = ("clean", "corrupted") if "loss_after" in data else ("clean", "corrupted", "answer",
                                                                  "distractor")  # fmt: skip
    for key in keys:
        if key not in data:
            raise TaskError(
                f"missing key {key!r}; expected clean, corrupted and answer, distractor (or "
                "loss_after for a loss row)"
            )
    corrupted = data["corrupted"]
    if isinstance(corrupted, str):
        corrupted = {"corrupted": corrupted}
    if not isinstance(corrupted, dict) or not corrupted:
        raise TaskError("key 'corrupted': expected a string or a non-empty mapping name -> string")
    metadata = data.get("metadata", {})
    if not isinstance(metadata, dict):
        raise TaskError("key 'metadata': expected a mapping")
    clean = _text(data["clean"], "clean")
    loss_after = _loss_after(data, clean)
    return Row(
        clean=clean,
        corrupted={str(k): _text(v, f"corrupted.{k}") for k, v in corrupted.items()},
        answers=() if loss_after else _texts(data["answer"], "answer"),
        distractors=() if loss_after else _texts(data["distractor"], "distractor"),
        template=_text(data.get("template", "row"), "template"),
        metadata={str(k): str(v) for k, v in metadata.items()},
        loss_after=loss_after,
    )


def _loss_after(data: dict, clean: str) -> str | None:
    if "loss_after" not in data:
        return None
    if "answer" in data or "distractor" in data:
        raise TaskError("a row gives loss_after or answer / distractor, not both")
    prefix = _text(data["loss_after"], "loss_after")
    if not clean.startswith(prefix) or prefix == clean:
        raise TaskError(
            "key 'loss_after': expected a proper prefix of clean (the loss is read on the "
            "tokens after it)"
        )
    return prefix


def _text(value: Any, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise TaskError(f"key {key!r}: expected a non-empty string, got {kind_of(value)}")
    return value


def _texts(value: Any, key: str) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise TaskError(f"key {key!r}: expected a string or a non-empty list of strings")
    return tuple(_text(v, key) for v in values)


def dataset_rows(dataset: Dataset) -> list[Row]:
    """A built dataset as JSONL rows (the round trip back gives the same prompts)."""
    return [
        Row(
            e.clean.text,
            {k: p.text for k, p in e.corrupted.items()},
            e.answer_texts,
            e.distractor_texts,
            e.template,
            dict(e.metadata),
        )
        for e in dataset.examples
    ]


def write_jsonl(rows: list[Row], path: str | Path) -> None:
    Path(path).write_text("".join(r.to_json() + "\n" for r in rows), encoding="utf-8")
