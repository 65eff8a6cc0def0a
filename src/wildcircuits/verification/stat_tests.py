"""The statistical tests of Shi et al. 2024 ("Hypothesis testing the circuit hypothesis in LLMs")
on per-prompt scores: equivalence, independence and minimality of a circuit of
(component, position) pairs.

The pure functions (`equivalence_test`, `independence_test`, `minimality_test`) take (batch,)
per-prompt scores; `run_stat_tests` gets them from a `PairEvaluator` in one `row_metrics` call.

Conventions (each test's `scheme` says its own in full). Shi et al. (and their code,
blei-lab/circuitry) put the circuit hypothesis in the null: a test that fails to reject counts
as a pass, so a small or noisy sample passes. Here equivalence and minimality are framed the
other way round: the circuit passes only when the data reject the null of *no* equivalence /
*no* necessity, so too few prompts or references give "not passed" (inconclusive), never a
pass. Independence keeps their framing (pass = independence not rejected): the one test where
a small sample favours the circuit.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from wildcircuits.errors import WildcircuitsError
from wildcircuits.explanation.pair_evaluator import PairEvaluator
from wildcircuits.results.explain import Pair
from wildcircuits.results.verify import StatTest

LEVEL = 0.05  # significance level of every test
EPSILON = 0.1  # equivalence margin
QUANTILE = 0.9  # minimality: a member must beat a random complement member this often
N_PERM = 1000  # permutations of the independence test
N_REFERENCE = 100  # random complement pairs of the minimality test (see `run_stat_tests`)
TIE = 1e-6  # relative tolerance under which a circuit's score ties the model's
PERM_ENTRIES = 2**22  # permuted Gram entries held at once (32 MiB of float64)


class StatTestError(WildcircuitsError):
    """Inputs a statistical test cannot use (shapes, too few prompts, an empty circuit)."""


# exact binomial tails and Holm ------------------------------------------------------------------
def binomial_tail(k: int, n: int, p: float, upper: bool) -> float:
    """P(X >= k) (upper) or P(X <= k) for X ~ Binomial(n, p), summed exactly in log space
    (lgamma for the coefficients, log-sum-exp), so large n neither overflows nor underflows."""
    if not 0.0 < p < 1.0:
        raise StatTestError(f"binomial probability {p} must lie strictly between 0 and 1")
    if (upper and k <= 0) or (not upper and k >= n):
        return 1.0  # the whole distribution (summed, lgamma's rounding would leave 1 - 3e-14)
    ks = range(k, n + 1) if upper else range(0, k + 1)
    logs = [
        math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1)
        + j * math.log(p) + (n - j) * math.log1p(-p)
        for j in ks
    ]  # fmt: skip
    if not logs:
        return 0.0
    top = max(logs)
    return min(1.0, math.exp(top) * math.fsum(math.exp(v - top) for v in logs))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm step-down adjusted p-values, in the input order: sorted ascending, the j-th
    (0-based) of m is scaled by m - j, then made non-decreasing and capped at 1."""
    m = len(p_values)
    order = sorted(range(m), key=lambda i: p_values[i])
    adjusted, running = [0.0] * m, 0.0
    for j, i in enumerate(order):
        running = max(running, min(1.0, (m - j) * p_values[i]))
        adjusted[i] = running
    return adjusted


def _rows(name: str, rows: Tensor, dims: int) -> Tensor:
    if not isinstance(rows, Tensor) or rows.dim() != dims:
        shape = "(batch,)" if dims == 1 else "(n, batch)"
        got = tuple(rows.shape) if isinstance(rows, Tensor) else type(rows).__name__
        raise StatTestError(f"{name}: expected a {shape} tensor of per-prompt scores, got {got}")
    if rows.shape[-1] < 2:
        raise StatTestError(f"{name}: {rows.shape[-1]} prompt(s); the tests need at least 2")
    return rows.detach().double().cpu()


