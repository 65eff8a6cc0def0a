"""Resumed pair evaluations (`PairEvaluator.traced`): a circuit run from another circuit's
residual stream at the first layer where they differ equals its full run (every family, with
and without a shared prefix, several chunks), the resume really reads the base's state, and a
node-position resume state refuses runs that need sender outputs."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from tests.discovery_fixtures import tiny_problem
from tests.tiny_models import FAMILIES, tiny_model
from wildcircuits.errors import WildcircuitsError
from wildcircuits.explanation.pair_evaluator import PairEvaluator, Trace
from wildcircuits.explanation.positions import pair_space
from wildcircuits.models.tokens import Tokens
from wildcircuits.patching.edges import EdgeForward, Resume


def _named(problem):
    named = {"END": problem.positions, "S1": torch.tensor([1, 1, 3])}
    return replace(problem, named_positions=named)


def _shared(problem, shared: int = 4):
    """Corrupted prompts agreeing with the clean ones on their first `shared` columns."""
    clean = problem.clean
    ids = problem.corrupted.input_ids.clone()
    ids[:, :shared] = clean.input_ids[:, :shared]
    corrupted = Tokens(ids, clean.attention_mask, clean.position_ids, clean.last_index)
    return replace(problem, corrupted=corrupted)


def _evaluator(family: str, share: bool, batch_size: int = 2) -> PairEvaluator:
    model = tiny_model(family)
    problem = _named(tiny_problem(model))
    problem = _shared(problem) if share else problem
    return PairEvaluator(EdgeForward(model), problem, batch_size=batch_size)


def _layer_of(pair) -> int:
    return int(pair.node.split(".")[0][1:])


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("share", [False, True])
def test_a_resumed_circuit_equals_its_full_run(family, share):
    evaluator = _evaluator(family, share)
    if share:
        assert any(p is not None for p in evaluator.prefixes)  # the prefix is really used
    pairs = pair_space(evaluator.engine.graph, evaluator.problem).all_pairs()
    generator = torch.Generator().manual_seed(0)
    base_pairs = [p for p in pairs if torch.rand(1, generator=generator) < 0.6]
    top = max(_layer_of(p) for p in pairs)
    variants = [
        [p for p in base_pairs if _layer_of(p) != top],  # differs at the last layer only
        [*base_pairs, *(p for p in pairs if _layer_of(p) == top and p not in base_pairs)],
        [p for p in base_pairs if _layer_of(p) < 1],  # differs from layer 1 on
        [p for p in pairs if p not in base_pairs],  # differs everywhere
    ]
    value, base = evaluator.traced(base_pairs)
    assert value == pytest.approx(evaluator.faithfulness([base_pairs])[0], abs=1e-6)
    assert len(base.states) == len(evaluator.chunks) == 2
    assert sorted(base.states[0]) == list(range(evaluator.engine.model.n_layers))
    for variant in variants:
        resumed, trace = evaluator.traced(variant, base)
        (full,) = evaluator.faithfulness([variant])
        assert resumed == pytest.approx(full, abs=1e-6)
        # the variant's own trace resumes the base circuit back to the base's value
        again, _ = evaluator.traced(base_pairs, trace)
        assert again == pytest.approx(value, abs=1e-6)
    assert evaluator._first_difference(base.kept, evaluator.space.kept(variants[0])) == top


def test_the_resume_reads_the_base_state():
    """A base whose states are shifted gives a different value when resumed at a later layer,
    and the same value when the circuits differ at layer 0 (nothing is resumed then)."""
    evaluator = _evaluator("llama", share=False)
    pairs = pair_space(evaluator.engine.graph, evaluator.problem).all_pairs()
    top = max(_layer_of(p) for p in pairs)
    _, base = evaluator.traced(pairs)
    shifted = Trace(base.kept, [{k: v + 1.0 for k, v in s.items()} for s in base.states], base.rows)
    late = [p for p in pairs if _layer_of(p) != top]
    (full,) = evaluator.faithfulness([late])
    assert evaluator.traced(late, shifted)[0] != pytest.approx(full, abs=1e-3)
    early = [p for p in pairs if _layer_of(p) != 0]
    (full_early,) = evaluator.faithfulness([early])
    assert evaluator.traced(early, shifted)[0] == pytest.approx(full_early, abs=1e-6)


def test_a_node_position_resume_state_refuses_runs_that_keep_outputs():
    evaluator = _evaluator("gpt2", share=False)
    (rows, chunk), values = evaluator.chunks[0], evaluator.values[0]
    _, base = evaluator.traced([])
    start = Resume(1, base.states[0][1], None)
    with pytest.raises(WildcircuitsError, match="no sender outputs"):
        evaluator.engine.run(
            chunk.clean, chunk.positions, ablation=values, keep_outputs=True, start=start,
            node_ablated=evaluator.space.mask(evaluator.space.kept([]), rows),
        )  # fmt: skip


@pytest.mark.parametrize("family", ["gpt2", "gemma3_text"])
@pytest.mark.parametrize("share", [False, True])
def test_stacked_circuits_resumed_from_two_bases_equal_their_full_runs(family, share):
    evaluator = _evaluator(family, share, batch_size=3)  # one chunk: 21 copies a forward
    pairs = pair_space(evaluator.engine.graph, evaluator.problem).all_pairs()
    generator = torch.Generator().manual_seed(1)
    circuit = [p for p in pairs if torch.rand(1, generator=generator) < 0.5]
    sets = [[p for p in pairs if p != drop] for drop in pairs]  # M minus one pair
    sets += [[p for p in circuit if p != drop] for drop in circuit]  # C minus one pair
    sets += [[], None, circuit, [p for p in pairs if p not in circuit]]
    full = evaluator.row_metrics(sets)
    forwards = evaluator.forwards
    bases = [evaluator.traced(pairs)[1], evaluator.traced(circuit)[1]]
    resumed = evaluator.row_metrics(sets, bases)
    torch.testing.assert_close(resumed, full, atol=1e-6, rtol=1e-6)
    assert evaluator.forwards - forwards == 2 + len(sets)  # a resumed circuit counts as one
    assert torch.allclose(bases[1].rows, full[-2], atol=1e-6)
    # most sets resume some base after layer 0
    starts = [evaluator._closest(evaluator.space.kept(s), bases) for s in sets]
    assert sum(layer > 0 for _, layer in starts) > len(sets) // 2
    assert {base for base, layer in starts if layer > 0} == {0, 1}
