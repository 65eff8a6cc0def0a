"""`verify`: test a hypothesis file every way issue #14 names, and decide each claim.

On the task's held-out prompts (test split), in this order:
1. the IOI paper's criteria (`criteria.criteria`) under mean ablation per template
   (`mean:template`: the mean over the task's corrupted distribution, per template; for IOI the
   ABC distribution), whole (component, position) knockouts;
2. while the interval of F(C) / F(M) is wider than `max_width` and doubling the prompts fits
   the budget (the token-forwards spent so far plus twice the last round's, at most
   `budget_forwards`), the prompts are doubled (at most `max_n`) and the criteria recomputed:
   every number is then reported at the final size. The budget is counted in forward passes
   (`models.counting`), not seconds, so how many prompts a hypothesis is verified on does not
   depend on the machine or its load;
3. the statistical tests of Shi et al. 2024 (`stat_tests.run_stat_tests`);
4. causal scrubbing of the whole hypothesis and of each claim alone (`scrubbing.scrub`);
5. the harder red-team checks (`redteam`): the task's other corruptions, templates held out
   from discovery, a simpler story;
6. one verdict per claim and the opening sentence (`verdicts`).
Each part's seconds and forward passes are recorded in verification.json.
"""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from wildcircuits.errors import WildcircuitsError
from wildcircuits.evaluation.bootstrap import N_BOOT
from wildcircuits.explanation.hypothesis import Hypothesis
from wildcircuits.results.verdicts import Check, CheckVerdict
from wildcircuits.results.verify import ClaimStatus, ClaimVerdict, Verification
from wildcircuits.verification import redteam, verdicts

#: The rounds' default budget in token-forwards (the `discover` pipeline's is half,
#: `PIPELINE_VERIFY`). On this project's 2-core CPU a first round of the criteria ran 157 to 675
#: token-forwards a second (five catalogue cells, docs/verify.md "Effort settings"), so this is
#: 190 to 815 seconds there; until verify version 5 the budget was 240 seconds of clock time,
#: which made the prompts a cell was verified on depend on the machine's load.
BUDGET_FORWARDS = 128_000


@dataclass(frozen=True)
class VerifySettings:
    """How a hypothesis is verified (defaults sized so `make demo` stays within its budget).

    n: held-out prompts of the first round; max_n: the most the rounds may grow to; max_width:
    the widest acceptable 95% interval of F(C) / F(M); budget_forwards: the token-forwards (one
    token position through every layer, `models.counting`) the rounds may spend together; the
    rest are the parts' settings (criteria.criteria, stat_tests.run_stat_tests, scrub)."""

    n: int = 16
    max_n: int = 64
    max_width: float = 0.2
    budget_forwards: int = BUDGET_FORWARDS
    seed: int = 0
    ablation: str = "mean:template"
    n_random: int = 10
    greedy_steps: int = 2
    minimality_steps: int = 1
    minimality_candidates: int | None = 8
    n_reference: int = 100  # stat_tests.N_REFERENCE: with fewer, minimality can never pass
    n_boot: int = N_BOOT
    batch_size: int = 16
    scrub: bool = True
    max_tree: int = 64  # scrubbing.MAX_TREE: class runs of the whole hypothesis's scrub
    checks: bool = True
    split: str = "test"

    def __post_init__(self) -> None:
        if self.n < 2 or self.max_n < self.n:
            raise WildcircuitsError(
                f"verify: n = {self.n}, max_n = {self.max_n}; give n >= 2 and max_n >= n"
            )


class TaskInputs:
    """What verification reads from a task: held-out prompts of any size (and their resampling
    pool, the same rows), the task's other corruptions and its derived variations (templates
    discovery never saw). Another source of prompts (e.g. a planted model's) implements the
    same four members."""

    def __init__(self, model, task, settings: VerifySettings, corruption: str | None = None):
        from wildcircuits.tasks.base import max_examples

        self.model, self.task, self.settings = model, task, settings
        self.corruption = corruption or task.default_corruption
        self.max_n = max_examples(task)
        self._datasets: dict[int, Any] = {}

    def _dataset(self, n: int):
        from wildcircuits.tasks import Split

        if n not in self._datasets:
            self._datasets[n] = self.task.build(
                self.model.tokenizer, n, seed=self.settings.seed, split=Split(self.settings.split)
            )
        return self._datasets[n]

    def problem(self, n: int):
        from wildcircuits.patching.problem import problem_from_dataset

        return problem_from_dataset(self.model, self._dataset(n), self.corruption)

    def pool(self, n: int):
        from wildcircuits.verification.resampling import pool_from_dataset

        return pool_from_dataset(self.model, self._dataset(n), self.corruption)

    def checks(self, engine, evaluator, hypothesis: Hypothesis, f_model: float) -> list[Check]:
        from wildcircuits.patching.problem import problem_from_dataset

        if not self.settings.checks:
            return []
        pairs, n, size = hypothesis.pairs(), evaluator.problem.batch, self.settings.batch_size
        dataset = self._dataset(n)
        return [
            redteam.other_corruptions(
                engine, lambda name: problem_from_dataset(self.model, dataset, name), pairs,
                self.task.corruption_names, self.corruption, size,
            ),
            redteam.template_transfer(
                engine, self._variations(), pairs, self.settings.ablation, f_model, size
            ),
            redteam.simpler_story(evaluator, hypothesis),
        ]  # fmt: skip

    def _variations(self) -> list[tuple[str, Any]]:
        """(name, problem) of each derived variation of the task, on `settings.n` held-out
        prompts; a variation that cannot be built is left out."""
        from wildcircuits.patching.problem import problem_from_dataset
        from wildcircuits.tasks import Split

        out = []
        for variation in self.task.variations():
            if variation.task is None:
                continue
            try:
                data = variation.task.build(self.model.tokenizer, self.settings.n,
                                            seed=self.settings.seed,
                                            split=Split(self.settings.split), min_n=2)  # fmt: skip
                out.append((variation.name, problem_from_dataset(self.model, data)))
            except WildcircuitsError:
                continue
        return out


