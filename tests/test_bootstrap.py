"""The shared bootstrap (evaluation/bootstrap.py) and the per-row metrics it resamples
(PairEvaluator.row_metrics)."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from tests.discovery_fixtures import tiny_problem
from tests.tiny_models import tiny_model
from wildcircuits.errors import WildcircuitsError
from wildcircuits.evaluation.bootstrap import (
    METHOD,
    bootstrap,
    percentile_interval,
    resample_rows,
)
from wildcircuits.explanation.pair_evaluator import PairEvaluator
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.results.explain import Pair


def _mean0(rows: torch.Tensor) -> float:
    return float(rows[0].mean())


def test_resample_rows_is_seeded_and_in_range():
    first, again = resample_rows(7, 50, seed=3), resample_rows(7, 50, seed=3)
    assert first.shape == (50, 7) and first.dtype == torch.long
    assert torch.equal(first, again)
    assert not torch.equal(first, resample_rows(7, 50, seed=4))
    assert int(first.min()) >= 0 and int(first.max()) <= 6
    with pytest.raises(WildcircuitsError, match="at least one row"):
        resample_rows(0, 10, seed=0)


def test_bootstrap_interval_of_a_mean_matches_the_normal_theory_width():
    # 400 draws of N(2, 1): the 95% interval of the mean is about 2 +- 1.96 / sqrt(400)
    generator = torch.Generator().manual_seed(0)
    data = 2.0 + torch.randn(1, 400, generator=generator, dtype=torch.float64)
    estimate = bootstrap(data, _mean0, n_boot=2000, seed=1)
    interval = estimate.interval
    assert estimate.value == pytest.approx(float(data.mean()))
    assert interval.low < estimate.value < interval.high
    expected = 2 * 1.96 * float(data.std()) / math.sqrt(400)
    assert interval.width == pytest.approx(expected, rel=0.15)
    assert interval.level == 0.95 and interval.n_boot == 2000 and interval.method == METHOD


def test_bootstrap_coverage_of_the_true_mean_is_near_the_level():
    generator = torch.Generator().manual_seed(5)
    covered = 0
    for trial in range(100):
        data = torch.randn(1, 60, generator=generator, dtype=torch.float64)
        interval = bootstrap(data, _mean0, n_boot=300, seed=trial).interval
        covered += interval.low <= 0.0 <= interval.high
    assert 85 <= covered <= 100  # 95% nominal; percentile intervals run a little short at n=60


def test_bootstrap_is_paired_across_rows():
    # two rows that differ by a constant: their difference has a zero-width interval only if
    # both rows are resampled with the same columns
    base = torch.randn(1, 30, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    rows = torch.cat([base, base + 0.5])
    estimate = bootstrap(rows, lambda r: float(r[1].mean() - r[0].mean()), n_boot=200)
    assert estimate.value == pytest.approx(0.5)
    assert (estimate.interval.low, estimate.interval.high) == pytest.approx((0.5, 0.5))
    one = bootstrap(rows, _mean0, n_boot=200, seed=9)
    assert bootstrap(rows, _mean0, n_boot=200, seed=9) == one  # deterministic for a seed
    assert bootstrap(rows, _mean0, n_boot=200, seed=10) != one


def test_bootstrap_without_resamples_and_bad_input():
    rows = torch.ones(2, 5, dtype=torch.float64)
    assert bootstrap(rows, _mean0, n_boot=0).interval is None
    with pytest.raises(WildcircuitsError, match=r"\(k, batch\)"):
        bootstrap(torch.ones(5), _mean0)
    with pytest.raises(WildcircuitsError, match="level"):
        bootstrap(rows, _mean0, level=95)


def test_non_finite_resamples_are_left_out_and_counted():
    values = torch.tensor([1.0, 2.0, float("inf"), 3.0, float("nan")])
    interval = percentile_interval(values, level=0.5)
    assert interval.n_boot == 5 and "2 of 5 resamples not finite" in interval.method
    assert (interval.low, interval.high) == pytest.approx((1.5, 2.5))


# per-row metrics ---------------------------------------------------------------------------------
def _named(problem):
    named = {"END": problem.positions, "S1": torch.tensor([1, 1, 3]), "IO": torch.tensor([0, 2, 2])}
    return replace(problem, named_positions=named, groups=torch.tensor([0, 1, 0]))


def test_row_metrics_mean_is_metrics_and_stacked_equals_one_at_a_time():
    model = tiny_model("gemma3_text")
    problem = _named(tiny_problem(model))
    evaluator = PairEvaluator(EdgeForward(model), problem, "mean:template", batch_size=2)
    pairs = evaluator.space.all_pairs()
    circuits = [None, (), pairs[:3], pairs[3:9], (Pair("L1.H0", "END"),), pairs]
    rows = evaluator.row_metrics(circuits)
    assert rows.shape == (len(circuits), problem.batch) and rows.dtype == torch.float64
    assert rows.mean(1).tolist() == pytest.approx(evaluator.metrics(circuits), abs=1e-12)
    apart = torch.cat([evaluator.row_metrics([c]) for c in circuits])
    torch.testing.assert_close(rows, apart, atol=1e-5, rtol=1e-5)
    # every pair kept is the clean run; full and None agree row by row
    clean = problem.score(EdgeForward(model).run(problem.clean, problem.positions).logits)
    torch.testing.assert_close(rows[0], clean.double().cpu(), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rows[-1], rows[0], atol=1e-5, rtol=1e-5)
    assert rows[0, 0] != rows[1, 0]  # the empty circuit is different from the clean run
