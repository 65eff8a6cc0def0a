"""The statistical tests of Shi et al. 2024: pure functions on synthetic scores with known
answers, exact binomial tails against brute force, and run_stat_tests on the planted induction
model (tests/planted_models.py) against its ground truth and a one-circuit-at-a-time reference."""

from __future__ import annotations

import functools
import math
from dataclasses import replace
from fractions import Fraction

import pytest
import torch

from tests.planted_models import induction_problem, planted_induction_model
from tests.scrub_fixtures import EVERY, INDUCTION
from wildcircuits.errors import WildcircuitsError
from wildcircuits.explanation.pair_evaluator import PairEvaluator
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.results.explain import Pair
from wildcircuits.verification.stat_tests import (
    binomial_tail,
    equivalence_test,
    holm,
    independence_test,
    minimality_test,
    run_stat_tests,
    stat_plan,
    stat_tests_from_rows,
)

TRUE_PAIRS = (*(Pair("L0.H0", p) for p in EVERY), *INDUCTION)
# under mean ablation L0.H0's output at S1 and at the other tokens need only not match the
# induction query, which its mean does not either: removing either changes nothing at all
CORE = (Pair("L0.H0", "S1+1"), Pair("L0.H0", "S2"), *INDUCTION)
DEAD = Pair("L0.H1", "S2")
N_PROMPTS = 128


