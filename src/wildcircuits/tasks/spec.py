"""Task specifications: pure data describing a behaviour, no model or tokenizer code.

A *template task* (the form every YAML task file takes) is:

- word lists (`WordList`): records of string fields, e.g. `{name: Mary, pronoun: she}`;
- templates (`Template`): text with placeholders `{VAR}`, `{VAR.field}` or `{VAR.field|filter}`;
  each variable draws one record from a list;
- named corruptions (`Corruption`): rules that re-draw or copy variables / occurrences;
- answer and distractor templates, and the metric read at a named position (default `END`).

Occurrence names: a variable used once names its position after itself (`IO`); a variable used
k > 1 times names its occurrences `S1`, `S2`, ... in reading order. `END` is the final token.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum


class MetricKind(StrEnum):
    """The metrics a task can declare (see `wildcircuits.tasks.metrics`)."""

    LOGIT_DIFF = "logit_diff"
    PROB_DIFF = "prob_diff"
    LOGIT_DIFF_BEST_WRONG = "logit_diff_best_wrong"
    ANSWER_PROB = "answer_prob"
    ACCURACY = "accuracy"
    KL_TO_CLEAN = "kl_to_clean"
    LOSS = "loss"


class Split(StrEnum):
    """Which part of a task's prompt space a dataset draws from.

    A prompt's split is a pure function of (seed, clean text), so a train and a test dataset built
    separately never share a clean prompt.
    """

    TRAIN = "train"
    TEST = "test"
    ALL = "all"


class Filter(StrEnum):
    """String filters a placeholder may apply: `{A.word|initial}`."""

    INITIAL = "initial"
    UPPER = "upper"
    LOWER = "lower"
    CAPITALIZE = "capitalize"


class RuleKind(StrEnum):
    """Corruption rule kinds.

    RESAMPLE: re-draw the named variables (all their occurrences get the same new record) or
      occurrences (only that occurrence changes) from the same list, distinct from every value of
      that list in the clean prompt and from each other; `differ` names a field that must change.
    COPY: set each target occurrence to the record of a source variable / occurrence.
    """

    RESAMPLE = "resample"
    COPY = "copy"


@dataclass(frozen=True)
class WordList:
    """Records with the same string fields; `single_token` fillers must be one token each."""

    name: str
    records: tuple[Mapping[str, str], ...]
    single_token: bool = True

    @property
    def fields(self) -> tuple[str, ...]:
        return tuple(self.records[0]) if self.records else ()


@dataclass(frozen=True)
class Template:
    """One prompt template and its metadata (e.g. `order: ABBA`)."""

    id: str
    text: str
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Corruption:
    """A named corruption: one rule applied to the clean bindings."""

    name: str
    kind: RuleKind
    targets: tuple[str, ...] = ()  # RESAMPLE: variables or occurrences
    differ: str | None = None  # RESAMPLE: field (optionally `field|filter`) that must change
    copies: Mapping[str, str] = field(default_factory=dict)  # COPY: target occurrence -> source


class VariationKind(StrEnum):
    """How a probe variation is formed.

    GROUP_BY: split the baseline examples by a key (`template`, `meta.KEY` or `VAR.field`).
    TEMPLATES: the same task with other templates. LISTS: the same task with some word lists
    replaced. Python tasks add their own variations (see each task).
    """

    GROUP_BY = "group_by"
    TEMPLATES = "templates"
    LISTS = "lists"


@dataclass(frozen=True)
class VariationSpec:
    """A probe variation of a template task."""

    name: str
    kind: VariationKind
    key: str | None = None
    templates: tuple[Template, ...] = ()
    lists: Mapping[str, WordList] = field(default_factory=dict)
    description: str = ""


@dataclass(frozen=True)
class TemplateTaskSpec:
    """Everything that defines a template task; the YAML file maps onto it one to one.

    `variables` maps each variable to its list. `answers` / `distractors` are templates formatted
    with the clean bindings; with no `distractors`, the distractor is the answer formatted with the
    bindings of the default corruption (the counterfactual answer). In a corrupted prompt a variable
    whose occurrences differ takes the value of its first occurrence.
    """

    name: str
    description: str
    lists: Mapping[str, WordList]
    variables: Mapping[str, str]
    templates: tuple[Template, ...]
    corruptions: tuple[Corruption, ...]
    answers: tuple[str, ...]
    distractors: tuple[str, ...] = ()
    metric: MetricKind = MetricKind.LOGIT_DIFF
    default_corruption: str | None = None
    position: str = "END"
    variations: tuple[VariationSpec, ...] = ()
    source: str = "builtin"

    @property
    def corruption_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.corruptions)

    @property
    def default(self) -> str:
        """The default corruption: the declared one, else the first."""
        return self.default_corruption or self.corruptions[0].name
