"""Components at positions: the position index, per-template means, pair attribution against
finite differences, exact pair metrics' invariants, and a planted circuit the search must find
exactly."""

from __future__ import annotations

import copy
import functools
from dataclasses import replace

import pytest
import torch

from tests.discovery_fixtures import double_model, tiny_problem
from tests.tiny_models import VOCAB, tiny_model
from wildcircuits.discovery.common import loss_value
from wildcircuits.errors import GraphError, WildcircuitsError
from wildcircuits.explanation.pair_evaluator import PairEvaluator, pair_metrics
from wildcircuits.explanation.position_search import find_position_circuit
from wildcircuits.explanation.positions import pair_space, parse_pair, position_index, score_pairs
from wildcircuits.graph.nodes_circuit import NodeCircuit
from wildcircuits.models import wrap_hf_model
from wildcircuits.models.tokens import tokens_from_ids
from wildcircuits.patching.ablation_spec import AblationError, AblationSpec
from wildcircuits.patching.edge_ablation import AblationCache
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.results.explain import Pair
from wildcircuits.tasks.metrics import make_targets


def _named(problem: PatchingProblem) -> PatchingProblem:
    """Named positions on the tiny problem (rows 1 / 2 right- / left-padded)."""
    named = {
        "END": problem.positions,
        "S1": torch.tensor([1, 1, 3]),
        "IO": torch.tensor([0, 2, 2]),
    }
    return replace(problem, named_positions=named, groups=torch.tensor([0, 1, 0]))


# the position index -----------------------------------------------------------------------------
def test_position_index_names_in_prompt_order_then_s1_plus_1_then_other():
    problem = _named(tiny_problem(tiny_model("llama")))
    names, index = position_index(problem)
    assert names == ("IO", "S1", "END", "S1+1", "other")
    expected = torch.tensor(
        [
            [0, 1, 3, 4, 4, 4, 4, 4, 2],
            [4, 1, 0, 4, 4, 2, -1, -1, -1],  # S1+1 (2) yields to IO; padding -1
            [-1, -1, 0, 1, 3, 4, 4, 4, 2],
        ]
    )
    assert torch.equal(index, expected)
    # without S1 there is no S1+1
    plain = replace(problem, named_positions={"END": problem.positions})
    assert position_index(plain)[0] == ("END", "other")


def test_pair_names_parse_and_bad_pairs_raise():
    assert parse_pair("L3.H2@END") == Pair("L3.H2", "END")
    assert parse_pair("L0.mlp@S1+1").name == "L0.mlp@S1+1"
    for bad, message in [("L3.H2", "COMPONENT@POSITION"), ("input@END", "heads and MLPs")]:
        with pytest.raises(GraphError, match=message):
            parse_pair(bad)
    problem = _named(tiny_problem(tiny_model("llama")))
    space = pair_space(EdgeForward(tiny_model("llama")).graph, problem)
    with pytest.raises(GraphError, match="unknown position 'S9'"):
        space.cell(Pair("L0.H1", "S9"))
    with pytest.raises(WildcircuitsError):
        space.cell(Pair("L7.H1", "END"))


# mean over each template ------------------------------------------------------------------------
def test_mean_template_spec_round_trips_and_is_for_means_only():
    for text in ("mean:template", "mean:clean:template:pooled"):
        assert AblationSpec.parse(text).format() == text
    assert AblationSpec.parse("mean:template").per_template
    assert AblationSpec.parse("mean:template").describe()["mean_per_template"] is True
    with pytest.raises(AblationError, match="takes no template"):
        AblationSpec.parse("counterfactual:template")


@pytest.mark.parametrize("pooled", [False, True])
def test_mean_template_values_equal_a_loop_over_templates(pooled):
    model = tiny_model("gemma3_text")
    engine = EdgeForward(model)
    problem = replace(tiny_problem(model, batch=5), groups=torch.tensor([1, 0, 1, 1, 0]))
    spec = "mean:template:pooled" if pooled else "mean:template"
    values = AblationCache(engine, problem, spec, batch_size=2).values(problem)
    outputs = engine.outputs(problem.corrupted)  # (batch, pos, sender, d_model)
    real = problem.corrupted.attention_mask.bool()
    for row in range(problem.batch):
        same = problem.groups == problem.groups[row]
        weight = (real & same[:, None]).to(outputs.dtype)[:, :, None, None]  # (batch, pos, 1, 1)
        dims = (0, 1) if pooled else (0,)
        expected = (outputs * weight).sum(dims) / weight.sum(dims).clamp(min=1)
        torch.testing.assert_close(values[row].squeeze(0) if pooled else values[row], expected)
    one = replace(problem, groups=torch.zeros(5, dtype=torch.long))
    plain = AblationCache(engine, problem, "mean", batch_size=2).values(problem)
    single = AblationCache(engine, one, "mean:template", batch_size=2).values(one)
    torch.testing.assert_close(single, plain.expand_as(single))
    with pytest.raises(WildcircuitsError, match="per-row template ids"):
        AblationCache(engine, replace(problem, groups=None), "mean:template", batch_size=2)


