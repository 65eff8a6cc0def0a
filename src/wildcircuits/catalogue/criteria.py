"""The verified criteria applied to one finished cell's files; every failure is named.

`failed_criteria(files, criteria)` returns one `FailedCriterion` per unmet criterion (an empty
tuple: the cell is verified). A file the criterion needs that is missing fails it, saying so.
Names: `faithful`, `compact`, `edge_faithful`, `random_far_below`, `claim: <claim>`,
`red team: <check>` (the thresholds are `VerifiedCriteria`, docs/catalogue_guide.md). A required
claim fails when falsified and when it was never measured.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from wildcircuits.results.catalogue import FailedCriterion, VerifiedCriteria
from wildcircuits.results.explain import Explanation
from wildcircuits.results.metrics import Metrics
from wildcircuits.results.verdicts import Check, CheckVerdict, RedTeam
from wildcircuits.results.verify import ClaimStatus, Verification


@dataclass(frozen=True)
class CellFiles:
    """The parsed result files of one run folder the criteria read (None: missing)."""

    metrics: Metrics | None = None
    redteam: RedTeam | None = None
    verification: Verification | None = None
    explanation: Explanation | None = None


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _faithful(files: CellFiles, c: VerifiedCriteria) -> str | None:
    if files.verification is None:
        return "no verification.json (the verify step wrote none)"
    rel = files.verification.criteria.relative_faithfulness
    iv = rel.interval
    if not _finite(rel.value) or not (c.faithful_low <= rel.value <= c.faithful_high):
        return f"F(C) / F(M) = {rel.value:.3g}, not in [{c.faithful_low}, {c.faithful_high}]"
    if iv is None or not _finite(iv.low):
        return f"F(C) / F(M) = {rel.value:.3g} has no interval"
    if iv.low < c.interval_low:
        return f"F(C) / F(M) = {rel.value:.3g}, interval low {iv.low:.3g} < {c.interval_low}"
    return None


def _compact(files: CellFiles, c: VerifiedCriteria) -> str | None:
    if files.explanation is None:
        return "no explanation.json"
    circuit = files.explanation.circuit
    if not circuit.reached:
        return f"the compact circuit did not reach its target {circuit.target:.2f}"
    return None


def _edge_faithful(files: CellFiles, c: VerifiedCriteria) -> str | None:
    if files.metrics is None:
        return "no metrics.json"
    value = files.metrics.selected.faithfulness
    if not _finite(value) or value < c.edge_faithful_min:
        return f"held-out faithfulness {value:.3g} of the selected circuit < {c.edge_faithful_min}"
    return None


def _random(files: CellFiles, c: VerifiedCriteria) -> str | None:
    check = _find(_checks(files), "random_circuit")
    if check is None:
        return "no random_circuit check in redteam.json"
    n = check.numbers
    try:
        circuit, mean, std = float(n["circuit"]), float(n["random_mean"]), float(n["random_std"])
    except (KeyError, TypeError, ValueError):
        return "the random_circuit check lacks its numbers"
    if circuit - (mean + 2 * std) < c.random_margin:
        return (
            f"circuit {circuit:.3g} vs random {mean:.3g} +- {std:.3g}: margin over mean + 2 std "
            f"{circuit - mean - 2 * std:.3g} < {c.random_margin}"
        )
    return None


def _checks(files: CellFiles) -> list[Check]:
    out = list(files.redteam.checks) if files.redteam else []
    return out + (list(files.verification.checks) if files.verification else [])


def _find(checks: list[Check], name: str) -> Check | None:
    return next((k for k in checks if k.name == name), None)


def _claim_fails(files: CellFiles, verdict) -> str | None:
    """Why a required claim fails: falsified, or never measured (absent, or no finite value,
    e.g. a hypothesis too big to scrub or a task without resampling variables): an
    explanation counts as having survived a test only where the test ran."""
    if files.verification is None:
        return "no verification.json"
    if verdict is None:
        return "verification.json has no such claim (not tested)"
    if verdict.status is ClaimStatus.FALSIFIED:
        return verdict.reason
    if verdict.value is None or not _finite(verdict.value.value):
        return f"not measured: {verdict.reason}"
    return None


NAMED: tuple[tuple[str, Callable[[CellFiles, VerifiedCriteria], str | None]], ...] = (
    ("faithful", _faithful),
    ("compact", _compact),
    ("edge_faithful", _edge_faithful),
    ("random_far_below", _random),
)


def failed_criteria(files: CellFiles, criteria: VerifiedCriteria) -> tuple[FailedCriterion, ...]:
    """Every criterion the cell fails, by name, with the reason (empty: verified)."""
    out = [FailedCriterion(name, why) for name, rule in NAMED if (why := rule(files, criteria))]
    claims = {v.claim: v for v in files.verification.claims} if files.verification else {}
    for claim in criteria.claims_not_falsified:
        if (why := _claim_fails(files, claims.get(claim))) is not None:
            out.append(FailedCriterion(f"claim: {claim}", why))
    checks = _checks(files)
    for name in criteria.required_checks:
        if _find(checks, name) is None:
            out.append(FailedCriterion(f"red team: {name}", "the check is missing"))
    for check in checks:
        if check.verdict is not CheckVerdict.PASS and check.name not in criteria.exempt_checks:
            out.append(FailedCriterion(f"red team: {check.name}", check.evidence))
    return tuple(out)