def verify(
    model,
    task,
    hypothesis: Hypothesis,
    settings: VerifySettings | None = None,
    corruption: str | None = None,
    source: Path | str | None = None,
    progress: bool = True,
) -> Verification:
    """Verify `hypothesis` (a loaded hypothesis file) for `task` on `model` (module doc).
    `corruption`: the one the circuit was found with (default: the task's); `source`: the
    hypothesis file (its path and SHA-256 go into the result)."""
    settings = settings or VerifySettings()
    inputs = TaskInputs(model, task, settings, corruption)
    return verify_inputs(model, inputs, hypothesis, settings, source, progress)


def verify_inputs(
    model,
    inputs,
    hypothesis: Hypothesis,
    settings: VerifySettings,
    source: Path | str | None = None,
    progress: bool = True,
) -> Verification:
    """`verify` on any source of prompts (`TaskInputs` documents the members it reads)."""
    from wildcircuits.errors import InputError
    from wildcircuits.patching.edges import EdgeForward

    if not hypothesis.pairs():
        raise InputError(
            "the hypothesis claims no components (no class members, nothing unexplained): "
            "there is nothing to verify; add members to the hypothesis file"
        )
    engine = EdgeForward(model)
    say = _say(progress)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    evaluator, criteria, rows, rounds = _grow(inputs, hypothesis, settings, engine, say, progress)
    seconds["criteria"] = time.perf_counter() - start
    n = evaluator.problem.batch
    tests = _timed(seconds, "tests", lambda: _tests(evaluator, hypothesis, settings, rows, say))
    scrubbing, scrub_claims = _timed(
        seconds, "scrubbing", lambda: _scrub(model, inputs, n, hypothesis, settings, engine, say,
                                             progress)
    )  # fmt: skip
    if settings.checks:
        say("red team: other corruptions, held-out templates, a simpler story")
    f_model = criteria.f_model.value
    checks = _timed(
        seconds, "checks", lambda: inputs.checks(engine, evaluator, hypothesis, f_model)
    )
    claims = (
        verdicts.criteria_claims(criteria, _minimality_flag())
        + verdicts.test_claims(tests)
        + scrub_claims
    )
    warnings = [c.name for c in checks if c.verdict is CheckVerdict.WARN]
    seconds["total"] = time.perf_counter() - start
    return Verification(
        provenance={
            **dict(evaluator.problem.provenance),
            "split": settings.split,
            "n_prompts": n,
            "rounds": rounds,
            "ablation": criteria.ablation,
            "settings": asdict(settings),
        },
        hypothesis=_describe(hypothesis, source),
        criteria=criteria,
        tests=tests,
        scrubbing=scrubbing,
        checks=tuple(checks),
        claims=tuple(claims),
        verdict=verdicts.verdict_sentence(claims, warnings),
        thresholds=thresholds(settings),
        seconds={k: round(v, 2) for k, v in seconds.items()},
    )


def thresholds(settings: VerifySettings | None = None) -> dict[str, float]:
    """Every threshold a verdict uses (stated once; stored in verification.json), and the
    interval width past which the prompts grow (`settings.max_width`)."""
    from wildcircuits.verification import stat_tests

    return {
        **verdicts.THRESHOLDS,
        **redteam.THRESHOLDS,
        "minimality_flag": _minimality_flag(),
        "max_interval_width": (settings or VerifySettings()).max_width,
        "test_level": stat_tests.LEVEL,
        "equivalence_epsilon": stat_tests.EPSILON,
        "minimality_quantile": stat_tests.QUANTILE,
    }


def _minimality_flag() -> float:
    from wildcircuits.verification.criteria import MINIMALITY_FLAG

    return MINIMALITY_FLAG


def _say(progress: bool):
    def say(message: str) -> None:
        if progress:
            print(f"[wildcircuits] verify: {message}", file=sys.stderr, flush=True)

    return say


def _timed(seconds: dict[str, float], name: str, work):
    start = time.perf_counter()
    out = work()
    seconds[name] = time.perf_counter() - start
    return out


