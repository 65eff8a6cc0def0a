"""manifest.json: what ran, when, with which code and model, and how each step ended."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any, ClassVar

from wildcircuits.results.base import Result, register


class StepState(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class StepRecord:
    """One step's state; `outputs` are the files it wrote (checked on `--resume`).

    `fingerprint` is the SHA-256 of what the outputs were computed from (the config fields in
    `inputs` and the upstream steps' output hashes; `wildcircuits.pipeline.fingerprint`);
    `hashes` is the SHA-256 of each output file's bytes. A record without a fingerprint was
    written before fingerprints existed. `token_forwards`: the forward passes the step ran
    (`models.counting`: one token position through every layer; backward passes and the
    unembedding are not counted), a cost that, unlike `seconds`, does not depend on the
    machine or its load; absent in records written before it was counted."""

    state: StepState
    seconds: float | None = None
    token_forwards: int | None = None
    outputs: tuple[str, ...] = ()
    error: str | None = None
    fingerprint: str | None = None
    inputs: dict[str, Any] = field(default_factory=dict)
    hashes: dict[str, str] = field(default_factory=dict)

    def _json_out(self, data: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in data.items() if v is not None and v != [] and v != {}}


@dataclass(frozen=True)
class Stop:
    """The run stopped early on purpose (e.g. the model does not do the task)."""

    step: str
    reason: str


@register
@dataclass(frozen=True, kw_only=True)
class Manifest(Result):
    """manifest.json (written at the start and after every step). `model` is
    `ModelInfo.to_dict()`; `seeds` names every seed the run uses."""

    FILE: ClassVar[str] = "manifest.json"
    STEP: ClassVar[str] = "start"
    SCHEMA: ClassVar[int | None] = 2  # 2: steps carry fingerprint, inputs and hashes
    PROVENANCE: ClassVar[tuple[str, ...]] = ()

    package_version: str | None = None
    git_commit: str | None = None
    created: str | None = None
    model: dict[str, Any] = field(default_factory=dict)
    seeds: dict[str, Any] = field(default_factory=dict)
    steps: dict[str, StepRecord] = field(default_factory=dict)
    stopped: Stop | None = None

    def with_step(self, step: str, record: StepRecord) -> Manifest:
        return replace(self, steps={**self.steps, step: record})

    @property
    def model_id(self) -> str | None:
        return self.model.get("model_id")

    @property
    def quantization(self) -> str | None:
        return self.model.get("quantization")
