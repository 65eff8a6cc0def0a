"""Datasets: a task's examples built for one tokenizer, with their build report.

Every prompt is stored as text, token ids (as the tokenizer encodes the text by default, BOS
included when the tokenizer adds one), named token positions and the token range of every span.
Clean and corrupted prompts of an example always have the same token length and the same named
positions.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from wildcircuits.errors import TaskError
from wildcircuits.tasks.spec import MetricKind, Split

TEST_FRACTION = 0.5  # share of the prompt space assigned to the test split
UNEQUAL_LENGTH = "token length differs from the clean prompt"  # a reason to drop a candidate


@dataclass(frozen=True)
class Span:
    """A named character span of a rendered prompt; `single_token` spans must be one token.
    A `named` span is a named position (its last token); every span's token range is kept
    (`Prompt.spans`), so an unnamed one can still say which tokens a resampling variable holds."""

    name: str
    start: int
    end: int
    single_token: bool = True
    named: bool = True


@dataclass(frozen=True)
class Prompt:
    """One tokenized prompt: text, token ids, named token positions (always `END`) and spans:
    name -> (first token, last token + 1) of each span the task marked, one token or more (a
    multi-token entity's named position is only its last token)."""

    text: str
    token_ids: tuple[int, ...]
    positions: Mapping[str, int]
    spans: Mapping[str, tuple[int, int]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.token_ids)


@dataclass(frozen=True)
class Example:
    """A clean prompt, its named corruptions, and what the model should (not) say next.

    `answers` / `distractors` are single-token ids (sets; the first is *the* answer). Induction-
    style tasks score the next-token loss at `loss_positions` (targets `loss_targets`) instead.
    """

    clean: Prompt
    corrupted: Mapping[str, Prompt]
    answers: tuple[int, ...]
    distractors: tuple[int, ...]
    template: str
    answer_texts: tuple[str, ...] = ()
    distractor_texts: tuple[str, ...] = ()
    metadata: Mapping[str, str] = field(default_factory=dict)
    loss_positions: tuple[int, ...] = ()
    loss_targets: tuple[int, ...] = ()


@dataclass(frozen=True)
class DroppedFiller:
    """A word-list value removed because it is not a single token in this tokenizer."""

    list_name: str
    value: str
    form: str
    n_tokens: int


@dataclass(frozen=True)
class BuildReport:
    """What the builder kept and removed, and why."""

    requested: int
    built: int
    attempts: int
    dropped_fillers: tuple[DroppedFiller, ...] = ()
    dropped_examples: Mapping[str, int] = field(default_factory=dict)

    @property
    def dropped_unequal_length(self) -> int:
        """Candidates (e.g. JSONL rows) dropped because a corrupted prompt's token length differs
        from its clean prompt's."""
        return sum(n for reason, n in self.dropped_examples.items() if UNEQUAL_LENGTH in reason)

    def dropped_lines(self) -> list[str]:
        """One line per reason something was dropped (empty when nothing was): for printing."""
        return self.summary().splitlines()[1:]

    def to_dict(self) -> dict[str, Any]:
        """JSON-plain form, for a run folder: counts, every drop reason with its count."""
        return {
            "requested": self.requested,
            "built": self.built,
            "attempts": self.attempts,
            "dropped_fillers": [
                {"list": d.list_name, "value": d.value, "form": d.form, "n_tokens": d.n_tokens}
                for d in self.dropped_fillers
            ],
            "dropped_examples": dict(self.dropped_examples),
            "dropped_unequal_length": self.dropped_unequal_length,
        }

    def summary(self) -> str:
        """A human-readable account of every constraint that removed something."""
        lines = [f"built {self.built} of {self.requested} examples in {self.attempts} attempts"]
        by_list = Counter(d.list_name for d in self.dropped_fillers)
        for name, count in sorted(by_list.items()):
            shown = ", ".join(
                f"{d.form!r} ({d.n_tokens} tokens)"
                for d in self.dropped_fillers
                if d.list_name == name
            )
            lines.append(f"list {name!r}: dropped {count} fillers not single tokens: {shown}")
        for reason, count in sorted(self.dropped_examples.items(), key=lambda kv: -kv[1]):
            lines.append(f"dropped {count} candidate examples: {reason}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Dataset:
    """A task's examples for one tokenizer, with provenance and the build report.

    `lists`: resampling variable -> the list it is drawn from, where the task states it
    (variables of one list never share a value within a prompt); empty, scrubbing infers the
    lists from the values (`verification.resampling.make_pool`)."""

    task: str
    tokenizer: str
    seed: int
    split: Split
    metric: MetricKind
    default_corruption: str
    position: str
    examples: tuple[Example, ...]
    report: BuildReport
    lists: Mapping[str, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.examples)

    @property
    def corruptions(self) -> tuple[str, ...]:
        return tuple(self.examples[0].corrupted) if self.examples else ()

    def prompts(self, corruption: str | None = None) -> list[Prompt]:
        """The clean prompts, or those of one named corruption."""
        if corruption is None:
            return [e.clean for e in self.examples]
        if corruption not in self.corruptions:
            raise TaskError(
                f"task {self.task!r} has no corruption {corruption!r}; "
                f"known: {', '.join(self.corruptions)}"
            )
        return [e.corrupted[corruption] for e in self.examples]

    def texts(self, corruption: str | None = None) -> list[str]:
        return [p.text for p in self.prompts(corruption)]

    def positions(self, name: str | None = None) -> list[int]:
        """Token index of a named position (default: the metric position) in every example."""
        key = name or self.position
        missing = [i for i, e in enumerate(self.examples) if key not in e.clean.positions]
        if missing:
            known = ", ".join(self.examples[missing[0]].clean.positions)
            raise TaskError(f"task {self.task!r}: no position {key!r} (known: {known})")
        return [e.clean.positions[key] for e in self.examples]

    def subset(self, indices: Sequence[int]) -> Dataset:
        """The examples at `indices`, same provenance."""
        return replace(self, examples=tuple(self.examples[i] for i in indices))

    def provenance(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "tokenizer": self.tokenizer,
            "seed": self.seed,
            "split": self.split.value,
            "metric": self.metric.value,
            "position": self.position,
            "n": len(self),
        }


def split_of(text: str, seed: int) -> Split:
    """The split a clean prompt belongs to: a stable hash of (seed, text)."""
    digest = hashlib.sha256(f"{seed}\x00{text}".encode()).digest()
    return Split.TEST if digest[0] / 256 < TEST_FRACTION else Split.TRAIN


def in_split(text: str, seed: int, split: Split) -> bool:
    return split is Split.ALL or split_of(text, seed) is split


def tokenizer_name(tokenizer: Any) -> str:
    name = getattr(tokenizer, "name_or_path", "")
    return str(name) if name else f"{type(tokenizer).__name__}(vocab={len(tokenizer)})"


#: Builds of at least this many examples show a progress bar on stderr.
PROGRESS_FROM = 2000


def build_bar(task: str, n: int) -> Any:
    """A tqdm bar over the examples of a large build (disabled below `PROGRESS_FROM`)."""
    import sys

    from tqdm.auto import tqdm

    return tqdm(
        total=n, desc=f"building {task}", unit="example", file=sys.stderr, leave=False,
        disable=n < PROGRESS_FROM,
    )  # fmt: skip


def token_count(tokenizer: Any, text: str) -> int:
    """Number of tokens `text` takes, without special tokens."""
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def single_token_id(tokenizer: Any, text: str) -> int | None:
    """The id of `text` if it is exactly one token (no special tokens), else None."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return ids[0] if len(ids) == 1 else None


class AlignmentError(ValueError):
    """A span that does not map onto whole tokens (a reason to drop one candidate)."""


def tokenize_prompt(tokenizer: Any, text: str, spans: Sequence[Span]) -> Prompt:
    """Tokenize `text` and locate each span: its position is the token holding its last char.

    Raises AlignmentError when a single-token span is not exactly one token, e.g. because the
    tokenizer merges it with its neighbour ("(G" in Gemma3).
    """
    encoded = tokenizer(text, return_offsets_mapping=True)
    ids, offsets = encoded["input_ids"], encoded["offset_mapping"]
    positions: dict[str, int] = {}
    ranges: dict[str, tuple[int, int]] = {}
    for span in spans:
        covering = [i for i, (s, e) in enumerate(offsets) if s < span.end and e > span.start]
        if not covering:
            raise AlignmentError(f"span {span.name!r} covers no token")
        if span.single_token:
            start, end = offsets[covering[0]]
            lead_ok = start == span.start or (start == span.start - 1 and text[start].isspace())
            if len(covering) != 1 or not lead_ok or end != span.end:
                raise AlignmentError(
                    f"slot {span.name} is not one token in context (merges with its neighbour)"
                )
        ranges[span.name] = (covering[0], covering[-1] + 1)
        if span.named:
            positions[span.name] = covering[-1]
    positions["END"] = len(ids) - 1
    return Prompt(text=text, token_ids=tuple(ids), positions=positions, spans=ranges)


def check_aligned(clean: Prompt, corrupted: Prompt) -> str | None:
    """Why a corrupted prompt does not align with its clean prompt, or None if it does."""
    if len(clean) != len(corrupted):
        return UNEQUAL_LENGTH
    if dict(clean.positions) != dict(corrupted.positions):
        return "named positions differ between clean and corrupted prompt"
    return None


def require_size(dataset: Dataset, min_n: int) -> Dataset:
    """The dataset itself, or a TaskError naming every constraint that removed candidates."""
    if len(dataset) >= min_n and len(dataset) > 0:
        return dataset
    raise TaskError(
        f"task {dataset.task!r}: only {len(dataset)} examples (need {max(min_n, 1)}) "
        f"for tokenizer {dataset.tokenizer!r}, split {dataset.split.value}, seed {dataset.seed}.\n"
        f"{dataset.report.summary()}\n"
        "Lower n, use split 'all', or add fillers that are single tokens in this tokenizer."
    )
