"""verification.json (the verify step): the tests of a hypothesis file and their verdicts.

A hypothesis (`explanation.hypothesis.Hypothesis`: classes of components at positions, claimed
class-to-class paths, what each class depends on) is tested four ways, each number with its
bootstrap interval over prompts:
- the IOI paper's criteria (faithfulness, completeness, minimality) under mean ablation per
  template with whole (component, position) knockouts (`Criteria`);
- the statistical tests of Shi et al. 2024, each with its p-value (`StatTest`);
- causal scrubbing of the whole hypothesis and of each claim alone (`Scrubbing`);
- harder red-team checks (another corruption, held-out templates, a simpler story), as
  `verdicts.Check`s.
`claims` gives one verdict per claim (supported / falsified / inconclusive), naming the test
that decided it; `verdict` is the sentence the report opens with. Thresholds are stated once,
in `thresholds`, and never changed for one run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from wildcircuits.results.base import Result, register
from wildcircuits.results.explain import Pair
from wildcircuits.results.verdicts import Check


@dataclass(frozen=True)
class Interval:
    """A confidence interval: [low, high] at `level`, from `n_boot` resamples by `method`
    (e.g. "percentile bootstrap over prompts, paired")."""

    low: float
    high: float
    level: float = 0.95
    n_boot: int = 0
    method: str = "percentile bootstrap over prompts"

    @property
    def width(self) -> float:
        return self.high - self.low


@dataclass(frozen=True)
class Estimate:
    """A number and, where one was computed, its interval."""

    value: float
    interval: Interval | None = None


@dataclass(frozen=True)
class KnockoutPoint:
    """One knocked-out set K: F(C \\ K), F(M \\ K) and completeness |F(C \\ K) - F(M \\ K)|.

    kind: "empty" (K = {}), "class" (K = one class), "random" (a random subset of the
    circuit), "greedy" (the set a greedy search found to maximise completeness)."""

    label: str
    kind: str
    knocked_out: tuple[Pair, ...]
    f_circuit: Estimate
    f_model: Estimate
    completeness: Estimate


@dataclass(frozen=True)
class MemberMinimality:
    """|F(C \\ (K + v)) - F(C \\ K)| for member v with K found greedily for it; `flagged`
    when below the stated minimality threshold (possibly unnecessary)."""

    pair: Pair
    knocked_out: tuple[Pair, ...]
    value: Estimate
    flagged: bool


@dataclass(frozen=True)
class Criteria:
    """The IOI paper's three criteria. F is the batch-mean metric (`metric`) under `ablation`
    (e.g. `mean:template`); M the whole model, C the hypothesis's circuit.

    faithfulness: |F(M) - F(C)|; relative_faithfulness: F(C) / F(M);
    completeness: one point per K (every class, `n_random` random subsets, the greedy K);
    worst: the point with the largest completeness; minimality: one entry per member."""

    ablation: str
    metric: str
    f_model: Estimate
    f_circuit: Estimate
    faithfulness: Estimate
    relative_faithfulness: Estimate
    completeness: tuple[KnockoutPoint, ...]
    worst: KnockoutPoint | None
    minimality: tuple[MemberMinimality, ...]
    n_random: int
    seed: int
    forwards: int = 0
    naive_forwards: int = 0


@dataclass(frozen=True)
class StatTest:
    """One hypothesis test (Shi et al. 2024): `name` ("equivalence", "independence",
    "minimality"), what it asks, its statistic and p-value from `scheme` (the resampling
    scheme, in words), and pass / fail at `level`."""

    name: str
    question: str
    statistic: float
    p_value: float
    level: float
    passed: bool
    scheme: str
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ScrubClaim:
    """Causal scrubbing of one claim (or, kind "whole", of the whole hypothesis).

    kind: "whole" | "class" (a class's dependence) | "path" (a claimed path);
    loss_recovered: (L_random - L_scrubbed) / (L_random - L_model) in the convention of
    `Scrubbing.convention`; None when the claim could not be scrubbed (`note` says why, e.g.
    the task has no resampling variable for it); n_rows: prompts with a valid resample."""

    claim: str
    kind: str
    loss_recovered: Estimate | None
    m_scrubbed: float | None
    n_rows: int
    note: str = ""


@dataclass(frozen=True)
class Scrubbing:
    """Causal scrubbing (Chan et al. 2022): the convention, the unscrubbed model's and the
    fully resampled model's metric, and one entry per scrubbed claim (the whole first)."""

    convention: str
    m_model: float
    m_random: float
    claims: tuple[ScrubClaim, ...]
    seed: int
    forwards: int = 0


class ClaimStatus(StrEnum):
    SUPPORTED = "supported"
    FALSIFIED = "falsified"
    INCONCLUSIVE = "inconclusive"


@dataclass(frozen=True)
class ClaimVerdict:
    """One claim of the hypothesis, its status, the test that decided it and its number."""

    claim: str
    status: ClaimStatus
    test: str
    value: Estimate | None
    reason: str


@register
@dataclass(frozen=True)
class Verification(Result):
    """verification.json (the verify step): every test of the hypothesis and the verdicts."""

    FILE: ClassVar[str] = "verification.json"
    STEP: ClassVar[str] = "verify"

    provenance: dict[str, Any]
    hypothesis: dict[str, Any]  # source file, its sha256, task, model, classes, paths
    criteria: Criteria
    tests: tuple[StatTest, ...]
    scrubbing: Scrubbing | None
    checks: tuple[Check, ...]
    claims: tuple[ClaimVerdict, ...]
    verdict: str
    thresholds: dict[str, float]
    seconds: dict[str, float] = field(default_factory=dict)
