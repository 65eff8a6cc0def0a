"""Causal scrubbing (`verification.scrubbing`) against a slow, obvious reference.

`SlowScrub` computes every claim's scrubbed logits by plain recursion over the treeified
hypothesis with `tests.edge_reference.reference_run`, where each receiver reads from each
sender a value picked token by token, exactly as `scrubbing.CONVENTION` words the rules: no
(source - base) corrections, no memo, no chunks, no resumed states.

Both sides draw their resamples from `Resampler(pool, seed)`. Every draw of one label has its
own generator seeded from (seed, label), so the reference gets the fast code's samples by
asking for the same (label, reference, positions); the labels are the fast code's naming
(`whole/C`, `whole/C<D/D`, `class C`, the path label, `x_rand`) and a test checks that both
sides asked for exactly the same draws, so a renamed label fails loudly instead of comparing
different resamples.

The planted model hides many wiring mistakes (dead heads, subspaces nothing reads), so the
same comparison runs on two random-weight models with a hypothesis whose gates matter, and
references that misread one rule (`Ungated`, `NotHeld`) must miss the fast code.

Tolerance: 1e-4 absolute on per-row metrics (logit differences of size 1 to 20). The models
are float32 and the two sides add the same sender outputs in another order (prefix sums and
(source - base) corrections against a per-sender loop), so they agree to float32 rounding:
measured at most 5e-7 (planted), 4e-6 (loud GPT-2), 2e-7 (tiny Gemma3); a misread rule moves
them by 3e-3 to 0.3.
"""

from __future__ import annotations

import functools
from dataclasses import replace

import pytest
import torch

from tests.edge_reference import reference_run
from tests.planted_models import planted_induction_model
from tests.scrub_fixtures import (
    BRIEF,
    CYCLIC,
    MIXED,
    NOTHING_SCRUBBED,
    TRUE,
    WRONG,
    loud_gpt2,
    padded_pool,
    planted_pool,
)
from tests.tiny_models import tiny_model
from wildcircuits.explanation.hypothesis import (
    LOGITS,
    ClaimedPath,
    Hypothesis,
    PathSlot,
)
from wildcircuits.graph.graph import Graph
from wildcircuits.models.tokens import tokens_from_ids
from wildcircuits.names import parse_display_node
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.verification.resampling import Resampler
from wildcircuits.verification.scrubbing import loss_recovered, measure, path_label, plans, scrub

N, SEED, BATCH = 32, 0, 12  # 32 prompts in chunks of 12, 12, 8: chunking is exercised too


class Recorder(Resampler):
    """A `Resampler` that records each draw as (label, positions, reference ids)."""

    def __init__(self, pool, seed):
        super().__init__(pool, seed)
        self.draws: set[tuple] = set()

    def free(self, label):
        self.draws.add((label, None, None))
        return super().free(label)

    def agreeing(self, reference, positions, label):
        self.draws.add((label, tuple(positions), reference.ids.numpy().tobytes()))
        return super().agreeing(reference, positions, label)


