"""The verify step end to end: verdict rules on intervals, the planted induction model's true and
wrong hypotheses through `verify_inputs` (ground truth: the true one holds, each wrong one is
falsified by the test that should catch it), and the CLI's input boundary."""

from __future__ import annotations

import functools
from dataclasses import replace

import pytest

from tests.planted_models import planted_induction_model
from tests.scrub_fixtures import TRUE, WRONG, planted_pool, template_problem
from wildcircuits.cli.main import main
from wildcircuits.explanation.hypothesis import write_hypothesis
from wildcircuits.results.verify import ClaimStatus, Estimate, Interval, Verification
from wildcircuits.verification import redteam, verdicts
from wildcircuits.verification.run import VerifySettings, thresholds, verify_inputs

N = 96


def _estimate(value, low, high):
    return Estimate(value, Interval(low, high, 0.95, 100))


# verdict rules --------------------------------------------------------------------------------
def test_a_claim_is_decided_only_by_its_whole_interval():
    assert verdicts.at_least(_estimate(0.9, 0.85, 0.95), 0.8) is ClaimStatus.SUPPORTED
    assert verdicts.at_least(_estimate(0.5, 0.4, 0.7), 0.8) is ClaimStatus.FALSIFIED
    assert verdicts.at_least(_estimate(0.85, 0.7, 0.95), 0.8) is ClaimStatus.INCONCLUSIVE
    assert verdicts.at_most(_estimate(0.1, 0.05, 0.15), 0.2) is ClaimStatus.SUPPORTED
    assert verdicts.at_most(_estimate(0.3, 0.25, 0.4), 0.2) is ClaimStatus.FALSIFIED
    assert verdicts.at_most(_estimate(0.2, 0.1, 0.3), 0.2) is ClaimStatus.INCONCLUSIVE
    assert verdicts.within(_estimate(1.0, 0.9, 1.1), 0.8, 1.2) is ClaimStatus.SUPPORTED
    assert verdicts.within(_estimate(0.5, 0.4, 0.6), 0.8, 1.2) is ClaimStatus.FALSIFIED
    assert verdicts.within(_estimate(1.3, 1.25, 1.4), 0.8, 1.2) is ClaimStatus.FALSIFIED
    assert verdicts.within(_estimate(0.85, 0.7, 1.0), 0.8, 1.2) is ClaimStatus.INCONCLUSIVE
    assert verdicts.within(Estimate(float("nan")), 0.8, 1.2) is ClaimStatus.INCONCLUSIVE
    assert verdicts.at_least(Estimate(0.9), 0.8) is ClaimStatus.SUPPORTED  # no interval: itself


def test_share_and_format_keep_the_interval():
    shared = verdicts.share(_estimate(-2.0, -3.0, -1.0), -4.0)
    assert (shared.value, shared.interval.low, shared.interval.high) == (-0.5, -0.75, -0.25)
    assert verdicts.fmt(_estimate(0.834, 0.71, 0.92)) == "0.83 [0.71, 0.92]"
    assert verdicts.fmt(None) == "n/a" and verdicts.fmt(Estimate(1.0)) == "1.00"


def test_thresholds_are_stated_once_and_stored():
    stated = thresholds()
    assert stated["faithful_low"] == verdicts.FAITHFUL_LOW
    assert stated["scrub_min"] == verdicts.SCRUB_MIN
    assert (stated["band_low"], stated["band_high"]) == redteam.BAND
    assert all(isinstance(v, float | int) for v in stated.values())


# the planted model ------------------------------------------------------------------------------
class PlantedInputs:
    """The planted induction prompts (no task: the red team's simpler story only)."""

    max_n = None

    def problem(self, n: int):
        return template_problem(n)  # the pool's rows, one template per layout

    def pool(self, n: int):
        return planted_pool(n)

    def checks(self, engine, evaluator, hypothesis, f_model):
        return [redteam.simpler_story(evaluator, hypothesis)]


SETTINGS = VerifySettings(n=N, max_n=N, n_random=6, n_boot=200,
                          n_reference=60)  # fmt: skip


