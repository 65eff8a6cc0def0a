"""The IOI paper's criteria on the planted induction model: ground truth, invariants, a slow
reference, determinism and the memo.

Ground truth (tests/planted_models.py): L0.H0 (previous token) -> L1.H0 (induction, at S2) ->
logits; L0.H1, L1.H1 and the MLPs are dead, so any set they join is evaluated exactly as
without them. Ablation: `mean:template`, one template per prompt layout (`template_problem`).
"""

from __future__ import annotations

import functools
from dataclasses import replace

import pytest

from tests.planted_models import planted_induction_model
from tests.scrub_fixtures import BRIEF, TRUE, template_problem
from wildcircuits.errors import GraphError
from wildcircuits.explanation.hypothesis import ClaimedClass, Hypothesis
from wildcircuits.explanation.pair_evaluator import PairEvaluator
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.results.explain import Pair
from wildcircuits.verification.criteria import MINIMALITY_FLAG, criteria

N_BOOT = 50
BATCH_SIZE = 24  # two chunks of the 48 prompts
DEAD = Pair("L0.H1", "S2")
WITH_DEAD = replace(TRUE, unexplained=(DEAD,))


def _evaluator() -> PairEvaluator:
    """A fresh evaluator (its own forward count)."""
    engine = EdgeForward(planted_induction_model())
    return PairEvaluator(engine, template_problem(48), "mean:template", batch_size=BATCH_SIZE)


@functools.cache
def _shared() -> PairEvaluator:
    return _evaluator()


@functools.cache
def _criteria(name: str, seed: int = 0):
    h = {"true": TRUE, "brief": BRIEF, "dead": WITH_DEAD}[name]
    return criteria(_shared(), h, seed=seed, n_boot=N_BOOT, progress=False)


def _everything_hypothesis() -> Hypothesis:
    every = _shared().space.all_pairs()
    return Hypothesis("planted induction", "planted-induction",
                      (ClaimedClass("all", None, every),))  # fmt: skip


def _flags(result) -> dict[str, bool]:
    return {m.pair.name: m.flagged for m in result.minimality}


def test_the_true_hypothesis_is_faithful_complete_and_minimal():
    result = _criteria("true")
    assert result.ablation == "mean:template" and result.metric == "logit_diff"
    assert result.f_model.value > 10  # the planted model predicts the answer by a wide margin
    assert result.faithfulness.value <= 1e-4 * abs(result.f_model.value)
    assert result.relative_faithfulness.value == pytest.approx(1.0, abs=1e-4)
    kinds = [p.kind for p in result.completeness]
    assert kinds == ["empty", "class", "class", *["random"] * 10, "greedy"]
    for point in result.completeness:
        assert point.completeness.value <= 1e-4 * abs(result.f_model.value), point.label
    # knocking the previous-token class out really moves both sides (the test is not vacuous)
    assert result.completeness[1].f_model.value < 0.5 * result.f_model.value
    # every member matters for some K: none flagged, the induction head by the most
    assert not any(_flags(result).values())
    values = {m.pair.name: m.value.value for m in result.minimality}
    assert max(values, key=values.get) == "L1.H0@S2"
    assert values["L1.H0@S2"] > 0.9 * result.f_model.value


def test_a_dead_head_added_to_the_true_hypothesis_is_flagged_and_nothing_else():
    result = _criteria("dead")
    flags = _flags(result)
    assert flags.pop(DEAD.name)
    assert not any(flags.values())
    dead = next(m for m in result.minimality if m.pair == DEAD)
    assert dead.value.value == 0.0  # a dead head changes nothing, whatever K
    assert result.faithfulness.value <= 1e-4 * abs(result.f_model.value)


