"""redteam.json (checks with verdicts) and roles.json (node roles with evidence)."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from wildcircuits.results.base import Result, register


class CheckVerdict(StrEnum):
    PASS = "pass"
    WARN = "warn"


@dataclass(frozen=True)
class Check:
    """One red-team question, its verdict and the numbers behind it."""

    name: str
    question: str
    verdict: CheckVerdict
    evidence: str
    numbers: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, name: str, question: str, ok: bool, evidence: str, **numbers: Any) -> Check:
        """`pass` when `ok`, else `warn`."""
        verdict = CheckVerdict.PASS if ok else CheckVerdict.WARN
        return cls(name, question, verdict, evidence, numbers)


@register
@dataclass(frozen=True)
class RedTeam(Result):
    """redteam.json (the redteam step)."""

    FILE: ClassVar[str] = "redteam.json"
    STEP: ClassVar[str] = "redteam"

    provenance: dict[str, Any]
    checks: tuple[Check, ...]


@dataclass(frozen=True)
class NodeRole:
    """A circuit node's role, the evidence for it and the scores behind it."""

    role: str
    evidence: str = ""
    labels: tuple[str, ...] = ()
    scores: dict[str, float | None] = field(default_factory=dict)


@register
@dataclass(frozen=True)
class Roles(Result):
    """roles.json (the summarise step): sentences and one entry per node (graph node names)."""

    FILE: ClassVar[str] = "roles.json"
    STEP: ClassVar[str] = "summarise"

    provenance: dict[str, Any]
    summary: tuple[str, ...]
    nodes: dict[str, NodeRole]
