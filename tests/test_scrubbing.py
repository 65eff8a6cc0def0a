"""Causal scrubbing on the planted induction model: ground truth, invariants, determinism."""

from __future__ import annotations

import functools

import pytest

from tests.planted_models import planted_induction_model
from tests.scrub_fixtures import BRIEF, ONE_UNIT, TRUE, WRONG, planted_pool
from wildcircuits.explanation.hypothesis import Hypothesis
from wildcircuits.verification.scrubbing import scrub

N_BOOT = 200


@functools.cache
def _scrub(name: str, seed: int = 0):
    h = {"true": TRUE, "brief": BRIEF, "one unit": ONE_UNIT, **WRONG}[name]
    return scrub(planted_induction_model(), planted_pool(), h, seed=seed, n_boot=N_BOOT,
                 progress=False)  # fmt: skip


def _lr(result, claim: str) -> float:
    return next(c for c in result.claims if c.claim == claim).loss_recovered.value


def test_the_true_hypothesis_scrubs_to_at_least_0_9_and_every_claim_holds():
    result = _scrub("true")
    assert result.m_model > result.m_random + 5
    for claim in result.claims:
        assert claim.loss_recovered.value >= 0.9, claim
        assert claim.n_rows == planted_pool().n_rows


def test_a_class_whose_members_compose_keeps_its_composition():
    """The previous-token and induction heads claimed as one class: the induction head's key
    reads the previous-token head inside the class run, so nothing is lost (were the members
    cut apart, the key would come from x_rand and the class would recover about nothing)."""
    result = _scrub("one unit")
    for claim in result.claims:
        assert claim.loss_recovered.value >= 0.9, claim


@pytest.mark.parametrize(
    ("name", "broken"),
    [
        ("swapped", "class induction"),
        ("dropped path", "class induction"),
        ("wrong dependence", "class induction"),
        ("previous depends on S1+1", "class previous token"),
        ("brief", "class induction"),
    ],
)
def test_wrong_hypotheses_scrub_low_and_the_claim_alone_that_breaks_is_named(name, broken):
    result = _scrub(name)
    assert _lr(result, "the whole hypothesis") < 0.5
    assert _lr(result, broken) < 0.5
    assert _lr(result, "logits") >= 0.9  # the logits do read only the induction head


def test_resampling_everything_gives_zero():
    empty = Hypothesis("planted induction", "planted-induction", ())
    result = scrub(planted_induction_model(), planted_pool(), empty, n_boot=0, progress=False)
    assert abs(_lr(result, "the whole hypothesis")) < 1e-6


def test_same_seed_same_numbers_and_another_seed_other_resamples():
    again = scrub(planted_induction_model(), planted_pool(), WRONG["swapped"], n_boot=N_BOOT,
                  progress=False)  # fmt: skip
    assert again == _scrub("swapped")
    other = _scrub("swapped", seed=1)
    assert other.m_random != again.m_random