def test_groups_follow_row_selection_and_must_match_the_batch():
    problem = _named(tiny_problem(tiny_model("llama")))
    assert problem.select([2, 1]).groups.tolist() == [0, 1]
    assert [p.groups.tolist() for _, p in problem.chunks(2)] == [[0, 1], [0]]
    with pytest.raises(WildcircuitsError, match="one group id per row"):
        replace(problem, groups=torch.tensor([0, 1]))


# attribution ------------------------------------------------------------------------------------
def test_pair_attribution_equals_the_derivative_of_the_loss():
    """score(u, P) = d/dt L(u's output at P's tokens moved t of the way to its ablation)."""
    model = double_model("llama")
    engine = EdgeForward(model)
    problem = tiny_problem(model, batch=3)
    problem = replace(
        problem, named_positions={"END": problem.positions, "S1": torch.tensor([1, 2, 3])}
    )
    scores = {s.pair: s.attribution for s in score_pairs(model, problem, batch_size=2)}
    space = pair_space(engine.graph, problem)
    clean, corrupted = engine.outputs(problem.clean), engine.outputs(problem.corrupted)
    for pair in [Pair("L0.H1", "S1"), Pair("L1.mlp", "other"), Pair("L2.H3", "END")]:
        slot, column = space.cell(pair)
        where = (space.index == slot).to(clean.dtype)[:, :, None]  # (batch, pos, 1)
        diff = (corrupted[:, :, column] - clean[:, :, column]) * where

        def central(h: float, column=column, diff=diff) -> float:
            def loss(t: float) -> float:
                override = {column: clean[:, :, column] + t * diff}
                run = engine.run(problem.clean, problem.positions, override=override)
                return float(loss_value(problem, run.logits))

            return (loss(h) - loss(-h)) / (2 * h)

        # Richardson-extrapolated central differences (softmaxes run in float32: large steps)
        derivative = (4 * central(1e-2) - central(2e-2)) / 3
        assert abs(derivative) > 1e-4  # the pair matters
        assert scores[pair] == pytest.approx(derivative, rel=1e-3, abs=1e-6)
    assert len(scores) == 3 * 5 * 4  # 3 layers x (4 heads + MLP) x 4 positions
    assert list(scores.values()) == sorted(scores.values(), key=lambda v: -abs(v))


# a planted circuit ------------------------------------------------------------------------------
X, LENGTH = 3, 8
PLANTED = {Pair("L1.mlp", "X"), Pair("L2.H3", "END")}


@functools.cache
def planted_model():
    """The tiny llama with every head's output projection zeroed except L2.H3's, and every MLP
    except layer 1's. The prompts differ only at X, so the only paths from X to the logits at
    END are X -> L2.H3 (k / v at X) -> END and X -> L1.mlp at X -> L2.H3 -> END: the circuit is
    L1.mlp@X and L2.H3@END, and every other pair changes nothing at all."""
    hf_model = copy.deepcopy(tiny_model("llama").hf_model)
    d_head = 32 // 4
    with torch.no_grad():
        for layer, block in enumerate(hf_model.model.layers):
            for head in range(4):
                if (layer, head) != (2, 3):
                    block.self_attn.o_proj.weight[:, head * d_head : (head + 1) * d_head] = 0
            if layer != 1:
                block.mlp.down_proj.weight.zero_()
            else:
                block.mlp.down_proj.weight.mul_(4.0)
    return wrap_hf_model(hf_model, model_id="tiny-llama-planted")


