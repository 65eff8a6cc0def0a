"""The IOI paper's three criteria (Wang et al. 2022) for a hypothesis's circuit.

F(X) is the batch-mean metric with only the (component, position) pairs in X kept, every other
pair replaced by its ablation value at its tokens (`PairEvaluator`, e.g. under `mean:template`);
M is every pair, C the hypothesis's circuit (`Hypothesis.pairs`).
- faithfulness: |F(M) - F(C)|, and F(C) / F(M);
- completeness: |F(C \\ K) - F(M \\ K)| for knocked-out sets K in C: K = {}, each class, random
  subsets (each member in with probability 1/2), and the K a greedy search finds to maximise
  it; a complete circuit keeps it small for every K;
- minimality: for each member v, |F(C \\ (K + v)) - F(C \\ K)| with K chosen to maximise it
  among {}, v's class-mates, and a greedy search over the other members (at most
  `MINIMALITY_CANDIDATES` of them: those whose removal alone matters most); a member for which
  even the best K gives less than `MINIMALITY_FLAG` x |F(M)| is flagged (possibly unnecessary).
Every number carries a paired bootstrap interval over prompts (the same resampled prompts for
every estimate of one call). Each kept set is evaluated once per call (a memo keyed by the set)
and the candidate sets of one search step go to the evaluator in one stacked call, each resumed
from C's or M's run at the first layer where it differs from it (`PairEvaluator.row_metrics`).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import torch
from torch import Tensor
from tqdm.auto import tqdm

from wildcircuits.errors import GraphError
from wildcircuits.evaluation.bootstrap import N_BOOT, bootstrap
from wildcircuits.explanation.hypothesis import Hypothesis
from wildcircuits.explanation.pair_evaluator import PairEvaluator, Trace
from wildcircuits.results.explain import Pair
from wildcircuits.results.verify import Criteria, Estimate, KnockoutPoint, MemberMinimality

#: A member is flagged as possibly unnecessary when its minimality is below this fraction of
#: |F(M)| (the IOI paper reads its minimality bars against the model's metric the same way).
MINIMALITY_FLAG = 0.03
#: Minimality's greedy additions come from this many members (those whose removal alone changes
#: F(C) most): a circuit of n members costs n x this many sets a step instead of n x (n - 1).
MINIMALITY_CANDIDATES = 8
#: Random subsets drawn per requested one before giving up on finding new distinct ones.
DRAWS_PER_SUBSET = 50

KeptSet = frozenset[Pair]


def _mean(rows: Tensor) -> float:
    return float(rows[0].mean())


def _gap(rows: Tensor) -> float:
    return float((rows[0].mean() - rows[1].mean()).abs())


def _ratio(rows: Tensor) -> float:
    return float(rows[0].mean() / rows[1].mean())


class _Memo:
    """Per-row metrics (batch,) of kept sets, each set evaluated once; `requests` counts the
    sets asked for, repeats included (what an implementation without the memo would run)."""

    def __init__(self, evaluator: PairEvaluator, bar: tqdm, rows: dict[KeptSet, Tensor] | None):
        self.evaluator, self.bar = evaluator, bar
        self.rows: dict[KeptSet, Tensor] = {} if rows is None else rows
        self.requests = 0
        self.bases: list[Trace] = []

    def trace(self, kept: KeptSet) -> None:
        """Run `kept` once keeping its residual streams: every later set resumes the base it
        agrees with longest (`PairEvaluator.row_metrics(bases=)`); its rows join the memo."""
        _, trace = self.evaluator.traced(kept)
        self.bases.append(trace)
        self.rows.setdefault(kept, trace.rows)

    def evaluate(self, sets: Sequence[KeptSet]) -> None:
        """One search step: every set not seen yet, in one stacked evaluator call."""
        self.requests += len(sets)
        missing = list(dict.fromkeys(s for s in sets if s not in self.rows))
        if missing:
            rows = self.evaluator.row_metrics(missing, self.bases)  # (n_missing, batch)
            self.rows.update(zip(missing, rows, strict=True))
        self.bar.update(1)

    def stack(self, *sets: KeptSet) -> Tensor:
        """(len(sets), batch): rows of sets already evaluated."""
        return torch.stack([self.rows[s] for s in sets])


class _Run:
    """One criteria() call: the circuit C (ordered, unique), M, the memo and bootstrap settings."""

    def __init__(self, memo: _Memo, circuit: tuple[Pair, ...], n_boot: int, seed: int):
        self.memo, self.circuit, self.n_boot, self.seed = memo, circuit, n_boot, seed
        self.everything = frozenset(memo.evaluator.space.all_pairs())
        self.kept = frozenset(circuit)

    def estimate(self, rows: Tensor, statistic) -> Estimate:
        return bootstrap(rows, statistic, self.n_boot, self.seed)

    def knockout_sets(self, knocked: tuple[Pair, ...]) -> tuple[KeptSet, KeptSet]:
        """(C \\ K, M \\ K)."""
        return self.kept - set(knocked), self.everything - set(knocked)

    def drop_sets(self, knocked: tuple[Pair, ...], member: Pair) -> tuple[KeptSet, KeptSet]:
        """(C \\ (K + v), C \\ K)."""
        return self.kept - {*knocked, member}, self.kept - set(knocked)

    def gap(self, sets: tuple[KeptSet, KeptSet]) -> float:
        return _gap(self.memo.stack(*sets))

    def point(self, kind: str, label: str, knocked: tuple[Pair, ...]) -> KnockoutPoint:
        rows = self.memo.stack(*self.knockout_sets(knocked))  # (2, batch): C \ K, M \ K
        return KnockoutPoint(
            label=label,
            kind=kind,
            knocked_out=knocked,
            f_circuit=self.estimate(rows[:1], _mean),
            f_model=self.estimate(rows[1:], _mean),
            completeness=self.estimate(rows, _gap),
        )

    def points(self, knockouts: list[tuple[str, str, tuple[Pair, ...]]]) -> list[KnockoutPoint]:
        """The fixed knockouts (kind, label, K), all evaluated in one step."""
        self.memo.evaluate([s for _, _, k in knockouts for s in self.knockout_sets(k)])
        return [self.point(kind, label, k) for kind, label, k in knockouts]

    def greedy_point(self, steps: int) -> KnockoutPoint | None:
        """Up to `steps` additions, each the member maximising completeness; the point is the K
        along that path with the largest completeness (None when C is empty or steps is 0)."""
        knocked: tuple[Pair, ...] = ()
        best: tuple[float, tuple[Pair, ...]] | None = None
        for _ in range(steps):
            options = [(*knocked, p) for p in self.circuit if p not in knocked]
            if not options:
                break
            self.memo.evaluate([s for k in options for s in self.knockout_sets(k)])
            gaps = [self.gap(self.knockout_sets(k)) for k in options]
            top = max(range(len(options)), key=gaps.__getitem__)  # first of equals
            knocked = options[top]
            if best is None or gaps[top] > best[0]:
                best = (gaps[top], knocked)
        if best is None:
            return None
        label = "greedy: " + ", ".join(p.name for p in best[1])
        return self.point("greedy", label, best[1])

    def minimality(
        self, hypothesis: Hypothesis, steps: int, candidates: int | None = None
    ) -> tuple[MemberMinimality, ...]:
        """Per member v, the K among {}, v's class-mates and each K of a greedy path of `steps`
        additions (each maximising the drop) that maximises |F(C \\ (K + v)) - F(C \\ K)|.
        `candidates`: the greedy additions are drawn from the members whose removal alone
        changes F(C) most (this many; None: every member)."""
        options = {v: [(), *_mates(hypothesis, v)] for v in self.circuit}
        self.memo.evaluate(
            [s for v, ks in options.items() for k in ks for s in self.drop_sets(k, v)]
        )
        pool = self.circuit
        if candidates is not None and candidates < len(pool):
            alone = {u: self.gap(self.drop_sets((), u)) for u in pool}
            pool = tuple(sorted(pool, key=lambda u: -alone[u])[:candidates])
        path = {v: () for v in self.circuit}
        for _ in range(steps):
            tries = {v: [(*k, u) for u in pool if u != v and u not in k] for v, k in path.items()}
            sets = [s for v, ks in tries.items() for k in ks for s in self.drop_sets(k, v)]
            if not sets:
                break
            self.memo.evaluate(sets)
            for v, ks in tries.items():
                if ks:
                    path[v] = max(ks, key=lambda k, v=v: self.gap(self.drop_sets(k, v)))
                    options[v].append(path[v])
        return tuple(self.member(v, options[v]) for v in self.circuit)

    def member(self, v: Pair, options: list[tuple[Pair, ...]]) -> MemberMinimality:
        knocked = max(options, key=lambda k: self.gap(self.drop_sets(k, v)))  # first of equals
        value = self.estimate(self.memo.stack(*self.drop_sets(knocked, v)), _gap)
        f_model = abs(float(self.memo.rows[self.everything].mean()))
        return MemberMinimality(v, knocked, value, value.value < MINIMALITY_FLAG * f_model)


def _mates(hypothesis: Hypothesis, member: Pair) -> list[tuple[Pair, ...]]:
    """[the rest of the first class holding `member`], or [] (none, or it is alone there)."""
    for claimed in hypothesis.classes:
        if member in claimed.members:
            rest = tuple(dict.fromkeys(p for p in claimed.members if p != member))
            return [rest] if rest else []
    return []


def _circuit(evaluator: PairEvaluator, hypothesis: Hypothesis) -> tuple[Pair, ...]:
    """The hypothesis's pairs, each once, in its order; a pair outside the space raises."""
    space = evaluator.space
    for pair in hypothesis.pairs():
        try:
            space.cell(pair)
        except GraphError as error:
            raise GraphError(
                f"hypothesis member {pair.name} is not a pair of this problem ({error}); "
                f"members are heads / MLPs (L<layer>.H<head>, L<layer>.mlp) at one of the "
                f"positions {', '.join(space.names)}: fix the hypothesis file"
            ) from error
    return tuple(dict.fromkeys(hypothesis.pairs()))


