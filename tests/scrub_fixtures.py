"""Planted hypotheses and a hand-made resampling pool for the causal-scrubbing tests, on the
planted induction model of tests/planted_models.py (L0.H0 previous-token head -> L1.H0
induction head via its key; L0.H1, L1.H1 and both MLPs dead).

The pool's resampling variables: S (the repeated token, at S1 and S2), X (the token after S1,
the answer) and one filler variable per other token index; all are drawn from one list (every
token of a prompt is distinct). Rows with the same S1 index share a layout.

`TRUE` is the mechanism as causal scrubbing must see it: the induction head at S2 reads its
query from the S token (S2), its value from the token at S1+1 (X), and its key from the
previous-token head at every key position (the head's output at the other positions must not
match the query: resampled, it would contain S somewhere about half the time); the
previous-token head's output at token t is the token at t - 1, so it depends on every token
before the last. `BRIEF` is the shorter hypothesis of the issue (previous token only at S1+1,
depending on S1; induction depending on S2 and the previous-token class): it leaves out the
value token and the other key positions, and scrubbing shows it.

For the slow reference (tests/test_scrubbing_reference.py): `NOTHING_SCRUBBED` (every resample
is x itself: loss recovered exactly 1), `padded_pool` (the same prompts padded on both sides),
and `MIXED` on `loud_gpt2`, a random-weight model where every edge matters, so the gates of
the convention (q / in paths, held tokens) show in the metric.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import torch
import transformers as hf

from tests.planted_models import induction_problem
from wildcircuits.explanation.hypothesis import (
    LOGITS,
    ClaimedClass,
    ClaimedPath,
    Dependence,
    Hypothesis,
    PathSlot,
)
from wildcircuits.models import InstrumentedModel, wrap_hf_model
from wildcircuits.models.tokens import tokens_from_ids
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.results.explain import Pair
from wildcircuits.verification.resampling import ResamplePool, make_pool

EVERY = ("S1", "S1+1", "S2", "other")
INDUCTION = (Pair("L1.H0", "S2"),)


@functools.cache
def planted_pool(n: int = 96, seed: int = 0) -> ResamplePool:
    """`induction_problem(n)` with the variables S, X and F0..F9 (module doc)."""
    problem = induction_problem(n, seed=seed)
    ids = problem.clean.input_ids
    width = ids.shape[1]
    names = ["S", "X", *(f"F{j}" for j in range(width))]
    slots = torch.full((n, width), -1, dtype=torch.long)
    values = torch.full((n, len(names)), -1, dtype=torch.long)
    for row in range(n):
        s1, s2 = int(problem.named_positions["S1"][row]), int(problem.named_positions["S2"][row])
        for j in range(width):
            v = 0 if j in (s1, s2) else 1 if j == s1 + 1 else 2 + j
            slots[row, j] = v
            values[row, v] = int(ids[row, j])
    return make_pool(problem, slots, values, names, lists=[0] * len(names))


def _pairs(node: str, positions) -> tuple[Pair, ...]:
    return tuple(Pair(node, p) for p in positions)


def hypothesis(
    previous: tuple[Pair, ...] | None = None,
    previous_depends=("S1", "S1+1", "other"),
    induction=INDUCTION,
    induction_depends=("S2", "S1+1"),
    path: bool = True,
) -> Hypothesis:
    """A planted hypothesis: previous token -> induction (k) -> logits, with these parts
    (previous default: L0.H0 at every position)."""
    previous = previous if previous is not None else _pairs("L0.H0", EVERY)
    classes = (
        ClaimedClass("previous token", "previous token", tuple(previous),
                     Dependence(tuple(previous_depends))),
        ClaimedClass("induction", "induction", tuple(induction),
                     Dependence(tuple(induction_depends), ("previous token",) if path else ())),
    )  # fmt: skip
    paths = (ClaimedPath("induction", LOGITS, PathSlot.LOGITS, ("S2",)),)
    if path:
        paths = (ClaimedPath("previous token", "induction", PathSlot.K, ("S2",)), *paths)
    return Hypothesis("planted induction", "planted-induction", classes, paths)


TRUE = hypothesis()
BRIEF = hypothesis(previous=(Pair("L0.H0", "S1+1"),), previous_depends=("S1",),
                   induction_depends=("S2",))  # fmt: skip
WRONG = {
    # a member swapped for a dead head: the real previous-token head is resampled
    "swapped": hypothesis(previous=_pairs("L0.H1", EVERY)),
    # the previous-token -> induction path dropped: the key comes from x_rand
    "dropped path": hypothesis(path=False),
    # induction claimed to depend on S1 instead of S1+1 (the value token is resampled)
    "wrong dependence": hypothesis(induction_depends=("S2", "S1")),
    # the previous-token head claimed to depend on the token at S1+1 (its own) instead of S1
    "previous depends on S1+1": hypothesis(previous_depends=("S1+1",)),
}


#: `TRUE`'s two heads claimed as one class, "induction mechanism" (depending on the union of
#: their positions): a class whose members compose (the induction head's key reads the
#: previous-token head), which a class run must keep inside the class.
ONE_UNIT = Hypothesis(
    "planted induction", "planted-induction",
    (ClaimedClass("induction mechanism", None, (*_pairs("L0.H0", EVERY), *INDUCTION),
                  Dependence(EVERY)),),
    (ClaimedPath("induction mechanism", LOGITS, PathSlot.LOGITS, ("S2",)),),
)  # fmt: skip


@functools.cache
def template_problem(n: int = 64, seed: int = 0) -> PatchingProblem:
    """`induction_problem(n)` with one template per layout: rows grouped by their S1 index
    (numbered 0.. in order), so `mean:template` ablates each row with its layout's mean."""
    problem = induction_problem(n, seed=seed)
    _, groups = torch.unique(problem.named_positions["S1"], return_inverse=True)
    return replace(problem, groups=groups)


