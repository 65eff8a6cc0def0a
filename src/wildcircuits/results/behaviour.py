"""behaviour.json and examples.json: the behaviour probe's result and the example prompts.

Verdicts compare a variation's mean metric with the baseline, normalized so the clean baseline
is 1 and the default corruption is 0: score >= HOLDS (0.75) holds, score < BREAKS (0.25) breaks,
in between degrades; `undefined` when clean and corrupted baselines agree (nothing to compare).
The probe itself is `wildcircuits.tasks.probe.run_probe`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from wildcircuits.results.base import Result, register

HOLDS = 0.75
BREAKS = 0.25


class Verdict(StrEnum):
    HOLDS = "holds"
    DEGRADES = "degrades"
    BREAKS = "breaks"
    UNDEFINED = "undefined"


@dataclass(frozen=True)
class Stats:
    """Summary of one distribution of prompts."""

    n: int
    mean: float
    std: float
    median: float
    accuracy: float
    top1: float
    answer_prob: float | None = None
    kl_to_clean: float | None = None
    normalized: float | None = None


@dataclass(frozen=True)
class VariationResult:
    name: str
    description: str
    n: int
    mean: float
    std: float
    accuracy: float
    top1: float
    answer_prob: float | None
    normalized: float | None
    verdict: Verdict
    error: str | None = None


@dataclass(frozen=True)
class Example:
    """One example prompt: clean text, each corruption's text, answers and distractors."""

    clean: str
    corrupted: dict[str, str] = field(default_factory=dict)
    answers: tuple[str, ...] = ()
    distractors: tuple[str, ...] = ()
    template: str | None = None

    def _json_out(self, data: dict[str, Any]) -> dict[str, Any]:
        if self.template is None:
            data.pop("template")
        return data


@register
@dataclass(frozen=True)
class ProbeResult(Result):
    """behaviour.json: baseline, every corruption and every variation, with verdicts."""

    FILE: ClassVar[str] = "behaviour.json"
    STEP: ClassVar[str] = "behaviour"
    # quantization is recorded but may be None (hub / local models): not required here
    PROVENANCE: ClassVar[tuple[str, ...]] = ("model_id", "metric")

    task: str
    description: str
    model: dict[str, Any]
    provenance: dict[str, Any]
    n: int
    metric: str
    higher_is_better: bool
    default_corruption: str
    clean: Stats
    corrupted: dict[str, Stats]
    variations: list[VariationResult]
    thresholds: dict[str, float] = field(default_factory=lambda: {"holds": HOLDS, "breaks": BREAKS})
    example: Example | None = None
    #: the dataset build report (`BuildReport.to_dict`): requested, built, every drop reason
    #: with its count (e.g. JSONL rows dropped for unequal clean / corrupted token lengths)
    build: dict[str, Any] | None = None

    @classmethod
    def _json_in(cls, data: Mapping[str, Any]) -> Mapping[str, Any]:
        return {**data, "example": None} if data.get("example") == {} else data

    def _json_out(self, data: dict[str, Any]) -> dict[str, Any]:
        return {**data, "model_id": self.model.get("model_id")}

    def to_dict(self) -> dict[str, Any]:
        """The JSON data without the schema version (as `to_json`)."""
        data = self.to_json()
        data.pop("schema_version", None)
        return data

    @property
    def baseline(self) -> Stats:
        """The default corruption's stats (normalized 0)."""
        return self.corrupted[self.default_corruption]


@register
@dataclass(frozen=True)
class Examples(Result):
    """examples.json: the first few training examples, for the report."""

    FILE: ClassVar[str] = "examples.json"
    STEP: ClassVar[str] = "behaviour"

    provenance: dict[str, Any]
    examples: tuple[Example, ...]