def _random_subsets(circuit: tuple[Pair, ...], n: int, seed: int) -> list[tuple[Pair, ...]]:
    """Up to n distinct non-empty subsets of the circuit, each member in with probability 1/2
    (a torch.Generator seeded with `seed`); fewer when the circuit has fewer subsets."""
    generator = torch.Generator().manual_seed(seed)
    wanted = min(n, 2 ** len(circuit) - 1)
    seen: set[KeptSet] = set()
    subsets: list[tuple[Pair, ...]] = []
    for _ in range(DRAWS_PER_SUBSET * max(n, 1)):
        if len(subsets) >= wanted:
            break
        keep = (torch.rand(len(circuit), generator=generator) < 0.5).tolist()
        subset = tuple(p for p, k in zip(circuit, keep, strict=True) if k)
        if subset and frozenset(subset) not in seen:
            seen.add(frozenset(subset))
            subsets.append(subset)
    return subsets


def criteria(
    evaluator: PairEvaluator,
    hypothesis: Hypothesis,
    *,
    n_random: int = 10,
    greedy_steps: int = 3,
    minimality_steps: int = 1,
    minimality_candidates: int | None = MINIMALITY_CANDIDATES,
    seed: int = 0,
    n_boot: int = N_BOOT,
    progress: bool = True,
    rows: dict[KeptSet, Tensor] | None = None,
) -> Criteria:
    """Faithfulness, completeness and minimality (module doc) of `hypothesis` on `evaluator`.

    Completeness points, in order: K = {}, one per class (its members), up to `n_random`
    distinct random subsets of C (seeded with `seed`), the greedy K (`greedy_steps`
    additions); `worst` is the largest. Minimality: one entry per member, in C's order
    (`minimality_steps` greedy additions, each drawn from the `minimality_candidates` members
    whose removal alone matters most; None: from every member). Intervals: `n_boot` paired
    resamples, seed `seed`.
    forwards: circuit evaluations run (the evaluator's count; each distinct kept set once per
    chunk of rows). naive_forwards: chunks x (n_boot + 1) x the kept sets asked for, repeats
    included: one forward per knockout set per resample (and the point estimate), no memo.
    A member outside the evaluator's pairs raises GraphError naming it and the positions.
    rows: a kept set -> (batch,) metrics store shared with the caller (filled here; sets already
    in it are not evaluated again), e.g. for the statistical tests on the same evaluator."""
    circuit = _circuit(evaluator, hypothesis)
    start = evaluator.forwards
    steps = 2 + greedy_steps + minimality_steps
    with tqdm(total=steps, desc="criteria", disable=not progress, file=sys.stderr) as bar:
        run = _Run(_Memo(evaluator, bar, rows), circuit, n_boot, seed)
        # every knockout set is C or M minus a few members: resumed from the layer they start
        run.memo.trace(run.everything)
        run.memo.trace(run.kept)
        fixed = [("empty", "K = {}", ())]
        fixed += [
            ("class", f"class {c.name}", tuple(dict.fromkeys(c.members)))
            for c in hypothesis.classes
        ]
        fixed += [
            ("random", f"random {i + 1}", k)
            for i, k in enumerate(_random_subsets(circuit, n_random, seed))
        ]
        completeness = run.points(fixed)
        greedy = run.greedy_point(greedy_steps)
        completeness += [greedy] if greedy is not None else []
        minimality = run.minimality(hypothesis, minimality_steps, minimality_candidates)
    model_and_circuit = run.memo.stack(run.everything, run.kept)  # (2, batch): M, C
    circuit_and_model = model_and_circuit.flip(0)  # (2, batch): C, M
    return Criteria(
        ablation=evaluator.spec.format(),
        metric=evaluator.problem.metric.value,
        f_model=run.estimate(model_and_circuit[:1], _mean),
        f_circuit=run.estimate(circuit_and_model[:1], _mean),
        faithfulness=run.estimate(model_and_circuit, _gap),
        relative_faithfulness=run.estimate(circuit_and_model, _ratio),
        completeness=tuple(completeness),
        worst=max(completeness, key=lambda p: p.completeness.value),
        minimality=minimality,
        n_random=n_random,
        seed=seed,
        forwards=evaluator.forwards - start,
        naive_forwards=len(evaluator.chunks) * (n_boot + 1) * run.memo.requests,
    )