@functools.cache
def padded_pool(n: int = 48, seed: int = 0, pad: int = 2) -> ResamplePool:
    """`planted_pool`'s prompts and variables with `pad` padding tokens (id 0, mask 0): odd
    rows padded on the left (their named positions and metric position shifted), even rows on
    the right, so the pool has padded layouts of both sides (real tasks pad; padding tokens
    belong to no variable and no position)."""
    base = planted_pool(n, seed)
    problem = base.problem
    ids, width = problem.clean.input_ids, problem.clean.input_ids.shape[1]
    left = torch.arange(n) % 2 == 1  # (row,)
    index = torch.arange(width)[None, :] + torch.where(left, pad, 0)[:, None]  # (row, pos)

    def padded(source: torch.Tensor, fill: int) -> torch.Tensor:
        out = torch.full((n, width + pad), fill, dtype=source.dtype)
        return out.scatter(1, index, source)

    mask = padded(torch.ones_like(ids), 0)
    shift = torch.where(left, pad, 0)
    problem = replace(
        problem,
        clean=tokens_from_ids(padded(ids, 0), mask),
        corrupted=tokens_from_ids(padded(problem.corrupted.input_ids, 0), mask),
        positions=problem.positions + shift,
        named_positions={k: v + shift for k, v in problem.named_positions.items()},
    )
    return make_pool(problem, padded(base.slots, -1), base.values, base.variables,
                     lists=base.lists)  # fmt: skip


def _nothing_scrubbed() -> Hypothesis:
    """Scrub nothing: both live heads as classes at every position, each depending on every
    position (so every resample is x itself) and on every class before it, through every
    slot. The dead heads and MLPs (all weights zero) write nothing, so taking them from x_rand
    changes nothing; the embeddings into the logits are x_rand's, which the logits cannot tell
    apart (the unembedding reads only the answer subspace and every token embedding has the
    same norm, so the final LayerNorm scales alike)."""
    previous = ClaimedClass("previous token", None, _pairs("L0.H0", EVERY),
                            Dependence(EVERY))  # fmt: skip
    induction = ClaimedClass("induction", None, _pairs("L1.H0", EVERY),
                             Dependence(EVERY, ("previous token",)))  # fmt: skip
    into = tuple(ClaimedPath("previous token", "induction", PathSlot(s), EVERY) for s in "qkv")
    out = tuple(
        ClaimedPath(c, LOGITS, PathSlot.LOGITS, ("S2",)) for c in ("previous token", "induction")
    )
    return Hypothesis("planted induction", "planted-induction", (previous, induction), into + out)