def _scores(n: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# binomial tails and Holm -------------------------------------------------------------------------
def _exact_tail(k: int, n: int, p: Fraction, upper: bool) -> float:
    ks = range(k, n + 1) if upper else range(0, k + 1)
    return float(sum(math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in ks))


@pytest.mark.parametrize("n", [1, 7, 30, 151])
@pytest.mark.parametrize("p", [Fraction(1, 10), Fraction(2, 5), Fraction(3, 5), Fraction(9, 10)])
def test_binomial_tail_equals_the_brute_force_sum_in_rational_arithmetic(n, p):
    for k in sorted({0, 1, n // 3, n // 2, n - 1, n}):
        for upper in (True, False):
            exact = _exact_tail(k, n, p, upper)
            got = binomial_tail(k, n, float(p), upper)
            assert got == pytest.approx(exact, rel=1e-9, abs=1e-300), (k, n, p, upper)


def test_binomial_tail_matches_simulation_and_survives_large_n():
    torch.manual_seed(0)
    draws = torch.distributions.Binomial(400, torch.tensor(0.6)).sample((200_000,))
    for k in (220, 240, 255):
        simulated = float((draws >= k).double().mean())
        sd = math.sqrt(simulated * (1 - simulated) / draws.numel())
        assert abs(binomial_tail(k, 400, 0.6, upper=True) - simulated) < 4 * sd + 1e-4
    # n = 20000: math.comb would overflow a float; the two tails still add to one
    low, high = binomial_tail(10_050, 20_000, 0.5, False), binomial_tail(10_051, 20_000, 0.5, True)
    assert low + high == pytest.approx(1.0, abs=1e-12) and 0.7 < low < 0.8


def test_holm_against_a_hand_computation():
    # sorted 0.005, 0.01, 0.03, 0.04 scaled by 4, 3, 2, 1: 0.02, 0.03, 0.06, 0.04 -> running max
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])
    assert holm([]) == []


# equivalence -------------------------------------------------------------------------------------
def test_equivalence_passes_for_tiny_symmetric_noise_with_400_prompts():
    model = _scores(400)
    test = equivalence_test(model, model + 1e-2 * _scores(400, seed=1))
    assert test.passed and test.p_value < 0.05
    assert abs(test.statistic - 0.5) < 0.1
    # the p-value is the larger one-sided exact tail, by brute force on the observed wins
    wins = test.numbers["wins"]
    assert test.numbers["ties"] == 0
    above = _exact_tail(wins, 400, Fraction(3, 5), upper=False)
    below = _exact_tail(wins, 400, Fraction(2, 5), upper=True)
    assert test.p_value == pytest.approx(max(above, below), rel=1e-9)


def test_equivalence_fails_for_a_circuit_always_worse_and_always_better():
    model = _scores(400)
    worse = equivalence_test(model, model - 1)
    assert not worse.passed and worse.statistic == 0.0 and worse.p_value == pytest.approx(1.0)
    assert worse.numbers["losses"] == 400
    assert worse.numbers["non_equivalence_p_value"] < 1e-12  # Shi et al.'s test rejects too
    better = equivalence_test(model, model + 0.5)
    assert not better.passed and better.statistic == 1.0


def test_equivalence_is_inconclusive_with_five_prompts_even_for_the_model_itself():
    model = _scores(5)
    for circuit in (model.clone(), model + 1e-3 * _scores(5, seed=1)):
        test = equivalence_test(model, circuit)
        assert not test.passed and test.p_value > 0.05
        # Shi et al.'s framing (equivalence the null) would pass it: p = 1 at K = n / 2
    assert equivalence_test(model, model.clone()).numbers["non_equivalence_p_value"] == 1.0


def test_identical_scores_are_ties_credited_half():
    model = _scores(400)
    test = equivalence_test(model, model.clone())
    assert test.numbers["ties"] == 400 and test.statistic == 0.5 and test.passed


# independence ------------------------------------------------------------------------------------
def _slow_hsic(x: torch.Tensor, y: torch.Tensor) -> float:
    n = len(x)

    def gram(v):
        distances = sorted(abs(float(v[i] - v[j])) for i in range(n) for j in range(i + 1, n))
        sigma = distances[(len(distances) - 1) // 2]  # torch's median: the lower middle one
        return [[math.exp(-float(v[i] - v[j]) ** 2 / (2 * sigma**2)) for j in range(n)]
                for i in range(n)]  # fmt: skip

    k, m = gram(x), gram(y)
    h = [[(i == j) - 1 / n for j in range(n)] for i in range(n)]
    mul = lambda a, b: [[sum(a[i][t] * b[t][j] for t in range(n)) for j in range(n)]  # noqa: E731
                        for i in range(n)]  # fmt: skip
    product = mul(mul(mul(k, h), m), h)
    return sum(product[i][i] for i in range(n)) / n**2


def test_hsic_statistic_equals_the_textbook_trace_formula():
    x, y = _scores(9), _scores(9, seed=1) + _scores(9) ** 2
    test = independence_test(x, y, n_perm=10)
    assert test.statistic == pytest.approx(_slow_hsic(x, y), rel=1e-10)


def test_independence_rejects_at_about_the_level_under_true_independence():
    rejections = sum(
        not independence_test(_scores(60, 2 * s), _scores(60, 2 * s + 1), n_perm=200, seed=s).passed
        for s in range(50)
    )
    assert rejections <= 7  # 0.15 x 50; expected 2.5


def test_independence_rejects_a_nonlinear_dependence_a_correlation_misses():
    x = _scores(100)
    y = x**2 + 0.05 * _scores(100, seed=1)
    assert abs(float(torch.corrcoef(torch.stack([x, y]))[0, 1])) < 0.2
    test = independence_test(x, y, n_perm=500)
    assert not test.passed and test.p_value == pytest.approx(1 / 501)


def test_independence_is_seeded_and_a_constant_score_is_independent():
    x, y = _scores(50), _scores(50, seed=1)
    assert independence_test(x, y, seed=3) == independence_test(x, y, seed=3)
    assert independence_test(x, y, seed=3).p_value != independence_test(x, y, seed=4).p_value
    constant = independence_test(x, torch.full((50,), 2.0, dtype=torch.float64), n_perm=50)
    assert constant.passed and constant.p_value == 1.0 and abs(constant.statistic) < 1e-12


# minimality --------------------------------------------------------------------------------------
def _minimality_rows(member_shifts, n_ref: int = 100, batch: int = 50):
    circuit = _scores(batch)
    without = torch.stack([circuit + s * _scores(batch, seed=i + 1)
                           for i, s in enumerate(member_shifts)])  # fmt: skip
    reference = circuit + 0.01 * torch.stack([_scores(batch, seed=100 + j) for j in range(n_ref)])
    return circuit, without, reference


def test_minimality_passes_when_every_member_outweighs_the_random_pairs():
    circuit, without, reference = _minimality_rows([1.0, 2.0, 0.5])
    test = minimality_test(circuit, without, reference, ["a", "b", "c"])
    assert test.passed and test.numbers["failing"] == []
    assert test.numbers["beats"] == [100, 100, 100]
    assert test.p_value == pytest.approx(3 * 0.9**100)  # Holm over three equal p-values
    assert (
        test.numbers["effects"][1]
        > test.numbers["effects"][0]
        > max(test.numbers["reference_effects"])
    )


def test_minimality_fails_naming_the_member_with_no_effect():
    circuit, without, reference = _minimality_rows([1.0, 1e-4, 0.5])
    test = minimality_test(circuit, without, reference, ["a", "dead", "c"])
    assert not test.passed and test.numbers["failing"] == ["dead"]
    assert test.numbers["beats"][1] == 0 and test.numbers["p_holm"][1] == 1.0


def test_minimality_cannot_pass_with_too_few_references():
    circuit, without, reference = _minimality_rows([1.0], n_ref=20)
    test = minimality_test(circuit, without, reference, ["a"])
    assert test.numbers["beats"] == [20] and not test.passed  # 0.9^20 = 0.12 > 0.05
    assert test.numbers["best_possible_p"] == pytest.approx(0.9**20)


def test_bad_inputs_raise_naming_the_problem():
    x = _scores(10)
    with pytest.raises(WildcircuitsError, match="different batches"):
        equivalence_test(x, _scores(9))
    with pytest.raises(WildcircuitsError, match="at least 2"):
        independence_test(x[:1], x[:1])
    with pytest.raises(WildcircuitsError, match=r"\(batch,\)"):
        equivalence_test(x[None], x[None])
    with pytest.raises(WildcircuitsError, match="non-empty circuit"):
        minimality_test(x, x[None][:0], x[None], [])
    with pytest.raises(WildcircuitsError, match="epsilon"):
        equivalence_test(x, x, epsilon=0.5)


# the planted induction model ---------------------------------------------------------------------
@functools.cache
def _evaluator() -> PairEvaluator:
    """Mean ablation per template, a template = the S1 index (rows with one S1 index share a
    layout: tests/scrub_fixtures.py); the planted problem carries no groups of its own."""
    problem = induction_problem(N_PROMPTS)
    problem = replace(problem, groups=problem.named_positions["S1"].clone())
    return PairEvaluator(EdgeForward(planted_induction_model()), problem, "mean:template", 32)


@functools.cache
def _run(circuit: tuple[Pair, ...], seed: int = 0):
    return run_stat_tests(_evaluator(), circuit, seed=seed, n_perm=300)


def test_planted_true_hypothesis_is_equivalent_and_flags_the_zero_effect_pairs():
    equivalence, independence, minimality = _run(TRUE_PAIRS)
    # dead heads and MLPs ablated to their (zero) mean change nothing: every prompt ties
    assert equivalence.passed and equivalence.numbers["ties"] == N_PROMPTS
    assert 0.0 < independence.p_value <= 1.0  # measured 0.43 (n_perm 300): not asserted
    assert not minimality.passed
    assert set(minimality.numbers["failing"]) == {"L0.H0@S1", "L0.H0@other"}
    by_member = dict(zip(minimality.numbers["members"], minimality.numbers["effects"],
                         strict=True))  # fmt: skip
    assert by_member["L0.H0@S1"] == 0.0 and by_member["L1.H0@S2"] > 100
    assert max(minimality.numbers["reference_effects"]) < 1e-8  # every complement pair is inert


def test_planted_core_passes_and_a_dead_head_added_to_it_is_named():
    equivalence, _, minimality = _run(CORE)
    assert equivalence.passed and minimality.passed
    _, _, padded = _run((*CORE, DEAD))
    assert not padded.passed and padded.numbers["failing"] == [DEAD.name]


def test_planted_dead_head_alone_fails_all_three():
    """C = {a dead head}: C is the empty circuit (always worse than the model), M \\ C is the
    model itself (its score is the model's: fully dependent), and the head does nothing."""
    equivalence, independence, minimality = _run((DEAD,))
    assert not equivalence.passed and equivalence.numbers["losses"] == N_PROMPTS
    assert not independence.passed and independence.p_value == pytest.approx(1 / 301)
    assert not minimality.passed and minimality.numbers["failing"] == [DEAD.name]


def test_planted_forwards_count_and_determinism():
    tests = _run(CORE)
    plan = stat_plan(_evaluator(), CORE, 100, 0)
    n_circuits = 3 + len(CORE) + len(plan.distinct)
    assert all(t.numbers["circuits"] == n_circuits for t in tests)
    assert all(t.numbers["forwards"] == n_circuits * N_PROMPTS // 32 for t in tests)
    assert len(plan.distinct) < 100 and len(plan.references) == 100  # repeats evaluated once
    assert run_stat_tests(_evaluator(), CORE, n_perm=300) == tests
    other = stat_plan(_evaluator(), CORE, 100, 1)
    assert other.references != plan.references


def test_run_stat_tests_equals_one_circuit_at_a_time():
    evaluator, circuit = _evaluator(), (*CORE, DEAD)
    plan = stat_plan(evaluator, circuit, 100, 0)
    together = evaluator.row_metrics(plan.circuits())
    apart = torch.cat([evaluator.row_metrics([c]) for c in plan.circuits()])
    torch.testing.assert_close(together, apart, rtol=0, atol=1e-9)
    slow = stat_tests_from_rows(plan, apart, n_perm=300, level=0.05, seed=0, forwards=0)
    fast = _run(circuit)
    for a, b in zip(slow, fast, strict=True):
        assert replace(a, numbers={}) == replace(b, numbers={})
        assert {k: v for k, v in a.numbers.items() if k != "forwards"} == {
            k: v for k, v in b.numbers.items() if k != "forwards"
        }


def test_planted_bad_circuits_raise():
    with pytest.raises(WildcircuitsError, match="empty circuit"):
        run_stat_tests(_evaluator(), ())
    with pytest.raises(WildcircuitsError, match="not pairs of this problem"):
        run_stat_tests(_evaluator(), (Pair("L0.H0", "END"),))