def _same_batch(**rows: Tensor) -> None:
    sizes = {name: int(r.shape[-1]) for name, r in rows.items()}
    if len(set(sizes.values())) > 1:
        raise StatTestError(
            f"per-prompt scores of different batches: {sizes}; score every circuit on the same "
            "prompts (one PairEvaluator.row_metrics call)"
        )


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise StatTestError(f"level {level}: give a significance level between 0 and 1")


# equivalence -------------------------------------------------------------------------------------
def equivalence_test(
    model_rows: Tensor, circuit_rows: Tensor, epsilon: float = EPSILON, level: float = LEVEL
) -> StatTest:
    """Does the circuit beat the model on about half of the prompts (within epsilon)?

    pi = P(circuit > model) + P(tie) / 2 over prompts (Shi et al.'s P(Delta > 0), ties credited
    half: a circuit identical to the model has pi = 1/2). H0: |pi - 1/2| >= epsilon; two
    one-sided exact binomial tests (TOST), p-value the larger; pass = H0 rejected at `level`.
    K = wins + ties / 2, the odd tie counted against the circuit in each one-sided test.
    numbers["non_equivalence_p_value"] is Shi et al.'s own test on the same K (H0: |pi - 1/2|
    <= epsilon, p = sup over H0 of P(|K/n - 1/2| >= observed)); circuitry computes that p-value
    from the mean score difference in place of the fraction, which we do not follow."""
    model, circuit = _rows("model_rows", model_rows, 1), _rows("circuit_rows", circuit_rows, 1)
    _same_batch(model_rows=model, circuit_rows=circuit)
    _check_level(level)
    if not 0.0 < epsilon < 0.5:
        raise StatTestError(f"epsilon {epsilon}: give an equivalence margin in (0, 0.5)")
    n = model.numel()
    delta = circuit - model  # (batch,)
    tie = _tied(circuit, model)
    wins, ties = int(((delta > 0) & ~tie).sum()), int(tie.sum())
    losses = n - wins - ties
    # H0 pi >= 1/2 + eps (rejected by a small K); H0 pi <= 1/2 - eps (rejected by a large K)
    p_high = binomial_tail(wins + (ties + 1) // 2, n, 0.5 + epsilon, upper=False)
    p_low = binomial_tail(wins + ties // 2, n, 0.5 - epsilon, upper=True)
    p_value = max(p_high, p_low)
    pi = (wins + ties / 2) / n
    return StatTest(
        name="equivalence",
        question=f"Does the circuit beat the model on half of the prompts, within {epsilon}?",
        statistic=pi, p_value=p_value, level=level, passed=p_value < level,
        scheme=(
            "paired over prompts: pi = P(circuit score > model score) + P(tie) / 2 (tie: |diff| "
            f"<= {TIE} x max(1, |score|)); H0 |pi - 1/2| >= {epsilon}, two one-sided exact "
            "binomial tests on K = wins + ties / 2 (odd tie against the circuit), p = the "
            "larger; pass = H0 rejected (Shi et al. test the reverse null, see numbers)"
        ),
        numbers={
            "n": n, "wins": wins, "losses": losses, "ties": ties, "epsilon": epsilon,
            "p_above": p_high, "p_below": p_low,
            "non_equivalence_p_value": _two_sided(wins + ties / 2, n, epsilon),
            "mean_model": float(model.mean()), "mean_circuit": float(circuit.mean()),
        },
    )  # fmt: skip


def _two_sided(k: float, n: int, epsilon: float) -> float:
    """sup over |pi - 1/2| <= eps of P(|K/n - 1/2| >= |k/n - 1/2|): at pi = 1/2 + eps."""
    gap = abs(k / n - 0.5) * n - 1e-9  # in counts; the slack keeps k itself in the region
    high = binomial_tail(math.ceil(n / 2 + gap), n, 0.5 + epsilon, upper=True)
    low = binomial_tail(math.floor(n / 2 - gap), n, 0.5 + epsilon, upper=False)
    return min(1.0, high + low)


def _tied(a: Tensor, b: Tensor) -> Tensor:
    """Where a - b is within float rounding: |a - b| <= TIE x max(1, |a|, |b|)."""
    return (a - b).abs() <= TIE * torch.maximum(a.abs(), b.abs()).clamp(min=1.0)


def _effect(a: Tensor, b: Tensor) -> Tensor:
    """mean over prompts of (a - b)^2, differences within float rounding counted 0: (n,)."""
    return ((a - b).masked_fill(_tied(a, b), 0.0) ** 2).mean(-1)


# independence ------------------------------------------------------------------------------------
def _centred_gram(x: Tensor) -> Tensor:
    """H K H for a Gaussian kernel on x (batch,), bandwidth the median of the nonzero |x_i -
    x_j| (i < j); a constant x gives the zero matrix. (batch, batch) float64."""
    distance = (x[:, None] - x[None, :]).abs()  # (batch, batch)
    upper = distance[torch.triu(torch.ones_like(distance, dtype=torch.bool), diagonal=1)]
    upper = upper[upper > 0]
    sigma = float(upper.median()) if upper.numel() else 1.0
    gram = torch.exp(-(distance**2) / (2 * sigma**2))
    gram = gram - gram.mean(0, keepdim=True)
    return gram - gram.mean(1, keepdim=True)


def independence_test(
    model_rows: Tensor,
    knocked_rows: Tensor,
    n_perm: int = N_PERM,
    level: float = LEVEL,
    seed: int = 0,
) -> StatTest:
    """Is the score with the circuit knocked out independent of the model's score?

    HSIC (Gretton et al. 2008), biased estimator tr(K H L H) / n^2, Gaussian kernels with the
    median heuristic per variable (circuitry uses one bandwidth for both, the median X-to-Y
    distance, which changes with an offset between the scores); p-value (1 + #{perm >= obs}) /
    (1 + n_perm) over `n_perm` permutations of the knocked-out scores (seeded generator;
    circuitry's #{perm >= obs} / n_perm can be 0). H0 independence; pass = not rejected."""
    model, knocked = _rows("model_rows", model_rows, 1), _rows("knocked_rows", knocked_rows, 1)
    _same_batch(model_rows=model, knocked_rows=knocked)
    _check_level(level)
    if n_perm < 1:
        raise StatTestError(f"n_perm={n_perm}: give at least 1 permutation (1000 is usual)")
    n = model.numel()
    k_centred, l_centred = _centred_gram(model), _centred_gram(knocked)  # (batch, batch)
    observed = float((k_centred * l_centred).sum()) / n**2
    generator = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.randperm(n, generator=generator) for _ in range(n_perm)])
    null, chunk = [], max(1, PERM_ENTRIES // n**2)
    for first in range(0, n_perm, chunk):
        p = perms[first : first + chunk]  # (chunk, batch)
        permuted = l_centred[p[:, :, None], p[:, None, :]]  # (chunk, batch, batch)
        null.append((k_centred * permuted).sum((1, 2)) / n**2)
    null = torch.cat(null)  # (n_perm,)
    exceed = int((null >= observed - 1e-12 * abs(observed)).sum())
    p_value = (1 + exceed) / (1 + n_perm)
    return StatTest(
        name="independence",
        question="With the circuit knocked out, is what is left independent of the model?",
        statistic=observed, p_value=p_value, level=level, passed=p_value >= level,
        scheme=(
            "HSIC between the model's per-prompt score and the score with the circuit ablated "
            "(its complement kept): biased estimator tr(KHLH)/n^2, Gaussian kernels, median-"
            f"heuristic bandwidth per variable; permutation p-value (1 + #exceed) / (1 + "
            f"{n_perm}), seed {seed}; H0 independence, pass = not rejected"
        ),
        numbers={
            "n": n, "n_perm": n_perm, "seed": seed, "null_mean": float(null.mean()),
            "null_q95": float(null.quantile(0.95)),
            "mean_model": float(model.mean()), "mean_knocked": float(knocked.mean()),
        },
    )  # fmt: skip


# minimality --------------------------------------------------------------------------------------
def minimality_test(
    circuit_rows: Tensor,
    without_rows: Tensor,
    reference_rows: Tensor,
    members: Sequence[str],
    quantile: float = QUANTILE,
    level: float = LEVEL,
) -> StatTest:
    """Is every member needed more than a random pair outside the circuit?

    Effects as circuitry's default: member v's effect is mean_i (C_i - (C \\ v)_i)^2, a
    reference pair u's is mean_i ((C + u)_i - C_i)^2 (per-prompt squared differences: effects
    that cancel in the mean still count; a difference within float rounding, `TIE`, counts 0,
    so a one-ulp change cannot beat an inert pair). K_v = #{u : effect_v > effect_u} of the
    n_ref references (strict: a tie is no win); H0 P(effect_v > effect_u) <= quantile, exact
    binomial p = P(Bin(n_ref, quantile) >= K_v), Holm-corrected over members; passes when every
    member rejects its H0. circuitry tests the reverse (H0 >= quantile, a member fails only when
    its p-value is small) and leaves the multiple-testing correction as a TODO."""
    circuit = _rows("circuit_rows", circuit_rows, 1)
    without = _rows("without_rows", without_rows, 2)
    reference = _rows("reference_rows", reference_rows, 2)
    _same_batch(circuit_rows=circuit, without_rows=without, reference_rows=reference)
    _check_level(level)
    if not 0.0 < quantile < 1.0:
        raise StatTestError(f"quantile {quantile}: give a probability in (0, 1), e.g. 0.9")
    if len(members) == 0 or len(members) != without.shape[0]:
        raise StatTestError(
            f"{len(members)} member name(s) for {without.shape[0]} rows of without_rows: give "
            "one row of C \\ {v} per member of a non-empty circuit"
        )
    n_ref = reference.shape[0]
    if n_ref == 0:
        raise StatTestError("no reference rows: give C + {u} for random pairs u outside C")
    effects, ref_effects = _effect(circuit, without), _effect(reference, circuit)  # (m,), (n_ref,)
    beats = (effects[:, None] > ref_effects[None, :]).sum(1).tolist()  # per member
    raw = [binomial_tail(int(k), n_ref, quantile, upper=True) for k in beats]
    adjusted = holm(raw)
    failing = [name for name, p in zip(members, adjusted, strict=True) if p >= level]
    return StatTest(
        name="minimality",
        question="Is every member of the circuit needed more than a random pair outside it?",
        statistic=min(beats) / n_ref, p_value=max(adjusted), level=level, passed=not failing,
        scheme=(
            "effect of member v: mean over prompts of (C - C\\v)^2; of a random pair u outside "
            "C: mean of (C+u - C)^2 (differences within the tie tolerance count 0); K_v = "
            f"#{{references u with effect_v > effect_u}}; H0 P(effect_v > effect_u) <= "
            f"{quantile}, exact binomial p = P(Bin({n_ref}, {quantile}) >= K_v), Holm over "
            f"{len(members)} members; pass = every member rejects H0 (Shi et al. test the reverse)"
        ),
        numbers={
            "members": list(members), "effects": effects.tolist(), "beats": beats,
            "p_values": raw, "p_holm": adjusted, "failing": failing, "n_reference": n_ref,
            "quantile": quantile, "reference_effects": ref_effects.tolist(),
            "best_possible_p": binomial_tail(n_ref, n_ref, quantile, upper=True),
        },
    )  # fmt: skip


# the circuits to evaluate -------------------------------------------------------------------------
@dataclass(frozen=True)
class StatPlan:
    """The circuits of the three tests on one evaluator, in `circuits()` order: the model
    (None), C, the complement M \\ C, C \\ {v} per member, C + {u} per distinct drawn pair.

    references: the n_reference pairs drawn uniformly with replacement from the complement
    (i.i.d., as the binomial test needs); distinct: each drawn pair once, first-drawn order."""

    members: tuple[Pair, ...]
    complement: tuple[Pair, ...]
    references: tuple[Pair, ...]
    distinct: tuple[Pair, ...]

    def circuits(self) -> list[list[Pair] | None]:
        c = list(self.members)
        without = [[p for p in c if p != v] for v in self.members]
        return [None, c, list(self.complement), *without, *([*c, u] for u in self.distinct)]

    def reference_index(self) -> list[int]:
        """Row of `circuits()` for each drawn reference."""
        first = 3 + len(self.members)
        return [first + self.distinct.index(u) for u in self.references]


def stat_plan(
    evaluator: PairEvaluator, circuit: Sequence[Pair], n_reference: int, seed: int
) -> StatPlan:
    """Check the circuit against the evaluator's pairs and draw the references (seeded)."""
    every, members = evaluator.space.all_pairs(), tuple(dict.fromkeys(circuit))
    known, kept = set(every), set(members)
    unknown = [p.name for p in members if p not in known]
    if unknown:
        raise StatTestError(
            f"pairs {', '.join(unknown)} are not pairs of this problem; use "
            "evaluator.space.all_pairs() names (component@position of a present position)"
        )
    if not members:
        raise StatTestError("empty circuit: minimality needs at least one member; give its pairs")
    complement = tuple(p for p in every if p not in kept)
    if not complement or n_reference < 1:
        raise StatTestError(
            f"{len(complement)} pairs outside the circuit and n_reference={n_reference}: "
            "minimality needs at least one of each (keep fewer pairs, or raise n_reference)"
        )
    generator = torch.Generator().manual_seed(seed)
    drawn = torch.randint(len(complement), (n_reference,), generator=generator).tolist()
    references = tuple(complement[i] for i in drawn)
    return StatPlan(members, complement, references, tuple(dict.fromkeys(references)))


def stat_tests_from_rows(
    plan: StatPlan, rows: Tensor, *, n_perm: int, level: float, seed: int, forwards: int
) -> tuple[StatTest, StatTest, StatTest]:
    """The three tests from `rows` (len(plan.circuits()), batch): row metrics in plan order."""
    m = len(plan.members)
    tests = (
        equivalence_test(rows[0], rows[1], level=level),
        independence_test(rows[0], rows[2], n_perm=n_perm, level=level, seed=seed),
        minimality_test(rows[1], rows[3 : 3 + m], rows[plan.reference_index()],
                        [p.name for p in plan.members], level=level),
    )  # fmt: skip
    for test in tests:
        test.numbers.update(forwards=forwards, circuits=rows.shape[0])
    return tests


def run_stat_tests(
    evaluator: PairEvaluator,
    circuit: Sequence[Pair],
    *,
    n_reference: int = N_REFERENCE,
    seed: int = 0,
    n_perm: int = N_PERM,
    level: float = LEVEL,
    known: Mapping[frozenset[Pair], Tensor] | None = None,
) -> tuple[StatTest, StatTest, StatTest]:
    """(equivalence, independence, minimality) of `circuit` (kept pairs) on the evaluator's
    problem and ablation, all rows from one `row_metrics` call (`StatPlan`); each test's
    numbers["forwards"] counts that call's circuit evaluations (one per circuit per chunk).
    known: kept set -> (batch,) rows already measured on this evaluator (e.g. by
    `criteria.criteria`; the model is the set of every pair): those circuits are not run again.

    n_reference defaults to 100 (circuitry's default), not 20: with quantile q the smallest
    p-value n references can give is q^n, and Holm over m members needs q^n <= level / m
    (0.9^20 = 0.12 can never pass; 0.9^100 = 2.7e-5 allows m up to ~1800). Drawn pairs repeat
    when the complement is small, and each distinct one is evaluated once."""
    plan = stat_plan(evaluator, circuit, n_reference, seed)
    everything = frozenset(evaluator.space.all_pairs())
    keys = [everything if c is None else frozenset(c) for c in plan.circuits()]
    known = known or {}
    missing = [c for c, k in zip(plan.circuits(), keys, strict=True) if k not in known]
    before = evaluator.forwards
    measured = iter(evaluator.row_metrics(missing)) if missing else iter(())
    rows = torch.stack([known[k] if k in known else next(measured) for k in keys])
    forwards = evaluator.forwards - before
    return stat_tests_from_rows(
        plan, rows, n_perm=n_perm, level=level, seed=seed, forwards=forwards
    )