def _mixed() -> Hypothesis:
    """For random weights, where every edge matters: members at some positions only, an MLP
    class, q and in paths gated to S2 of receivers that are members at S1+1 too (there the
    gate matters), k and v paths, a class read by two classes, three levels, two classes into the
    logits (11 class runs treeified)."""
    a = ClaimedClass("a", None, (*_pairs("L0.H1", ("S1", "S1+1", "S2")), Pair("L0.mlp", "other")),
                     Dependence(("S1",)))  # fmt: skip
    b = ClaimedClass("b", None, (*_pairs("L1.H2", ("S2", "S1+1")), Pair("L1.H0", "S1+1")),
                     Dependence(("S2",), ("a",)))  # fmt: skip
    c = ClaimedClass("c", None, (*_pairs("L1.mlp", ("S2", "S1+1")), Pair("L2.H3", "S2")),
                     Dependence(("S2", "S1+1"), ("b", "a")))  # fmt: skip
    paths = (
        ClaimedPath("a", "b", PathSlot.K, ("S2",)),
        ClaimedPath("a", "b", PathSlot.Q, ("S2",)),
        ClaimedPath("b", "c", PathSlot.IN, ("S2",)),
        ClaimedPath("b", "c", PathSlot.V, ("S2",)),
        ClaimedPath("a", "c", PathSlot.Q, ("S2",)),
        ClaimedPath("c", LOGITS, PathSlot.LOGITS, ("S2",)),
        ClaimedPath("b", LOGITS, PathSlot.LOGITS, ("S2",)),
    )
    return Hypothesis("planted induction", "tiny", (a, b, c), paths)


def _cyclic() -> Hypothesis:
    """A class-level cycle, acyclic member by member (as MLPs and duplicate-token heads at S2
    on SmolLM2 IOI): a = {L0.H1 at S1+1, L2.H0 at S2} feeds b = {L1.H2, L1.mlp at S2}, which
    feeds a; both into the logits. Treeified, a's L2.H0 reads b, b reads only a's L0.H1."""
    a = ClaimedClass("a", None, (Pair("L0.H1", "S1+1"), Pair("L2.H0", "S2")),
                     Dependence(("S1",)))  # fmt: skip
    b = ClaimedClass("b", None, (Pair("L1.H2", "S2"), Pair("L1.mlp", "S2")),
                     Dependence(("S2",), ("a",)))  # fmt: skip
    paths = (
        ClaimedPath("a", "b", PathSlot.K, ("S2",)),
        ClaimedPath("a", "b", PathSlot.IN, ("S2",)),
        ClaimedPath("b", "a", PathSlot.Q, ("S2",)),
        ClaimedPath("a", LOGITS, PathSlot.LOGITS, ("S2",)),
        ClaimedPath("b", LOGITS, PathSlot.LOGITS, ("S2",)),
    )
    return Hypothesis("planted induction", "tiny", (a, b), paths)


@functools.cache
def loud_gpt2() -> InstrumentedModel:
    """A random GPT-2 (3 layers, 4 heads) with weights of std 0.3 instead of 0.02, so that
    what a token at S1+1 reads reaches the logits at S2 well above float noise."""
    config = hf.GPT2Config(
        n_layer=3,
        n_head=4,
        n_embd=32,
        vocab_size=20,
        n_positions=16,
        initializer_range=0.3,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    with torch.random.fork_rng():  # seeded without touching the other tests' generator
        torch.manual_seed(0)
        model = hf.AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return wrap_hf_model(model, model_id="loud-gpt2")


NOTHING_SCRUBBED = _nothing_scrubbed()
MIXED = _mixed()
CYCLIC = _cyclic()