@functools.cache
def _verified(name: str) -> Verification:
    h = TRUE if name == "true" else WRONG[name]
    return verify_inputs(planted_induction_model(), PlantedInputs(), h, SETTINGS, progress=False)


def _status(result: Verification, claim: str) -> ClaimStatus:
    (found,) = [c for c in result.claims if c.claim == claim]
    return found.status


def test_the_true_planted_hypothesis_holds():
    result = _verified("true")
    assert _status(result, "the circuit is faithful") is ClaimStatus.SUPPORTED
    assert _status(result, "the circuit is complete") is ClaimStatus.SUPPORTED
    assert _status(result, "the whole hypothesis") is ClaimStatus.SUPPORTED
    assert _status(result, "member L1.H0@S2 is necessary") is ClaimStatus.SUPPORTED
    assert not [c for c in result.claims if c.status is ClaimStatus.FALSIFIED]
    assert result.verdict.startswith(("The explanation holds", "The explanation is not yet"))
    assert result.provenance["n_prompts"] == N and result.thresholds == thresholds(SETTINGS)
    assert set(result.seconds) >= {"criteria", "tests", "scrubbing", "checks", "total"}
    again = Verification.from_json(result.to_json())
    assert again == result


@pytest.mark.parametrize(
    ("name", "falsified"),
    [
        ("swapped", "the whole hypothesis"),
        ("dropped path", "the whole hypothesis"),
        ("wrong dependence", "class induction"),
    ],
)
def test_each_wrong_planted_hypothesis_is_falsified_by_the_test_that_catches_it(name, falsified):
    result = _verified(name)
    assert _status(result, falsified) is ClaimStatus.FALSIFIED
    assert falsified in result.verdict and "holds:" not in result.verdict


def test_a_swapped_member_is_caught_by_faithfulness_too():
    result = _verified("swapped")  # the real previous-token head is ablated
    assert _status(result, "the circuit is faithful") is ClaimStatus.FALSIFIED
    assert result.verdict.startswith("The explanation does not hold")


def test_the_same_seed_gives_the_same_verification():
    again = verify_inputs(planted_induction_model(), PlantedInputs(), TRUE, SETTINGS,
                          progress=False)  # fmt: skip
    first = _verified("true")
    assert again.claims == first.claims and again.criteria == first.criteria


GROWING = VerifySettings(n=8, max_n=32, max_width=0.0, n_random=2, greedy_steps=1,
                         minimality_steps=0, n_boot=50, n_reference=4, scrub=False,
                         checks=False, budget_forwards=10**9)  # fmt: skip


def _rounds(settings):
    result = verify_inputs(planted_induction_model(), PlantedInputs(), WRONG["swapped"], settings,
                           progress=False)  # fmt: skip
    return result.provenance["rounds"]


def test_wide_intervals_grow_the_prompts_within_the_budget():
    rounds = _rounds(GROWING)
    assert [r["n"] for r in rounds] == [8, 16, 32]
    first, second, _ = (r["token_forwards"] for r in rounds)
    assert 1.5 * first <= second <= 2.5 * first  # twice the prompts cost about twice as much
    assert [r["n"] for r in _rounds(replace(GROWING, budget_forwards=0))] == [8]
    # After a round, the prompts double while spent + twice that round fits the budget.
    just = first + second + 2 * second
    assert [r["n"] for r in _rounds(replace(GROWING, budget_forwards=just))] == [8, 16, 32]
    assert [r["n"] for r in _rounds(replace(GROWING, budget_forwards=just - 1))] == [8, 16]


def test_the_prompts_verified_on_do_not_depend_on_the_clock(monkeypatch):
    """The budget counts forward passes: a machine 10^6 times slower grows the same rounds."""
    from wildcircuits.verification import run

    quick = _rounds(GROWING)
    ticks = iter(range(0, 10**12, 10**6))
    monkeypatch.setattr(run.time, "perf_counter", lambda: float(next(ticks)))
    slow = _rounds(GROWING)
    assert [(r["n"], r["token_forwards"]) for r in slow] == [
        (r["n"], r["token_forwards"]) for r in quick
    ]
    assert slow[0]["seconds"] >= 10**6 > quick[0]["seconds"]