def test_the_brief_hypothesis_is_unfaithful_and_incomplete_and_greedy_finds_the_worst_k():
    result = _criteria("brief")
    assert result.f_circuit.value > result.f_model.value + 1  # the clipped key positions help
    low, high = result.faithfulness.interval.low, result.faithfulness.interval.high
    assert 1 < low <= result.faithfulness.value <= high
    worst = result.worst
    assert worst.completeness.value > 3 and worst.completeness.interval.low > 2
    assert set(worst.knocked_out) == {Pair("L0.H0", "S1+1")}
    assert worst.f_circuit.value < worst.f_model.value - 3
    greedy = next(p for p in result.completeness if p.kind == "greedy")
    classes = [p for p in result.completeness if p.kind == "class"]
    assert all(greedy.completeness.value >= p.completeness.value for p in classes)
    # its two members are each necessary
    assert not any(_flags(result).values())


def test_the_empty_knockout_is_faithfulness_and_the_whole_model_is_trivially_perfect():
    for name in ("true", "brief"):
        result = _criteria(name)
        empty = result.completeness[0]
        assert empty.kind == "empty" and empty.knocked_out == ()
        assert empty.completeness == result.faithfulness
        assert (empty.f_circuit, empty.f_model) == (result.f_circuit, result.f_model)
    whole = criteria(_shared(), _everything_hypothesis(), n_random=3, greedy_steps=2,
                     minimality_steps=0, n_boot=N_BOOT, progress=False)  # fmt: skip
    assert whole.faithfulness.value == 0.0 and whole.relative_faithfulness.value == 1.0
    assert len(whole.completeness) == 1 + 1 + 3 + 1
    assert all(p.completeness.value == 0.0 for p in whole.completeness)


def test_the_greedy_minimality_search_only_raises_each_members_value():
    """{} and the class-mates alone leave L0.H0@S1 below the flag (0.15 of 17.64 at 48
    prompts); one greedy step finds K = {L0.H0@S1+1}, where it matters (0.93)."""
    searched = {m.pair: m for m in _criteria("true").minimality}
    plain = criteria(_shared(), TRUE, minimality_steps=0, n_boot=0, progress=False)
    for entry in plain.minimality:
        assert searched[entry.pair].value.value >= entry.value.value
    s1 = Pair("L0.H0", "S1")
    assert {m.pair for m in plain.minimality if m.flagged} == {s1}
    assert searched[s1].knocked_out == (Pair("L0.H0", "S1+1"),)


# slow reference ---------------------------------------------------------------------------------
class _Slow:
    """F(X) by the obvious loop: a fresh evaluator, one set per call, no memo."""

    def __init__(self):
        self.evaluator = _evaluator()
        self.everything = self.evaluator.space.all_pairs()
        self.calls = 0

    def f(self, kept) -> float:
        self.calls += 1
        return self.evaluator.metrics([list(kept)])[0]

    def completeness(self, circuit, knocked) -> tuple[float, float]:
        return (self.f([p for p in circuit if p not in knocked]),
                self.f([p for p in self.everything if p not in knocked]))  # fmt: skip

    def drop(self, circuit, knocked, member) -> float:
        without = self.f([p for p in circuit if p not in knocked and p != member])
        return abs(without - self.f([p for p in circuit if p not in knocked]))


def _slow_greedy(slow: _Slow, circuit, steps: int):
    knocked, path = (), []
    for _ in range(min(steps, len(circuit))):
        best = None
        for p in circuit:
            if p not in knocked:
                fc, fm = slow.completeness(circuit, (*knocked, p))
                if best is None or abs(fc - fm) > best[0]:
                    best = (abs(fc - fm), (*knocked, p))
        knocked = best[1]
        path.append(best)
    return max(path, key=lambda b: b[0])[1]  # first of equals


def _slow_minimality(slow: _Slow, h: Hypothesis, circuit, member, steps: int):
    options = [()]
    for claimed in h.classes:
        if member in claimed.members:
            mates = tuple(p for p in claimed.members if p != member)
            options += [mates] if mates else []
            break
    knocked = ()
    for _ in range(steps):
        tries = [(*knocked, u) for u in circuit if u != member and u not in knocked]
        if not tries:
            break
        knocked = max(tries, key=lambda k: slow.drop(circuit, k, member))
        options.append(knocked)
    best = max(options, key=lambda k: slow.drop(circuit, k, member))
    return best, slow.drop(circuit, best, member)


