"""One verdict per claim of a hypothesis, and the sentence the report opens with.

Every claim is decided by one test against one threshold, all stated here once (`THRESHOLDS`,
stored in verification.json) and never changed for one run. A number with an interval is
compared as a whole interval: the claim is **supported** when the whole interval lies on the
good side of the threshold, **falsified** when the whole interval lies on the bad side, and
**inconclusive** when the interval straddles it (more prompts would decide it; the verify step
grows the number of prompts where an interval is too wide, within its budget of forward passes).

The claims and the test that decides each:
- the circuit is faithful: F(C) / F(M) (mean ablation per template) within
  [FAITHFUL_LOW, FAITHFUL_HIGH];
- the circuit is complete: the worst completeness found (|F(C \\ K) - F(M \\ K)| over every
  class, the random subsets and the greedy K), as a share of |F(M)|, at most COMPLETE_MAX;
- each member is necessary: its minimality as a share of |F(M)| at least
  criteria.MINIMALITY_FLAG (a member below it is possibly unnecessary);
- the whole hypothesis, each class's dependence and each claimed path: causal scrubbing's loss
  recovered at least SCRUB_MIN;
- Shi et al.'s equivalence and minimality tests: supported when they pass, inconclusive when
  they do not (a test that fails to reject is no evidence against the claim); the independence
  test: falsified when it rejects independence, supported otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from wildcircuits.report.verify_figures import estimate_text as fmt
from wildcircuits.results.verify import (
    ClaimStatus,
    ClaimVerdict,
    Criteria,
    Estimate,
    Scrubbing,
    StatTest,
)

#: F(C) / F(M) must lie in this band for the circuit to be faithful.
FAITHFUL_LOW, FAITHFUL_HIGH = 0.8, 1.2
#: The worst completeness, as a share of |F(M)|, may be at most this.
COMPLETE_MAX = 0.2
#: Causal scrubbing must recover at least this share of the loss.
SCRUB_MIN = 0.8

THRESHOLDS = {
    "faithful_low": FAITHFUL_LOW,
    "faithful_high": FAITHFUL_HIGH,
    "complete_max": COMPLETE_MAX,
    "scrub_min": SCRUB_MIN,
}


def _bounds(estimate: Estimate) -> tuple[float, float]:
    iv = estimate.interval
    if iv is None or not (math.isfinite(iv.low) and math.isfinite(iv.high)):
        return estimate.value, estimate.value
    return iv.low, iv.high


def within(estimate: Estimate, low: float = -math.inf, high: float = math.inf) -> ClaimStatus:
    """The one decision rule: supported when the interval lies inside [low, high], falsified
    when it lies wholly outside it, else inconclusive (a value without an interval is its own
    interval; a value that is not finite is inconclusive)."""
    a, b = _bounds(estimate)
    if not math.isfinite(estimate.value):
        return ClaimStatus.INCONCLUSIVE
    if low <= a and b <= high:
        return ClaimStatus.SUPPORTED
    if b < low or a > high:
        return ClaimStatus.FALSIFIED
    return ClaimStatus.INCONCLUSIVE


def at_least(estimate: Estimate, threshold: float) -> ClaimStatus:
    return within(estimate, low=threshold)


def at_most(estimate: Estimate, threshold: float) -> ClaimStatus:
    return within(estimate, high=threshold)


def share(estimate: Estimate, scale: float) -> Estimate:
    """The estimate as a share of |scale| (e.g. a completeness over |F(M)|)."""
    if not scale:
        return Estimate(float("nan"))
    iv, factor = estimate.interval, 1.0 / abs(scale)
    if iv is None:
        return Estimate(estimate.value * factor)
    scaled = replace(iv, low=iv.low * factor, high=iv.high * factor)
    return Estimate(estimate.value * factor, scaled)


# the claims -----------------------------------------------------------------------------------
def criteria_claims(criteria: Criteria, minimality_flag: float) -> list[ClaimVerdict]:
    f_model = criteria.f_model.value
    rel = criteria.relative_faithfulness
    out = [
        ClaimVerdict(
            "the circuit is faithful",
            within(rel, FAITHFUL_LOW, FAITHFUL_HIGH),
            "faithfulness F(C) / F(M)",
            rel,
            f"F(C) / F(M) = {fmt(rel)} ({criteria.ablation}); supported inside "
            f"[{FAITHFUL_LOW}, {FAITHFUL_HIGH}]",
        )
    ]
    if criteria.worst is not None:
        worst = share(criteria.worst.completeness, f_model)
        out.append(
            ClaimVerdict(
                "the circuit is complete",
                at_most(worst, COMPLETE_MAX),
                f"completeness, worst {_k(criteria.worst.label)}",
                worst,
                f"|F(C\\K) - F(M\\K)| / |F(M)| = {fmt(worst)} for {_k(criteria.worst.label)} "
                f"(worst of {len(criteria.completeness)} sets); supported at most {COMPLETE_MAX}",
            )
        )
    for member in criteria.minimality:
        value = share(member.value, f_model)
        out.append(
            ClaimVerdict(
                f"member {member.pair.name} is necessary",
                at_least(value, minimality_flag),
                "minimality",
                value,
                f"|F(C\\(K+v)) - F(C\\K)| / |F(M)| = {fmt(value, 3)} with K = "
                f"{_names(member.knocked_out)}; supported at least {minimality_flag}",
            )
        )
    return out


def _k(label: str) -> str:
    return label if label.startswith("K") else f"K = {label}"


def _names(pairs) -> str:
    return "{" + ", ".join(p.name for p in pairs) + "}"


def scrub_claims(scrubbing: Scrubbing | None) -> list[ClaimVerdict]:
    if scrubbing is None:
        return []
    out = []
    for claim in scrubbing.claims:
        if claim.loss_recovered is None:
            status, reason = ClaimStatus.INCONCLUSIVE, claim.note or "not scrubbable"
        else:
            status = at_least(claim.loss_recovered, SCRUB_MIN)
            reason = (
                f"loss recovered {fmt(claim.loss_recovered)} on {claim.n_rows} prompts; "
                f"supported at least {SCRUB_MIN}" + (f" ({claim.note})" if claim.note else "")
            )
        out.append(ClaimVerdict(claim.claim, status, "causal scrubbing", claim.loss_recovered,
                                reason))  # fmt: skip
    return out


def test_claims(tests: Sequence[StatTest]) -> list[ClaimVerdict]:
    out = []
    for test in tests:
        if test.name == "independence":
            status = ClaimStatus.SUPPORTED if test.passed else ClaimStatus.FALSIFIED
        else:
            status = ClaimStatus.SUPPORTED if test.passed else ClaimStatus.INCONCLUSIVE
        reason = (
            f"{test.question} statistic {test.statistic:.3g}, p = {test.p_value:.3g} at level "
            f"{test.level}: {'pass' if test.passed else 'fail'}"
        )
        out.append(ClaimVerdict(f"{test.name} (Shi et al. 2024)", status, f"{test.name} test",
                                Estimate(test.p_value), reason))  # fmt: skip
    return out


#: The order falsified claims are named in: the hypothesis as a whole first, members last.
_FIRST = ("the whole hypothesis", "the circuit is faithful", "the circuit is complete", "class ",
          "path ", "logits")  # fmt: skip


def _rank(claim: str) -> int:
    return next((i for i, p in enumerate(_FIRST) if claim.startswith(p)), len(_FIRST))


def verdict_sentence(claims: Sequence[ClaimVerdict], warnings: Sequence[str] = ()) -> str:
    """`The explanation holds: ...` / `... partly holds` / `... does not hold`, with counts and
    the first three falsified claims named (the whole hypothesis, faithfulness, completeness,
    classes and paths before members and tests); red-team warnings appended."""
    counts = {s: sum(c.status is s for c in claims) for s in ClaimStatus}
    falsified = sorted((c.claim for c in claims if c.status is ClaimStatus.FALSIFIED), key=_rank)
    n = len(claims)
    if n and counts[ClaimStatus.SUPPORTED] == n:
        head = f"The explanation holds: all {n} claims are supported"
    elif not falsified:
        head = (
            f"The explanation is not yet decided: {counts[ClaimStatus.SUPPORTED]} of {n} claims "
            f"supported, {counts[ClaimStatus.INCONCLUSIVE]} inconclusive, none falsified"
        )
    else:
        core = {"the circuit is faithful", "the whole hypothesis"}
        word = "does not hold" if core & set(falsified) else "partly holds"
        more = f" and {len(falsified) - 3} more" if len(falsified) > 3 else ""
        named = ", ".join(falsified[:3]) + more
        head = (
            f"The explanation {word}: {counts[ClaimStatus.SUPPORTED]} of {n} claims supported, "
            f"{len(falsified)} falsified ({named}), {counts[ClaimStatus.INCONCLUSIVE]} "
            "inconclusive"
        )
    if warnings:
        head += f"; the red team warns on {', '.join(warnings)}"
    return head + "."
