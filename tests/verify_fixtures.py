"""A hand-made verification.json for the report tests (every kind of knockout point, a claim
that could not be scrubbed, a hostile claim string), on `report_fixtures.synthetic_explanation`."""

from __future__ import annotations

from pathlib import Path

from tests.report_fixtures import HOSTILE_EVIDENCE, PROVENANCE, synthetic_explanation
from wildcircuits.results import explain as x
from wildcircuits.results import verify as v
from wildcircuits.results.verdicts import Check

HOSTILE_CLAIM = 'class <script>alert("claim")</script> & S-inhibition'


def _estimate(value: float, low: float | None = None, high: float | None = None) -> v.Estimate:
    if low is None:
        return v.Estimate(value)
    method = "paired percentile bootstrap over prompts"
    return v.Estimate(value, v.Interval(low, high, 0.95, 1000, method))


def _point(label: str, kind: str, members: tuple[x.Pair, ...], f_c: float, f_m: float):
    """A knockout point with +-0.1 intervals; completeness |F(C \\ K) - F(M \\ K)|."""
    gap = abs(f_c - f_m)
    return v.KnockoutPoint(
        label, kind, members, _estimate(f_c, f_c - 0.1, f_c + 0.1),
        _estimate(f_m, f_m - 0.1, f_m + 0.1), _estimate(gap, max(gap - 0.1, 0.0), gap + 0.1),
    )  # fmt: skip


def _criteria(explanation: x.Explanation) -> v.Criteria:
    """Every kind of point: the empty K, one per class, three random subsets, the greedy K."""
    classes = explanation.classes
    members = tuple(p for c in classes for p in c.members)
    points = [_point("K = {}", "empty", (), 2.1, 2.5)]
    points += [
        _point(f"K = {c.name}", "class", c.members, 1.9 - 0.4 * i, 2.2 - 0.3 * i)
        for i, c in enumerate(classes)
    ]
    points += [
        _point(f"random subset {k}", "random", members[k::3], 1.2 + 0.2 * k, 1.3 + 0.3 * k)
        for k in range(3)
    ]
    worst = _point("greedy K", "greedy", members[:2] + members[-1:], 0.3, 1.5)
    points.append(worst)
    minimality = tuple(
        v.MemberMinimality(p, members[:1], _estimate(0.4 - 0.05 * i, 0.3 - 0.05 * i, 0.5), i >= 4)
        for i, p in enumerate(members)
    )
    return v.Criteria(
        "mean:template", "logit_diff", _estimate(2.5, 2.3, 2.7), _estimate(2.1, 1.9, 2.3),
        _estimate(0.4, 0.2, 0.6), _estimate(0.84, 0.71, 0.92), tuple(points), worst, minimality,
        n_random=3, seed=0, forwards=120, naive_forwards=480,
    )  # fmt: skip


def _scrubbing() -> v.Scrubbing:
    """The whole hypothesis, classes and paths, one claim that could not be scrubbed."""
    claims = (
        v.ScrubClaim("the whole hypothesis", "whole", _estimate(0.78, 0.66, 0.88), 1.9, 60),
        v.ScrubClaim("class name mover", "class", _estimate(0.95, 0.9, 1.02), 2.4, 64),
        v.ScrubClaim(HOSTILE_CLAIM, "class", _estimate(-0.12, -0.3, 0.05), 0.2, 58),
        v.ScrubClaim("path S-inhibition -> name mover (q) at END", "path", _estimate(0.6), 1.6, 64),
        v.ScrubClaim("class duplicate token", "class", None, None, 0,
                     "not scrubbable: position other is not named by the task"),
    )  # fmt: skip
    return v.Scrubbing("causal scrubbing (Chan et al. 2022), synthetic", 2.5, 0.1, claims, 0, 40)


def _tests() -> tuple[v.StatTest, ...]:
    scheme = "paired permutation of prompts, 1000 draws"
    return (
        v.StatTest("equivalence", "Does the circuit do as well as the model?", 0.4, 0.31, 0.05,
                   True, scheme),
        v.StatTest("independence", "Is what the circuit leaves out irrelevant?", 2.7, 0.0004,
                   0.05, False, scheme, {"n": 64}),
        v.StatTest("minimality", "Is every member needed?", 0.1, 0.048, 0.05, True, scheme),
    )  # fmt: skip


def _claims() -> tuple[v.ClaimVerdict, ...]:
    status = v.ClaimStatus
    return (
        v.ClaimVerdict("class name mover", status.SUPPORTED, "causal scrubbing",
                       _estimate(0.95, 0.9, 1.02), "loss recovered >= 0.8"),
        v.ClaimVerdict(HOSTILE_CLAIM, status.FALSIFIED, "causal scrubbing",
                       _estimate(-0.12, -0.3, 0.05), "loss recovered < 0.5 & below 0"),
        v.ClaimVerdict("path S-inhibition -> name mover (q) at END", status.INCONCLUSIVE,
                       "causal scrubbing", _estimate(0.6), "between the thresholds, no interval"),
        v.ClaimVerdict("class duplicate token", status.INCONCLUSIVE, "causal scrubbing", None,
                       "not scrubbable: position other is not named by the task"),
        v.ClaimVerdict("the circuit is complete", status.FALSIFIED, "completeness",
                       _estimate(1.2, 1.1, 1.3), "greedy K: completeness 1.2 > 0.3"),
    )  # fmt: skip


VERDICT = "The explanation does not hold: 1 of 5 claims is supported and 2 are falsified."


def synthetic_verification() -> v.Verification:
    """A hand-made verification of `synthetic_explanation()`: every kind of knockout point, a
    claim that could not be scrubbed (None), a claim whose text carries `<script>` and `&`."""
    explanation = synthetic_explanation()
    checks = (
        Check.of("other_corruption", "Does it hold under another corruption?", True,
                 "faithfulness 0.81 under ABC", faithfulness=0.81),
        Check.of("held_out_templates", "Does it hold on held-out templates?", False,
                 HOSTILE_EVIDENCE, faithfulness=0.42),
        Check.of("simpler_story", "Does a simpler story do as well?", True,
                 "name movers alone: 0.35", faithfulness=0.35),
    )  # fmt: skip
    return v.Verification(
        provenance=PROVENANCE | {"ablation": "mean:template", "n_prompts": 64},
        hypothesis={"source": "hypothesis.yaml", "sha256": "0" * 64, "task": "ioi-hostile"},
        criteria=_criteria(explanation),
        tests=_tests(),
        scrubbing=_scrubbing(),
        checks=checks,
        claims=_claims(),
        verdict=VERDICT,
        thresholds={"supported_loss_recovered": 0.8, "falsified_loss_recovered": 0.5,
                    "completeness": 0.3, "minimality": 0.05, "test_level": 0.05},
        seconds={"criteria": 12.5, "scrubbing": 30.25},
    )  # fmt: skip


def write_verification(root: Path) -> v.Verification:
    """verification.json in a run folder, written by the result's own `save`."""
    verification = synthetic_verification()
    verification.save(root / v.Verification.FILE)
    return verification