@pytest.mark.parametrize("name", ["brief", "dead"])  # "dead" is TRUE plus a dead head
def test_criteria_equal_a_slow_loop_without_memo_or_batching(name):
    h = {"true": TRUE, "brief": BRIEF, "dead": WITH_DEAD}[name]
    result, slow = _criteria(name), _Slow()
    circuit = tuple(dict.fromkeys(h.pairs()))
    tol = {"abs": 1e-9, "rel": 0}
    assert result.f_model.value == pytest.approx(slow.f(slow.everything), **tol)
    assert result.f_circuit.value == pytest.approx(slow.f(circuit), **tol)
    for claimed, point in zip(h.classes, result.completeness[1:], strict=False):
        assert set(point.knocked_out) == set(claimed.members)
    for point in result.completeness:
        fc, fm = slow.completeness(circuit, point.knocked_out)
        assert point.f_circuit.value == pytest.approx(fc, **tol), point.label
        assert point.f_model.value == pytest.approx(fm, **tol), point.label
        assert point.completeness.value == pytest.approx(abs(fc - fm), **tol), point.label
    greedy = next(p for p in result.completeness if p.kind == "greedy")
    assert greedy.knocked_out == _slow_greedy(slow, circuit, 3)
    for entry in result.minimality:
        knocked, value = _slow_minimality(slow, h, circuit, entry.pair, 1)
        assert entry.knocked_out == knocked, entry.pair
        assert entry.value.value == pytest.approx(value, **tol), entry.pair
        assert entry.flagged == (value < MINIMALITY_FLAG * abs(result.f_model.value))


# determinism and cost ---------------------------------------------------------------------------
def test_same_seed_same_criteria_and_another_seed_other_random_subsets():
    again = criteria(_shared(), TRUE, n_boot=N_BOOT, progress=False)
    assert again == _criteria("true")
    other = _criteria("true", seed=1)
    random = [[p.knocked_out for p in r.completeness if p.kind == "random"]
              for r in (again, other)]  # fmt: skip
    assert random[0] != random[1]
    for subsets in random:  # distinct, non-empty subsets of the circuit
        assert len({frozenset(s) for s in subsets}) == len(subsets) == 10
        assert all(s and set(s) <= set(TRUE.pairs()) for s in subsets)
    assert other.faithfulness.value == again.faithfulness.value


def test_each_kept_set_is_evaluated_once_one_stacked_call_per_step():
    evaluator = _evaluator()
    calls: list[list[frozenset[Pair]]] = []
    row_metrics = evaluator.row_metrics

    def recording(circuits, bases=()):
        assert len(bases) == 2  # M's and C's traces: every set resumes one of them
        calls.append([frozenset(c) for c in circuits])
        return row_metrics(circuits, bases)

    evaluator.row_metrics = recording
    result = criteria(evaluator, WITH_DEAD, n_boot=N_BOOT, progress=False)
    evaluated = [s for call in calls for s in call]
    assert len(evaluated) == len(set(evaluated))  # never twice
    assert len(calls) == 1 + 3 + 1 + 1  # fixed points, greedy steps, minimality (start, 1 step)
    assert result.forwards == (2 + len(evaluated)) * len(evaluator.chunks)  # + the traces
    asked = result.naive_forwards // ((N_BOOT + 1) * len(evaluator.chunks))
    assert result.naive_forwards == asked * (N_BOOT + 1) * len(evaluator.chunks)
    assert asked > 1.5 * len(evaluated)  # the memo saves real work, even without resamples
    assert result.forwards < result.naive_forwards


def test_a_member_outside_the_pair_space_names_itself_and_the_positions():
    for bad in (Pair("L0.H0", "IO"), Pair("L7.H0", "S2")):
        h = replace(TRUE, unexplained=(bad,))
        with pytest.raises(GraphError, match=rf"{bad.name}.*S1, S2, S1\+1, other"):
            criteria(_shared(), h, n_boot=0, progress=False)