def planted_problem(model, batch: int = 6, seed: int = 0) -> PatchingProblem:
    """Two templates (rows alternate): a template's rows share every token but X, so the
    mean over a template (`mean:template`) equals the clean run everywhere X cannot reach, and
    the planted circuit is the same under counterfactual and mean ablation."""
    generator = torch.Generator().manual_seed(seed)
    groups = torch.arange(batch) % 2
    ids = torch.randint(3, VOCAB, (2, LENGTH), generator=generator)[groups]
    ids[:, X] = torch.randint(3, VOCAB, (batch,), generator=generator)
    other = ids.clone()
    other[:, X] = (ids[:, X] + torch.randint(1, VOCAB - 3, (batch,), generator=generator)) % (
        VOCAB - 3
    ) + 3
    clean, corrupted = tokens_from_ids(ids), tokens_from_ids(other)
    answers = torch.randint(3, VOCAB, (batch, 2), generator=generator)
    targets = make_targets([[int(a)] for a in answers[:, 0]], [[int(d)] for d in answers[:, 1]])
    named = {"A": torch.full((batch,), 1), "X": torch.full((batch,), X), "END": clean.last_index}
    return PatchingProblem(
        clean=clean,
        corrupted=corrupted,
        positions=clean.last_index,
        targets=targets,
        named_positions=named,
        provenance={"split": "planted"},
        groups=groups,
    )


def test_planted_pairs_are_each_needed_and_together_sufficient():
    """The construction itself: full and empty circuits, the planted pair set, each planted
    pair removed, and a non-member removed (exactly nothing changes)."""
    model = planted_model()
    problem = planted_problem(model)
    evaluator = PairEvaluator(EdgeForward(model), problem)
    everything = pair_space(evaluator.engine.graph, problem).all_pairs()
    planted = sorted(PLANTED, key=lambda p: p.name)
    others = [p for p in everything if p not in PLANTED]
    full, empty, alone, *dropped = evaluator.faithfulness(
        [everything, [], planted, *([q for q in planted if q != p] for p in planted), others]
    )
    assert (full, empty) == (1.0, 0.0)
    assert alone == pytest.approx(1.0, abs=1e-5)
    assert min(abs(1.0 - f) for f in dropped) > 0.5  # each planted pair carries the effect
    clean = model.logits(problem.clean, positions=problem.positions)
    assert evaluator.m_full == pytest.approx(float(problem.score(clean).mean()), abs=1e-6)
    without_one = [p for p in everything if p != Pair("L0.H2", "X")]
    assert evaluator.metrics([without_one])[0] == pytest.approx(evaluator.m_full, abs=1e-6)


def test_search_finds_exactly_the_planted_pairs():
    model = planted_model()
    search, heldout = planted_problem(model), planted_problem(model, seed=1)
    circuit = find_position_circuit(
        model, search, heldout, target=0.95, extra_ablations=("mean:template",), progress=False
    )
    assert set(circuit.pairs) == PLANTED
    assert (circuit.n_heads, circuit.n_mlps) == (1, 1)
    assert circuit.reached
    counterfactual, mean = circuit.faithfulness
    assert counterfactual.ablation == "counterfactual" and mean.ablation == "mean:template"
    assert counterfactual.faithfulness == pytest.approx(1.0, abs=1e-5)
    assert counterfactual.split == "planted" and counterfactual.n_prompts == 6
    # the planted pairs rank first; every other attribution is exactly zero
    assert {s.pair for s in circuit.candidates[:2]} == PLANTED
    assert all(s.attribution == 0.0 for s in circuit.candidates[2:])
    assert mean.faithfulness == pytest.approx(1.0, abs=1e-5)  # templated: the same circuit
    assert circuit.search_target == pytest.approx(0.975)
    assert circuit.searched_under == ("counterfactual", "mean:template")
    # one chunk: full + empty + 2 growth + 3 pruning tries under counterfactual; under
    # mean:template full + empty + the one set the counterfactual passed (top 2); then 3 per
    # held-out ablation. Dropping the second planted pair leaves the top-1 circuit, evaluated
    # in the growth, and dropping both the empty circuit
    assert len(circuit.search) == 5 and circuit.forwards == 5 + 3 + 2 * 3
    assert [s.evaluated for s in circuit.search] == [True, True, False, False, True]
    assert [len(s.extra) for s in circuit.search] == [0, 1, 0, 0, 0]
    assert circuit.search[0].action == "top 1"


def test_pair_metrics_stacked_equals_one_at_a_time_and_respects_nodes():
    model = tiny_model("gemma3_text")
    problem = _named(tiny_problem(model))
    candidates = score_pairs(model, problem, nodes=["L1.H0", "L2.mlp"])
    assert {s.pair.node for s in candidates} == {"L1.H0", "L2.mlp"}
    circuits = [[s.pair for s in candidates[:k]] for k in range(len(candidates))]
    together = pair_metrics(model, problem, circuits, batch_size=2)
    apart = [pair_metrics(model, problem, [c], batch_size=2).metric[0] for c in circuits]
    assert together.metric == pytest.approx(apart, abs=1e-6)
    assert together.forwards == 2 * (len(circuits) + 2)  # two chunks, plus full and empty
    # every pair kept: the position-free full circuit; none: every head and MLP removed
    engine = EdgeForward(model)
    values = engine.outputs(problem.corrupted)
    removed = NodeCircuit(engine.graph, frozenset()).ablated()
    run = engine.run(problem.clean, problem.positions, ablated=removed, ablation=values)
    assert together.m_empty == pytest.approx(float(problem.score(run.logits).mean()), abs=1e-5)