# 1-2: the criteria, growing the prompts ----------------------------------------------------------
def _grow(inputs, hypothesis, settings, engine, say, progress):
    """The criteria at the first round whose F(C) / F(M) interval is narrow enough, or the last
    one that fits the budget, `max_n` and the task's size."""
    from wildcircuits.explanation.pair_evaluator import PairEvaluator
    from wildcircuits.models.counting import count_forwards
    from wildcircuits.verification.criteria import criteria as run_criteria

    n, rounds, spent, last = settings.n, [], 0, None  # last: (evaluator, criteria, rows)
    while True:
        begin = time.perf_counter()
        try:
            problem = inputs.problem(n)
        except WildcircuitsError as error:  # the split holds fewer prompts: keep the last round
            if last is None:
                raise
            rounds.append({"n": n, "not_built": str(error).split(";")[0]})
            return (*last, rounds)
        check_positions(hypothesis, problem)
        evaluator = PairEvaluator(engine, problem, settings.ablation, settings.batch_size)
        rows: dict = {}  # kept set -> (batch,) metrics, shared with the statistical tests
        say(f"criteria on {problem.batch} prompts ({settings.ablation})")
        with count_forwards(engine.model) as count:
            criteria = run_criteria(
                evaluator, hypothesis, n_random=settings.n_random,
                greedy_steps=settings.greedy_steps, minimality_steps=settings.minimality_steps,
                minimality_candidates=settings.minimality_candidates, seed=settings.seed,
                n_boot=settings.n_boot, progress=progress, rows=rows,
            )  # fmt: skip
        took = round(count.token_forwards)
        spent += took
        interval = criteria.relative_faithfulness.interval
        width = interval.width if interval is not None else 0.0
        rounds.append({
            "n": problem.batch, "width": round(width, 4), "token_forwards": took,
            "seconds": round(time.perf_counter() - begin, 2),
        })  # fmt: skip
        grow = 2 * n
        fits = spent + 2 * took <= settings.budget_forwards
        too_big = grow > settings.max_n or (inputs.max_n is not None and grow > inputs.max_n)
        if width <= settings.max_width or too_big or not fits:
            return evaluator, criteria, rows, rounds
        last = (evaluator, criteria, rows)
        say(f"F(C) / F(M) interval width {width:.2f} > {settings.max_width}: {grow} prompts")
        n = grow


def check_positions(hypothesis: Hypothesis, problem) -> None:
    """Every member's position exists in the verification prompts (else a clear error)."""
    from wildcircuits.errors import InputError
    from wildcircuits.explanation.positions import position_names

    names = position_names(problem)
    missing = sorted({p.position for p in hypothesis.pairs() if p.position not in names})
    if missing:
        raise InputError(
            f"the hypothesis places members at {', '.join(missing)}, which the task's prompts do "
            f"not have; its positions are {', '.join(names)}: edit the hypothesis file"
        )


# 3-5 ---------------------------------------------------------------------------------------------
def _tests(evaluator, hypothesis, settings, rows, say):
    """Shi et al.'s tests on the criteria's evaluator, reusing the sets it measured (`rows`)."""
    from wildcircuits.verification.stat_tests import run_stat_tests

    say(f"statistical tests (Shi et al. 2024), {settings.n_reference} random complement pairs")
    return tuple(
        run_stat_tests(evaluator, hypothesis.pairs(), n_reference=settings.n_reference,
                       seed=settings.seed, known=rows)
    )  # fmt: skip


def _scrub(model, inputs, n, hypothesis, settings, engine, say, progress):
    """Causal scrubbing and its claims; a task without resampling variables says so."""
    from wildcircuits.verification.scrubbing import scrub

    if not settings.scrub:
        return None, []
    try:
        pool = inputs.pool(n)
        say(f"causal scrubbing on {pool.problem.batch} prompts")
        result = scrub(
            model, pool, hypothesis, seed=settings.seed, n_boot=settings.n_boot,
            batch_size=settings.batch_size, engine=engine, progress=progress,
            max_tree=settings.max_tree,
        )  # fmt: skip
    except WildcircuitsError as error:
        claim = ClaimVerdict("causal scrubbing", ClaimStatus.INCONCLUSIVE, "causal scrubbing",
                             None, f"not run: {error}")  # fmt: skip
        return None, [claim]
    return result, verdicts.scrub_claims(result)


def _describe(hypothesis: Hypothesis, source: Path | str | None) -> dict[str, Any]:
    described: dict[str, Any] = {
        "task": hypothesis.task,
        "model": hypothesis.model,
        "classes": {c.name: [p.name for p in c.members] for c in hypothesis.classes},
        "paths": [
            f"{p.sender} -> {p.receiver} ({p.slot.value}) at {', '.join(p.positions)}"
            for p in hypothesis.paths
        ],
        "unexplained": [p.name for p in hypothesis.unexplained],
    }
    if source is not None:
        path = Path(source)
        described["source"] = str(path)
        described["sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return described
