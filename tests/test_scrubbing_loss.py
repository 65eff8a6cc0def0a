"""Causal scrubbing with a metric read at many positions per row: the planted induction pool
scored by the next-token loss at S2 (predicting X) and, on every other row, also at the token
before S2 (predicting S). The loss positions are the `LOSS` group, so the planted hypotheses
name LOSS where they named S2."""

from __future__ import annotations

import functools
from dataclasses import replace

from tests.planted_models import planted_induction_model
from tests.scrub_fixtures import hypothesis, planted_pool
from wildcircuits.explanation.hypothesis import Hypothesis
from wildcircuits.explanation.positions import LOSS
from wildcircuits.patching.problem import PatchingProblem, loss_position_tensors
from wildcircuits.results.explain import Pair
from wildcircuits.tasks.spec import MetricKind
from wildcircuits.verification.resampling import make_pool
from wildcircuits.verification.scrubbing import scrub

EVERY = ("S1", "S1+1", LOSS, "other")


def _loss_version(problem: PatchingProblem) -> PatchingProblem:
    ids, end = problem.clean.input_ids, problem.named_positions["S2"]
    positions, targets = [], []
    for row in range(problem.batch):
        answer = int(problem.targets.answers[row, 0])  # X, the token after S1
        at, want = [int(end[row])], [answer]
        if row % 2:  # also the token before S2, predicting S (ragged rows)
            at, want = [int(end[row]) - 1, *at], [int(ids[row, end[row]]), *want]
        positions.append(at)
        targets.append(want)
    loss_at, loss_targets, mask = loss_position_tensors(positions, targets)
    targets = replace(problem.targets, loss_positions=loss_at, loss_targets=loss_targets,
                      loss_mask=mask)  # fmt: skip
    return replace(problem, positions=loss_at, targets=targets, metric=MetricKind.LOSS)


@functools.cache
def loss_pool():
    base = planted_pool()
    problem = _loss_version(base.problem)
    return make_pool(problem, base.slots, base.values, base.variables, lists=base.lists)


def _renamed(h: Hypothesis) -> Hypothesis:
    """The planted hypothesis with S2 renamed LOSS (its tokens are loss positions) and the
    previous-token head at every position of the loss problem."""

    def rename(names):
        return tuple(LOSS if n == "S2" else n for n in names)

    classes = []
    for c in h.classes:
        members = tuple(Pair(m.node, LOSS if m.position == "S2" else m.position) for m in c.members)
        if c.name == "previous token":
            members = tuple(Pair("L0.H0", p) for p in EVERY)
        depends = replace(c.depends_on, positions=rename(c.depends_on.positions))
        classes.append(replace(c, members=members, depends_on=depends))
    paths = tuple(replace(p, positions=rename(p.positions)) for p in h.paths)
    return replace(h, classes=tuple(classes), paths=paths)


def _lr(result, claim: str) -> float:
    return next(c for c in result.claims if c.claim == claim).loss_recovered.value


def test_the_pool_puts_every_loss_position_in_the_loss_group():
    pool = loss_pool()
    problem = pool.problem
    slot = pool.position_names.index(LOSS)
    assert bool(((pool.position_slots == slot) == problem.metric_tokens().cpu()).all())
    assert problem.positions.shape == (problem.batch, 2)


def test_true_hypothesis_recovers_the_loss_and_resampling_everything_gives_zero():
    model = planted_induction_model()
    result = scrub(model, loss_pool(), _renamed(hypothesis()), n_boot=0, progress=False)
    # lower loss is better: the clean model far below the random resample
    assert result.m_model + 0.5 < result.m_random
    assert _lr(result, "the whole hypothesis") >= 0.8
    assert _lr(result, "logits") >= 0.9
    empty = Hypothesis("planted induction", "planted-induction", ())
    nothing = scrub(model, loss_pool(), empty, n_boot=0, progress=False)
    assert abs(_lr(nothing, "the whole hypothesis")) < 1e-6
    # the dropped previous-token path breaks the induction class on the loss too
    broken = scrub(model, loss_pool(), _renamed(hypothesis(path=False)), n_boot=0,
                   progress=False)  # fmt: skip
    assert _lr(broken, "class induction") < 0.5