def test_a_member_at_a_position_the_prompts_lack_is_a_clear_error():
    from dataclasses import replace

    from wildcircuits.errors import InputError
    from wildcircuits.results.explain import Pair

    bad = replace(TRUE, unexplained=(Pair("L1.H1", "IO"),))
    with pytest.raises(InputError, match=r"IO.*edit the hypothesis file"):
        verify_inputs(planted_induction_model(), PlantedInputs(), bad, SETTINGS, progress=False)


# the CLI boundary -------------------------------------------------------------------------------
def test_verify_cli_refuses_bad_input_before_loading_a_model(tmp_path, capsys):
    path = write_hypothesis(tmp_path / "h.yaml", TRUE)
    assert main(["verify", str(path), "--task", "no-such-task", "--out", str(tmp_path / "o")]) == 2
    assert "no-such-task" in capsys.readouterr().err
    broken = tmp_path / "broken.yaml"
    broken.write_text("classes: [\n")
    assert main(["verify", str(broken), "--task", "ioi", "--out", str(tmp_path / "o")]) == 2
    assert "broken.yaml" in capsys.readouterr().err
    status = main(["verify", str(path), "--task", "ioi", "--n", "8", "--max-n", "4",
                   "--out", str(tmp_path / "o")])  # fmt: skip
    assert status == 2 and "--max-n" in capsys.readouterr().err


def test_discover_verify_settings_are_checked_before_any_work(tmp_path, capsys):
    from wildcircuits.errors import WildcircuitsError
    from wildcircuits.pipeline.config import DiscoverConfig
    from wildcircuits.pipeline.steps_verify import pipeline_settings

    with pytest.raises(WildcircuitsError, match=r"unknown setting\(s\) greedy.*valid settings"):
        DiscoverConfig(verify_settings={"greedy": 2})
    chosen = pipeline_settings(DiscoverConfig(n_heldout=24, verify_settings={"greedy_steps": 3}))
    assert (chosen.n, chosen.greedy_steps, chosen.minimality_steps) == (24, 3, 0)
    status = main(["discover", "ioi", "--out", str(tmp_path / "r"), "--verify-settings", "{oops"])
    assert status == 2 and "--verify-settings" in capsys.readouterr().err


def test_an_empty_hypothesis_is_a_clear_error():
    from dataclasses import replace

    from wildcircuits.errors import InputError

    empty = replace(TRUE, classes=(), paths=(), unexplained=())
    with pytest.raises(InputError, match="nothing to verify"):
        verify_inputs(planted_induction_model(), PlantedInputs(), empty, SETTINGS, progress=False)


def test_the_statistical_tests_reuse_the_sets_the_criteria_measured():
    from wildcircuits.explanation.pair_evaluator import PairEvaluator
    from wildcircuits.patching.edges import EdgeForward
    from wildcircuits.verification.criteria import criteria
    from wildcircuits.verification.stat_tests import run_stat_tests

    model = planted_induction_model()
    evaluator = PairEvaluator(EdgeForward(model), template_problem(32), "mean:template")
    rows: dict = {}
    criteria(evaluator, TRUE, n_random=2, greedy_steps=1, n_boot=0, progress=False, rows=rows)
    everything = frozenset(evaluator.space.all_pairs())
    assert everything in rows and frozenset(TRUE.pairs()) in rows
    shared = run_stat_tests(evaluator, TRUE.pairs(), n_reference=30, known=rows)
    fresh = run_stat_tests(evaluator, TRUE.pairs(), n_reference=30)
    for a, b in zip(shared, fresh, strict=True):
        assert (a.statistic, a.p_value, a.passed) == (b.statistic, b.p_value, b.passed)
    # M and C plus each C \ {v} came from the criteria: 2 + 5 fewer circuits on every chunk
    saved = fresh[0].numbers["forwards"] - shared[0].numbers["forwards"]
    assert saved == len(evaluator.chunks) * (2 + len(TRUE.pairs()))