def test_integrated_attribution_keeps_the_planted_ranking_and_needs_counterfactual():
    model = planted_model()
    problem = planted_problem(model)
    scores = score_pairs(model, problem, steps=4, batch_size=4)
    assert {s.pair for s in scores[:2]} == PLANTED
    assert all(s.attribution == 0.0 for s in scores[2:])
    plain = {s.pair: s.attribution for s in score_pairs(model, problem, batch_size=4)}
    assert any(abs(s.attribution - plain[s.pair]) > 1e-4 for s in scores[:2])  # a new path
    with pytest.raises(WildcircuitsError, match="counterfactual ablation only"):
        score_pairs(model, problem, spec="mean", steps=4)


class _Rule:
    """A stand-in `PairEvaluator`: faithfulness is a fixed function of the kept set under
    ablation `spec`; counts the sets it evaluates."""

    def __init__(self, value, spec="counterfactual"):
        self.value, self.calls = value, []
        self.spec = AblationSpec.coerce(spec)

    def traced(self, pairs, base=None):
        self.calls.append(frozenset(pairs))
        return self.value(frozenset(pairs)), None


def _slow_prune(value, members, target):
    """The pruning spelled out with one evaluation per try (the reference for `_Search`)."""
    kept, blocks, tries = list(members), [list(reversed(members))], []
    while blocks:
        block = blocks.pop(0)
        rest = [p for p in kept if p not in block]
        f = value(frozenset(rest))
        tries.append((len(rest), f))
        if abs(1.0 - f) <= 1.0 - target:
            kept = rest
        elif len(block) > 1:
            blocks[:0] = [block[: len(block) // 2], block[len(block) // 2 :]]
    return kept, tries


@pytest.mark.parametrize("seed", range(6))
def test_pruning_reuses_known_sets_and_equals_the_one_try_at_a_time_reference(seed):
    from wildcircuits.explanation.position_search import _Search

    members = [Pair(f"L{i}.H0", "END") for i in range(12)]
    weights = torch.rand(12, generator=torch.Generator().manual_seed(seed))
    needed = {p for p, w in zip(members, weights, strict=True) if w > 0.6}

    def value(kept):  # not monotone: a non-needed member present costs a little
        return len(kept & needed) / max(1, len(needed)) - 0.01 * len(kept - needed)

    rule = _Rule(value)
    search = _Search([rule], target=0.8, progress=False)
    kept = search.prune(members)
    slow_kept, tries = _slow_prune(value, members, 0.8)
    assert kept == slow_kept
    assert [(s.n_pairs, s.faithfulness) for s in search.steps] == tries
    assert len(rule.calls) == len(set(rule.calls)) == search.evaluations  # each set once
    assert search.evaluations == sum(s.evaluated for s in search.steps)
    assert search.evaluations < len(tries) or seed  # seed 0 meets a known set at least


def test_a_set_reaches_only_under_every_ablation_and_the_extra_is_evaluated_after_the_first():
    from wildcircuits.explanation.position_search import _Search

    a, b, c, d = (Pair(f"L{i}.H0", "END") for i in range(4))
    first = _Rule(lambda kept: 1.0 if a in kept else 0.0)  # counterfactual: only a matters
    extra = _Rule(
        lambda kept: 1.0 if {a, c} <= kept else 0.5, "mean:template"
    )  # mean: a and c are needed
    search = _Search([first, extra], target=0.8, progress=False)
    assert search.prune([a, b, c, d]) == [a, c]
    # the extra ablation sees only the sets the first one passes
    assert set(extra.calls) == {s for s in first.calls if a in s}
    assert any(c not in kept for kept in extra.calls)  # c kept because the extra missed
    for step in search.steps:
        assert len(step.extra) == (1 if step.faithfulness == 1.0 else 0)
    alone = _Search([first], target=0.8, progress=False)
    assert alone.prune([a, b, c, d]) == [a]  # what the first ablation alone would keep


def test_a_target_no_prefix_reaches_returns_every_candidate_without_pruning():
    from wildcircuits.explanation.position_search import _Search

    ranked = [Pair(f"L{i}.H0", "END") for i in range(10)]
    first = _Rule(lambda kept: len(kept) / 10)  # reaches 0.9 from 9 pairs on
    extra = _Rule(lambda kept: 1.5, "mean:template")  # overshoots whatever is kept
    search = _Search([first, extra], target=0.9, progress=False)
    assert search.circuit(ranked) == ranked and not search.pruned
    # growth only: 1, 2, 4, 8, then every candidate; the extra sees the one set that passes
    assert [s.n_pairs for s in search.steps] == [1, 2, 4, 8, 10]
    assert extra.calls == [frozenset(ranked)]
    reachable = _Search([first], target=0.9, progress=False)
    assert len(reachable.circuit(ranked)) == 9 and reachable.pruned


def test_where_no_prefix_reaches_under_every_ablation_the_first_alone_finds_the_circuit():
    from wildcircuits.explanation.position_search import _Search

    ranked = [Pair(f"L{i}.H0", "END") for i in range(8)]
    needed = set(ranked[:3])
    first = _Rule(lambda kept: len(kept & needed) / 3)
    extra = _Rule(lambda kept: 1.5, "mean:template")  # overshoots whatever is kept
    search = _Search([first, extra], target=0.9, progress=False)
    assert search.circuit_or_fallback(ranked) == ranked[:3]
    assert search.searched_under == ("counterfactual",) and search.pruned
    assert len(first.calls) == len(set(first.calls))  # the first pass's values are reused
    again = [s for s in search.steps if s.action.endswith("[counterfactual alone]")]
    assert again and not any(s.evaluated for s in again[:3])  # growth: known sets
    never = _Search([_Rule(lambda kept: 0.5), extra], target=0.9, progress=False)
    assert never.circuit_or_fallback(ranked) == ranked
    assert never.searched_under == ()


def test_where_no_prefix_reaches_the_margin_the_first_alone_at_the_target_finds_the_circuit():
    from wildcircuits.explanation.position_search import _Search

    ranked = [Pair(f"L{i}.H0", "END") for i in range(8)]
    needed = set(ranked[:3])
    first = _Rule(lambda kept: 0.85 * len(kept & needed) / 3)  # at most 0.85: misses 0.9
    extra = _Rule(lambda kept: 1.5, "mean:template")
    search = _Search([first, extra], target=0.9, progress=False, fallback_target=0.8)
    assert search.circuit_or_fallback(ranked) == ranked[:3]
    assert search.pruned and search.target == 0.8 and search.searched_under == ("counterfactual",)
    assert len(first.calls) == len(set(first.calls))  # no set evaluated twice over the stages
    last = [s for s in search.steps if s.action.endswith("[counterfactual alone, at 0.8]")]
    assert last and not any(s.evaluated for s in last[:3])  # its growth reads known values
    never = _Search([_Rule(lambda kept: 0.5), extra], target=0.9, progress=False,
                    fallback_target=0.8)  # fmt: skip
    assert never.circuit_or_fallback(ranked) == ranked and never.searched_under == ()
    # without a fallback target (or one not below the target) there is no third stage
    none = _Search([_Rule(lambda kept: 0.85 * len(kept & needed) / 3)], target=0.9, progress=False)
    assert none.circuit_or_fallback(ranked) == ranked and not none.pruned


def test_the_search_target_keeps_a_margin_for_the_heldout_split():
    from wildcircuits.explanation.position_search import SEARCH_SLACK, faithful, search_target

    assert search_target(0.8) == pytest.approx(1.0 - SEARCH_SLACK * 0.2)
    assert 0.8 < search_target(0.8) < 1.0 and search_target(1.0) == 1.0
    assert faithful(0.85, 0.8) and not faithful(0.85, search_target(0.8))
    assert faithful(1.15, 0.8) and not faithful(1.21, 0.8)  # symmetric about the full model


def test_pruning_a_failed_block_whose_first_half_drops_reuses_the_block():
    from wildcircuits.explanation.position_search import _Search

    a, b, c, d = (Pair(f"L{i}.H0", "END") for i in range(4))
    rule = _Rule(lambda kept: 1.0 if a in kept else 0.0)
    search = _Search([rule], target=0.8, progress=False)
    assert search.prune([a, b, c, d]) == [a]
    # drop all (the empty circuit: known, no), drop d, c (yes), drop b, a = drop all (known:
    # no), drop b (yes), drop a (known: no)
    assert [s.evaluated for s in search.steps] == [False, True, False, True, False]
    assert rule.calls == [frozenset({a, b}), frozenset({a})]
