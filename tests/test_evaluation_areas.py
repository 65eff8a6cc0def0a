"""CPR / CMD / log area / smallest-faithful-circuit on synthetic curves with hand-computed areas."""

from __future__ import annotations

import math

import pytest

from wildcircuits.errors import WildcircuitsError
from wildcircuits.evaluation import (
    ALL_FRACTIONS,
    LOG_FRACTIONS,
    MIB_FRACTIONS,
    FaithfulnessCurve,
    cmd,
    cpr,
    edges_at,
    log_area,
    smallest_faithful,
    trapezoid,
)
from wildcircuits.graph.build import Ranking


def curve(fractions, faithfulness, ranking=Ranking.SIGNED, n_total=10_000) -> FaithfulnessCurve:
    return FaithfulnessCurve(
        fractions=tuple(fractions),
        n_edges=tuple(int(k * n_total) for k in fractions),
        faithfulness=tuple(faithfulness),
        metric=tuple(faithfulness),
        m_full=1.0,
        m_empty=0.0,
        m_corrupted=0.0,
        ordering=ranking,
        ablation="counterfactual",
        n_total_edges=n_total,
    )


def test_grids():
    assert MIB_FRACTIONS == (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0)
    assert len(LOG_FRACTIONS) == 20
    assert LOG_FRACTIONS[0] == pytest.approx(1e-4) and LOG_FRACTIONS[-1] == pytest.approx(0.1)
    ratios = [b / a for a, b in zip(LOG_FRACTIONS, LOG_FRACTIONS[1:], strict=False)]
    assert all(r == pytest.approx(10 ** (3 / 19)) for r in ratios)
    assert list(ALL_FRACTIONS) == sorted(set(MIB_FRACTIONS) | set(LOG_FRACTIONS))


def test_sizes_are_floored_like_mib():
    assert edges_at(0.001, 123_211) == 123
    assert edges_at(0.5, 7) == 3
    assert edges_at(1.0, 10_342) == 10_342
    with pytest.raises(WildcircuitsError, match="fraction"):
        edges_at(1.5, 10)


def test_trapezoid_by_hand():
    assert trapezoid([0, 1, 3], [0, 2, 2]) == 1 + 4
    with pytest.raises(WildcircuitsError):
        trapezoid([0], [1])


def test_cpr_and_cmd_of_a_step_curve_by_hand():
    f = [0, 0, 0, 0, 0, 0, 0, 0.5, 1, 1]  # 0 up to 10%, 0.5 at 20%, 1 from 50%
    # CPR: 0.1 * (0 + 0.5) / 2 + 0.3 * (0.5 + 1) / 2 + 0.5 * (1 + 1) / 2 = 0.025 + 0.225 + 0.5
    assert cpr(curve(MIB_FRACTIONS, f)) == pytest.approx(0.75, abs=1e-12)
    # CMD: |1 - f| is 1 from 0.001 to 0.1 (area 0.099), then 0.1 * 1.5 / 2 + 0.3 * 0.5 / 2
    absolute = curve(MIB_FRACTIONS, f, Ranking.ABSOLUTE)
    assert cmd(absolute) == pytest.approx(0.099 + 0.075 + 0.075, abs=1e-12)


def test_cpr_and_cmd_of_constant_and_overshooting_curves():
    ones = [1.0] * 10
    assert cpr(curve(MIB_FRACTIONS, ones)) == pytest.approx(0.999)
    assert cmd(curve(MIB_FRACTIONS, ones, Ranking.ABSOLUTE)) == 0
    # f = 2 everywhere: CPR counts the overshoot, CMD its distance from 1.
    assert cpr(curve(MIB_FRACTIONS, [2.0] * 10)) == pytest.approx(1.998)
    assert cmd(curve(MIB_FRACTIONS, [2.0] * 10, Ranking.ABSOLUTE)) == pytest.approx(0.999)
    # f = k: linear, so the trapezoid rule is exact: (1 - 0.001^2) / 2.
    assert cpr(curve(MIB_FRACTIONS, MIB_FRACTIONS)) == pytest.approx((1 - 1e-6) / 2)


def test_areas_read_only_the_mib_grid_of_a_finer_curve():
    f = [min(1.0, k * 5) for k in ALL_FRACTIONS]
    fine = curve(ALL_FRACTIONS, f)
    coarse = curve(MIB_FRACTIONS, [min(1.0, k * 5) for k in MIB_FRACTIONS])
    assert cpr(fine) == pytest.approx(cpr(coarse), abs=1e-15)


def test_areas_refuse_the_wrong_ordering_and_missing_sizes():
    with pytest.raises(WildcircuitsError, match="CPR is defined on the signed"):
        cpr(curve(MIB_FRACTIONS, [1.0] * 10, Ranking.ABSOLUTE))
    with pytest.raises(WildcircuitsError, match="CMD is defined on the absolute"):
        cmd(curve(MIB_FRACTIONS, [1.0] * 10))
    with pytest.raises(WildcircuitsError, match="no point at sizes"):
        cpr(curve(MIB_FRACTIONS[:-1], [1.0] * 9))


def test_log_area_is_mean_faithfulness_over_log_size():
    assert log_area(curve(LOG_FRACTIONS, [1.0] * 20)) == pytest.approx(1.0)
    # f rising linearly in log10(k) from 0 at 1e-4 to 1 at 1e-1: area 1.5 / range 3 = 0.5.
    rising = [(math.log10(k) + 4) / 3 for k in LOG_FRACTIONS]
    assert log_area(curve(LOG_FRACTIONS, rising)) == pytest.approx(0.5)


def test_smallest_faithful_circuit_first_point_and_interpolation():
    fractions = (0.001, 0.01, 0.1, 1.0)
    small = smallest_faithful(curve(fractions, [0.0, 0.6, 1.0, 1.0]))
    assert small.fraction == 0.01 * 10 and small.n_edges == 1000 and small.faithfulness == 1.0
    # 0.8 is halfway from 0.6 to 1.0, so the crossing is halfway in log10: 10 ** -1.5.
    assert small.interpolated_fraction == pytest.approx(10**-1.5)
    first = smallest_faithful(curve(fractions, [0.9, 0.5, 1.0, 1.0]))
    assert first.fraction == 0.001 and first.interpolated_fraction == 0.001
    assert smallest_faithful(curve(fractions, [0.1, 0.2, 0.7, 0.79])) is None
    assert smallest_faithful(curve(fractions, [0.1, 0.2, 0.7, 0.79]), threshold=0.5).n_edges == 1000