class SlowScrub:
    """The scrubbed logits (batch, vocab) of each claim of `h`, by the rules of the convention."""

    def __init__(self, model, h: Hypothesis, pool, seed: int):
        self.model, self.pool, self.h = model, pool, h
        self.graph = Graph.for_model(model)
        self.draw = Recorder(pool, seed)
        self.slots, self.names = pool.position_slots, pool.position_names  # (batch, pos)
        free = self.draw.free("x_rand")
        self.r_ids, self.free_ok = free.ids, free.ok
        self.valid = free.ok.clone()  # (batch,) rows whose resamples so far are all valid
        self.X = self.run(pool.ids, lambda row, s, own: own)[1]  # clean outputs of x
        self.R = self.run(self.r_ids, lambda row, s, own: own)[1]  # clean outputs of x_rand

    def run(self, ids, edge_value):
        tokens = tokens_from_ids(ids, self.pool.problem.clean.attention_mask)
        return reference_run(
            self.model, self.graph, tokens, edge_value, self.pool.problem.positions
        )

    def members(self, claimed) -> dict[int, torch.Tensor]:
        """sender column -> (batch, pos) bool: the tokens where that node is a member."""
        out: dict[int, torch.Tensor] = {}
        for pair in claimed.members:
            col = self.graph.sender_index[parse_display_node(pair.node, self.graph.shape)]
            hit = self.slots == self.names.index(pair.position)
            out[col] = out.get(col, torch.zeros_like(hit)) | hit
        return out

    def hits(
        self, path: ClaimedPath, sender, receiver, node: int | None
    ) -> dict[int, torch.Tensor]:
        """sender column -> (batch, pos) bool: the tokens where the receiver slot of `node`
        reads the sender class through `path` (q / in: only at the path's positions where
        `node` is a receiver member)."""
        out = self.members(sender)
        if path.slot in (PathSlot.Q, PathSlot.IN):
            wanted = torch.tensor([self.names.index(p) for p in path.positions])
            gate = torch.isin(self.slots, wanted) & self.members(receiver)[node]
            out = {col: hit & gate for col, hit in out.items()}
        return out

    def member_slots(self, claimed) -> dict[int, tuple[int, str]]:
        """receiver row -> (its node's sender column, slot) for every slot of the member nodes."""
        nodes = {parse_display_node(p.node, self.graph.shape) for p in claimed.members}
        index = self.graph.sender_index
        return {row: (index[r.node], r.slot.value)
                for row, r in enumerate(self.graph.receivers) if r.node in nodes}  # fmt: skip

    def class_run(self, claimed, ids, inputs) -> dict[int, torch.Tensor]:
        """Every sender's output in the class run of `claimed` on `ids`: its members' slots read
        the embeddings of ids, the class's own members from this run at their member tokens,
        each claimed input (path, sender class, outputs) at its tokens, and x_rand for
        everything else; every other receiver reads this run, except that a member node at its
        other (real) tokens is x_rand for every receiver (on Gemma3 the post-attention norm of
        a member's layer reads its non-member heads, so this shows)."""
        mine, itself = self.member_slots(claimed), self.composed(claimed)
        elsewhere = self.held(claimed)

        def edge_value(row, s, own):
            if s in elsewhere:
                own = torch.where(elsewhere[s][..., None], self.R[s], own)
            if row not in mine or s == 0:
                return own
            node, slot = mine[row]
            value = self.R[s]
            if s in itself:
                value = torch.where(itself[s][..., None], own, value)
            for path, sender, outs in inputs:
                hit = self.hits(path, sender, claimed, node).get(s)
                if path.slot.value == slot and hit is not None:
                    value = torch.where(hit[..., None], outs[s], value)
            return value

        return self.run(ids, edge_value)[1]

    def composed(self, claimed) -> dict[int, torch.Tensor]:
        """sender column -> (batch, pos): where a member reads another member of its own class
        from the class run (its member tokens)."""
        return self.members(claimed)

    def agree(self, reference, positions, label: str):
        """The draw of x' for every row (a row without a valid one is no longer valid)."""
        sample = self.draw.agreeing(reference, positions, label)
        at = torch.isin(self.slots, torch.tensor([self.names.index(p) for p in positions]))
        assert bool((sample.ids == reference.ids)[at & sample.ok[:, None]].all())  # x' agrees on P
        self.valid &= sample.ok
        return sample

    def computed(self, claimed, reference, label: str) -> dict[int, torch.Tensor]:
        """Treeified: `claimed` run on its resample of `reference`, each claimed sender class
        computed (recursively) on its own resample of that resample."""
        sample = self.agree(reference, claimed.depends_on.positions, f"{label}/{claimed.name}")
        inputs = []
        for path in self.h.paths_into(claimed.name):
            sender = self.upstream(self.h.class_named(path.sender), claimed)
            if sender.members:
                outs = self.computed(sender, sample, f"{label}/{claimed.name}<{sender.name}")
                inputs.append((path, sender, outs))
        return self.class_run(claimed, sample.ids, inputs)

    def upstream(self, sender, receiver):
        """The sender's members that some receiver member's input reads (in the graph)."""
        limit = max(self.graph.n_upstream(self.graph.receivers[row])
                    for row in self.member_slots(receiver))  # fmt: skip
        index = self.graph.sender_index
        kept = [p for p in sender.members
                if index[parse_display_node(p.node, self.graph.shape)] < limit]  # fmt: skip
        return replace(sender, members=tuple(kept))

    def reading(self, ids, reads, everywhere: bool = False):
        """Logits of the clean run of ids in which the logits (everywhere: every receiver) read
        `reads` [(hits, outputs)]: outputs[s] at the tokens hits[s]."""

        def edge_value(row, s, own):
            if row != self.graph.logits_receiver and not everywhere:
                return own
            for hits, outs in reads:
                if s in hits:
                    own = torch.where(hits[s][..., None], outs[s], own)
            return own

        return self.run(ids, edge_value)[0]

    def whole(self) -> torch.Tensor:
        reads = []
        for path in self.h.paths_into(LOGITS):
            sender = self.h.class_named(path.sender)
            outs = self.computed(sender, self.pool.reference(), "whole")
            reads.append((self.members(sender), outs))
        return self.reading(self.r_ids, reads)

    def class_alone(self, claimed) -> torch.Tensor:
        sample = self.agree(
            self.pool.reference(), claimed.depends_on.positions, f"class {claimed.name}"
        )
        inputs = [
            (p, self.h.class_named(p.sender), self.X) for p in self.h.paths_into(claimed.name)
        ]
        outs = self.class_run(claimed, sample.ids, inputs)
        # every receiver reads the class run at the member tokens
        return self.reading(self.pool.ids, [(self.members(claimed), outs)], everywhere=True)

    def path_alone(self, path: ClaimedPath) -> torch.Tensor:
        sender = self.h.class_named(path.sender)
        sample = self.agree(self.pool.reference(), sender.depends_on.positions, path_label(path))
        outs = self.run(sample.ids, lambda row, s, own: own)[1]  # clean run of the resample
        if path.receiver == LOGITS:
            return self.reading(self.pool.ids, [(self.members(sender), outs)])
        receiver = self.h.class_named(path.receiver)
        mine = self.member_slots(receiver)
        held = self.held(receiver)

        def edge_value(row, s, own):
            if s in held:  # the receiver's nodes at their other tokens: clean on x
                own = torch.where(held[s][..., None], self.X[s], own)
            if row in mine and mine[row][1] == path.slot.value:
                hit = self.hits(path, sender, receiver, mine[row][0]).get(s)
                if hit is not None:
                    own = torch.where(hit[..., None], outs[s], own)
            return own

        return self.run(self.pool.ids, edge_value)[0]

    def held(self, receiver) -> dict[int, torch.Tensor]:
        """sender column -> (batch, pos): the real tokens where a member node is no member."""
        return {col: ~hit & (self.slots >= 0) for col, hit in self.members(receiver).items()}

    def logits_alone(self) -> torch.Tensor:
        keep = {}
        for path in self.h.paths_into(LOGITS):
            for col, hit in self.members(self.h.class_named(path.sender)).items():
                keep[col] = keep.get(col, torch.zeros_like(hit)) | hit
        # the logits read x_rand wherever no class with a path into them is a member
        every = {
            s: ~keep.get(s, torch.zeros_like(self.slots, dtype=torch.bool))
            for s in range(self.graph.n_senders)
        }
        return self.reading(self.pool.ids, [(every, self.R)])

    def all_claims(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(logits, valid rows) in `plans` order: the whole hypothesis, each class, each path,
        the logits."""
        claims = [self.whole, *(functools.partial(self.class_alone, c) for c in self.h.classes)]
        claims += [functools.partial(self.path_alone, p) for p in self.h.paths]
        out = []
        for claim in [*claims, self.logits_alone]:
            self.valid = self.free_ok.clone()
            out.append((claim(), self.valid))
        return out


# the tests -----------------------------------------------------------------------------------
HYPOTHESES = {"true": TRUE, "brief": BRIEF, **WRONG, "nothing scrubbed": NOTHING_SCRUBBED}
# random-weight models scored on the planted prompts (token ids < 20, 10 tokens)
RANDOM = {
    "loud gpt2": (loud_gpt2, MIXED),
    "tiny gemma3": (lambda: tiny_model("gemma3_text"), MIXED),
    "cyclic gpt2": (loud_gpt2, CYCLIC),
}


def _case(name: str):
    if name in RANDOM:
        make, h = RANDOM[name]
        return make(), h
    return planted_induction_model(), HYPOTHESES[name]


POOLS = {"planted": lambda: planted_pool(N), "padded": padded_pool}


@functools.cache
def _fast(name: str, pool: str = "planted"):
    """plans, per-row metrics of `measure` and the draws, exactly as `scrub` makes them."""
    model, h = _case(name)
    pool = POOLS[pool]()
    draw = Recorder(pool, SEED)
    free = draw.free("x_rand")
    todo = plans(h, draw, free)
    m_model, m_random, scrubbed, _ = measure(EdgeForward(model), pool, todo, free, BATCH)
    return todo, m_model, m_random, scrubbed, free, draw.draws


@functools.cache
def _slow(name: str, pool: str = "planted"):
    pool = POOLS[pool]()
    slow = SlowScrub(*_case(name), pool=pool, seed=SEED)
    claims = slow.all_claims()
    rows = torch.stack([pool.problem.score(logits).double() for logits, _ in claims])
    return rows, torch.stack([valid for _, valid in claims]), slow.draw.draws


@pytest.mark.parametrize(
    ("name", "pool"),
    [(name, "planted") for name in [*HYPOTHESES, *RANDOM]]
    + [("true", "padded"), ("swapped", "padded"), ("loud gpt2", "padded")],
)
def test_every_claims_scrubbed_metric_matches_the_slow_reference_row_by_row(name, pool):
    todo, m_model, m_random, scrubbed, _, fast_draws = _fast(name, pool)
    slow, valid, slow_draws = _slow(name, pool)
    assert fast_draws == slow_draws  # the same resamples on both sides
    assert len(todo) == len(slow)
    for plan, fast_row, slow_row, ok in zip(todo, scrubbed, slow, valid, strict=True):
        assert plan.logits is not None and int(plan.ok.sum()) >= len(plan.ok) // 2, plan
        assert torch.equal(plan.ok, ok), plan.claim
        # rows without a valid resample are computed too (on the draw's fallback ids) where
        # their chunk has a valid row; they must agree as well
        done = torch.isfinite(fast_row)
        assert bool(done[plan.ok].all()), plan.claim
        torch.testing.assert_close(fast_row[done], slow_row[done], atol=1e-4, rtol=0,
                                   msg=plan.claim)  # fmt: skip
    if name not in ("true", "nothing scrubbed"):  # a wrong claim moves the metric
        assert float((slow - m_model).abs().max()) > 0.1


@pytest.mark.parametrize("name", ["true", "brief", "swapped"])
def test_scrub_reports_the_reference_loss_recovered(name):
    todo, m_model, m_random, _, _, _ = _fast(name)
    slow, valid, _ = _slow(name)
    result = scrub(planted_induction_model(), planted_pool(N), HYPOTHESES[name], seed=SEED,
                   n_boot=0, batch_size=BATCH, progress=False)  # fmt: skip
    for plan, claim, row, ok in zip(todo, result.claims, slow, valid, strict=True):
        assert claim.claim == plan.claim
        expected = loss_recovered(torch.stack([m_model[ok], m_random[ok], row[ok]]))
        assert claim.n_rows == int(ok.sum())
        assert claim.loss_recovered.value == pytest.approx(expected, abs=1e-4)


def test_scrubbing_nothing_recovers_exactly_one_for_every_claim():
    result = scrub(planted_induction_model(), planted_pool(N), NOTHING_SCRUBBED, seed=SEED,
                   n_boot=0, batch_size=BATCH, progress=False)  # fmt: skip
    assert result.m_model > result.m_random + 5  # a real gap, so the ratio means something
    free = _fast("nothing scrubbed")[4]
    for claim in result.claims:  # every row with an x_rand: x' = x is always valid
        assert claim.n_rows == int(free.ok.sum()), claim
        assert abs(claim.loss_recovered.value - 1) < 1e-6, claim


def test_model_and_random_rows_are_plain_forwards_scored_on_the_references_targets():
    _, m_model, m_random, _, free, _ = _fast("true")
    model, problem = planted_induction_model(), planted_pool(N).problem
    rows = torch.arange(N)

    def metric(ids):
        logits = model.hf_model(input_ids=ids).logits[rows, problem.positions]
        return problem.score(logits).double()

    torch.testing.assert_close(m_model, metric(problem.clean.input_ids), atol=1e-4, rtol=0)
    assert not torch.equal(free.ids, problem.clean.input_ids)
    torch.testing.assert_close(m_random, metric(free.ids), atol=1e-4, rtol=0)


class Ungated(SlowScrub):
    """A wrong reading of the convention: q / in paths enter at every sender member token."""

    def hits(self, path, sender, receiver, node):
        return self.members(sender)


class NotHeld(SlowScrub):
    """A wrong reading: a path alone lets the receiver's nodes change at their other tokens."""

    def held(self, receiver):
        return {}


class Uncomposed(SlowScrub):
    """A wrong reading: a class's members read each other from x_rand, like any unclaimed
    edge (so a class spanning layers loses its internal composition)."""

    def composed(self, claimed):
        return {}


@pytest.mark.parametrize(("wrong", "claims"), [
    (Ungated, ["the whole hypothesis", "class b", "class c", "path a -> b (q) at S2",
               "path b -> c (in) at S2"]),
    (NotHeld, ["path a -> b (k) at S2"]),  # only a k path changes other tokens that matter
    (Uncomposed, ["the whole hypothesis", "class c"]),  # c: L2.H3 at S2 reads L1.mlp
])  # fmt: skip
def test_the_comparison_sees_a_misread_rule(wrong, claims):
    """The mixed hypothesis on the loud model is sharp enough: a reference that misreads one
    rule of the convention misses the fast code by at least 10x the tolerance."""
    todo, _, _, scrubbed, _, _ = _fast("loud gpt2")
    model, h = _case("loud gpt2")
    pool = planted_pool(N)
    rows = wrong(model, h, pool, SEED).all_claims()
    for plan, fast_row, (logits, _) in zip(todo, scrubbed, rows, strict=True):
        if plan.claim in claims:
            assert float((fast_row - pool.problem.score(logits)).abs().nan_to_num().max()) > 1e-3


def test_a_class_level_cycle_unrolls_member_by_member():
    """The whole cyclic hypothesis is scrubbed (it was "not scrubbable: a cycle" before): a's
    late member reads b, b reads only a's early member, and the unroll stops there."""
    todo, _, _, scrubbed, _, draws = _fast("cyclic gpt2")
    whole = todo[0]
    assert whole.claim == "the whole hypothesis" and whole.logits is not None, whole.note
    assert bool(torch.isfinite(scrubbed[0][whole.ok]).all())
    labels = {label for label, _, _ in draws}
    assert "whole/a<b/b" in labels and "whole/a<b/b<a/a" in labels
    assert "whole/a<b/b<a/a<b/b" not in labels  # a's early member reads nothing of b


def test_a_tree_bigger_than_max_tree_is_not_scrubbed_and_says_how_many_runs_it_needs():
    model, h = _case("cyclic gpt2")
    draw = Resampler(planted_pool(N), SEED)
    free = draw.free("x_rand")
    whole = plans(h, draw, free, max_tree=3)[0]
    assert whole.logits is None
    # 7 tree nodes (a: 4, b: 3); b reads a through two paths (k and in), one draw: 5 runs
    assert "needs 5 class runs, more than max_tree = 3 (7 tree nodes" in whole.note
    assert plans(h, draw, free, max_tree=4)[0].logits is None
    assert plans(h, draw, free, max_tree=5)[0].logits is not None


def test_identical_subtrees_count_once_against_max_tree():
    """Where every class depends on every position, each resample is its reference itself, so
    the previous-token class reached four times (into the logits, and into induction's q, k
    and v) is one run: 2 runs for 5 tree nodes (its scrub matching the slow reference is
    `test_every_claims_scrubbed_metric_matches_the_slow_reference_row_by_row`)."""
    draw = Resampler(planted_pool(N), SEED)
    free = draw.free("x_rand")
    assert "needs 2 class runs, more than max_tree = 1 (5 tree nodes" in (
        plans(NOTHING_SCRUBBED, draw, free, max_tree=1)[0].note
    )
    assert plans(NOTHING_SCRUBBED, draw, free, max_tree=2)[0].logits is not None


def test_a_tree_with_too_many_nodes_is_refused_before_any_draw(monkeypatch):
    """`tree_nodes` counts from the class graph what `build_tree` builds (7 nodes for the
    cyclic case, 5 for the everything-depends case); above NODES_PER_RUN x max_tree nodes the
    whole hypothesis is refused without drawing one resample (a big tree's draws alone can
    take half an hour)."""
    from wildcircuits.explanation.hypothesis import LOGITS
    from wildcircuits.verification import scrubbing

    for h, expected in ((_case("cyclic gpt2")[1], 7), (NOTHING_SCRUBBED, 5)):
        counted = sum(scrubbing.tree_nodes(h, h.class_named(p.sender))
                      for p in h.paths_into(LOGITS))  # fmt: skip
        assert counted == expected
    h = _case("cyclic gpt2")[1]
    monkeypatch.setattr(scrubbing, "NODES_PER_RUN", 1)
    draw = Recorder(planted_pool(N), SEED)
    whole = plans(h, draw, draw.free("x_rand"), max_tree=6)[0]
    assert whole.logits is None and "has 7 tree nodes, more than 1 x max_tree = 6" in whole.note
    assert not any(label.startswith("whole") for label, _, _ in draw.draws)
    assert plans(h, draw, draw.free("x_rand"), max_tree=7)[0].logits is not None
