"""ROC AUC of edge scores: against a brute-force pairwise count, its fixed points, and the
planted induction model (tests/planted_models.py), whose true edges are known by construction."""

from __future__ import annotations

import itertools

import pytest
import torch

from tests.planted_models import planted_case, planted_edges, planted_induction_model
from wildcircuits.discovery import get_method
from wildcircuits.discovery.common import loss_value
from wildcircuits.evaluation.roc import (
    RocError,
    ranked_values,
    roc_auc,
    roc_curve,
    score_against_planted,
    truth_mask,
)
from wildcircuits.graph.circuit import Circuit, EdgeScores
from wildcircuits.patching.edges import EdgeForward


def pairwise_auc(scores: list[float], truth: list[bool]) -> float:
    """The definition, one (true, false) pair at a time: 1 if the true edge is above, 0.5 tie."""
    wins = 0.0
    pairs = 0
    for (s, t), (s2, t2) in itertools.product(zip(scores, truth, strict=True), repeat=2):
        if t and not t2:
            wins += 1.0 if s > s2 else 0.5 if s == s2 else 0.0
            pairs += 1
    return wins / pairs


# roc_auc / roc_curve on synthetic data ---------------------------------------------------------
@pytest.mark.parametrize("seed", range(6))
def test_auc_equals_the_pairwise_count_with_ties(seed):
    generator = torch.Generator().manual_seed(seed)
    scores = torch.randint(0, 5, (57,), generator=generator).float()  # many ties
    truth = torch.rand(57, generator=generator) < 0.3
    expected = pairwise_auc(scores.tolist(), truth.tolist())
    assert roc_auc(scores, truth) == pytest.approx(expected, abs=1e-12)
    fpr, tpr = roc_curve(scores, truth)
    assert torch.trapezoid(tpr, fpr).item() == pytest.approx(expected, abs=1e-12)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert bool((fpr.diff() >= 0).all() and (tpr.diff() >= 0).all())
    assert len(fpr) == len(scores.unique()) + 1  # one point per distinct score


def test_perfect_reversed_and_constant_rankings():
    truth = torch.tensor([True, False, True, False, False, True, False])
    perfect = truth.float() + 0.1 * torch.arange(7)  # true edges all above the false ones
    assert roc_auc(perfect, truth) == 1.0
    assert roc_auc(-perfect, truth) == 0.0
    assert roc_auc(torch.full((7,), 3.0), truth) == 0.5
    fpr, tpr = roc_curve(torch.full((7,), 3.0), truth)
    assert fpr.tolist() == [0.0, 1.0] and tpr.tolist() == [0.0, 1.0]


def test_no_true_edge_no_false_edge_and_bad_inputs_raise():
    scores = torch.arange(4.0)
    with pytest.raises(RocError, match="0 true of 4 .no true edge.*planted_edges"):
        roc_auc(scores, torch.zeros(4, dtype=torch.bool))
    with pytest.raises(RocError, match="4 true of 4 .no false edge"):
        roc_curve(scores, torch.ones(4, dtype=torch.bool))
    with pytest.raises(RocError, match="differ in shape"):
        roc_auc(scores, torch.ones(3, dtype=torch.bool))
    with pytest.raises(RocError, match="1 scores are NaN"):
        roc_auc(torch.tensor([0.0, float("nan")]), torch.tensor([True, False]))


# conventions of score_against_planted ----------------------------------------------------------
def _scores(method: str, values: dict[str, float]) -> EdgeScores:
    graph = EdgeForward(planted_induction_model()).graph
    matrix = torch.zeros(graph.n_receivers, graph.n_senders)
    for edge, value in values.items():
        matrix[graph.edge_cell(edge)] = value
    return EdgeScores(graph, matrix, method)


def test_gradient_scores_rank_by_magnitude_and_acdc_by_sign():
    true = ["a1.h0->logits", "input->a0.h0<v>"]
    values = {"a1.h0->logits": -5.0, "input->a0.h0<v>": 4.0, "a0.h0->logits": -3.0}
    # |score|: both true edges above every false one
    assert score_against_planted(_scores("eap", values), true) == 1.0
    # ACDC, signed: the -5 true edge falls below the 43 zero-score false edges and the -3 one
    acdc = score_against_planted(_scores("acdc", values), true)
    assert acdc == pytest.approx((44 / 44 + 0 / 44) / 2)
    assert score_against_planted(_scores("acdc", values), true, ranking="absolute") == 1.0


def test_scores_within_the_noise_floor_tie_with_zero():
    true = ["a1.h0->logits", "a0.h0->a1.h0<k>"]
    values = {"a1.h0->logits": 10.0, "a0.h0->a1.h0<k>": 6e-17}
    scores = _scores("eap", values)
    # rounding-level 6e-17 ties with the 44 exact zeros: (1 + 0.5) / 2
    assert score_against_planted(scores, true) == pytest.approx(0.75)
    assert score_against_planted(scores, true, noise=0.0) == 1.0
    assert int((ranked_values(scores) != 0).sum()) == 1
    with pytest.raises(RocError, match="noise must be >= 0"):
        ranked_values(scores, noise=-1.0)


def test_a_circuit_is_scored_by_inclusion_and_truth_takes_names_or_masks():
    graph = EdgeForward(planted_induction_model()).graph
    true = planted_edges("planted-induction")
    circuit = Circuit.from_edges(graph, ["a1.h0->logits", "input->a0.h0<v>", "input->m0"])
    tpr, fpr = 2 / 3, 1 / (graph.n_edges - 3)
    assert score_against_planted(circuit, true) == pytest.approx((tpr + 1 - fpr) / 2)
    mask = truth_mask(graph, true)
    assert int(mask.sum()) == 3
    assert score_against_planted(circuit, mask) == score_against_planted(circuit, true)
    with pytest.raises(RocError, match="truth mask shape"):
        truth_mask(graph, mask[:-1])
    with pytest.raises(RocError, match="the single 'a1.h0->logits'; wrap it in a set"):
        score_against_planted(circuit, "a1.h0->logits")


# the planted models ----------------------------------------------------------------------------
INDUCTION, SPARSE = "planted-induction", "planted-sparse"
PROTOCOLS = [("counterfactual", "corruption"), ("zero", "mechanism")]  # (ablation, truth scope)


def _single_edge_effects(name: str, ablation: str) -> dict[str, float]:
    """Exact loss change of ablating each edge alone (counterfactual or zero), edge engine."""
    model, problem = planted_case(name)
    engine = EdgeForward(model)
    graph = engine.graph
    values = engine.outputs(problem.corrupted)
    if ablation == "zero":
        values = torch.zeros_like(values[:1])
    clean = float(loss_value(problem, model.logits(problem.clean, positions=problem.positions)))
    effects = {}
    for edge in graph.edges:
        ablated = torch.zeros_like(graph.valid)
        ablated[graph.edge_cell(edge)] = True
        run = engine.run(problem.clean, problem.positions, ablated=ablated, ablation=values)
        effects[edge.name] = float(loss_value(problem, run.logits)) - clean
    return effects


def _exact_auc(effects: dict[str, float], truth: frozenset[str]) -> float:
    values = torch.tensor([abs(v) for v in effects.values()])
    return roc_auc(values, torch.tensor([e in truth for e in effects]))


def test_induction_edges_are_what_exact_patching_of_one_edge_finds():
    """Counterfactual: exactly the corruption-scope edges change the loss (the clean logit diff
    is 17.6). Zero ablation: every mechanism edge breaks the behaviour; no other edge lowers the
    logit diff (LayerNorm lets a few raise it). Exact effects rank the truth perfectly."""
    counterfactual = _single_edge_effects(INDUCTION, "counterfactual")
    corruption = planted_edges(INDUCTION, "corruption")
    assert {e for e, v in counterfactual.items() if abs(v) > 1e-4} == corruption
    assert min(counterfactual[e] for e in corruption) > 10.0
    zero = _single_edge_effects(INDUCTION, "zero")
    mechanism = planted_edges(planted_induction_model(), "mechanism")
    assert corruption < mechanism and len(mechanism) == 7
    assert min(zero[e] for e in mechanism) > 10.0
    assert max(v for e, v in zero.items() if e not in mechanism) < 1e-4
    assert _exact_auc(counterfactual, corruption) == _exact_auc(zero, mechanism) == 1.0


@pytest.mark.parametrize(("ablation", "scope"), PROTOCOLS)
def test_sparse_edges_are_what_exact_patching_of_one_edge_finds(ablation, scope):
    """Random weights: every true edge has an effect, every false one none (float rounding,
    ~1e-7, aside); the smallest true effect is > 1000x the largest false one."""
    effects = _single_edge_effects(SPARSE, ablation)
    truth = planted_edges(SPARSE, scope)
    assert len(truth) == {"corruption": 16, "mechanism": 20}[scope]
    smallest = min(abs(effects[e]) for e in truth)
    assert smallest > 1e3 * max(abs(v) for e, v in effects.items() if e not in truth)
    assert _exact_auc(effects, truth) == 1.0


def test_planted_edges_reject_unknown_models_and_scopes():
    with pytest.raises(ValueError, match="no planted edges for .tiny."):
        planted_edges("tiny")
    with pytest.raises(ValueError, match="unknown scope 'all'"):
        planted_edges(INDUCTION, "all")
    with pytest.raises(ValueError, match="unknown planted model 'tiny'"):
        planted_case("tiny")


EAP_SATURATED = (
    "EAP linearises at the clean run, where the induction head's attention is saturated (query "
    "sharpness 8): the gradient through its key is ~1e-17, below the noise floor, so the true "
    "edge a0.h0 -> a1.h0<k> ties with the dead edges, and LayerNorm's gradient gives the false "
    "a0.h0 -> a1.h0<v> a score of -4.3 (its exact effect is 0). EAP-IG integrates past the "
    "saturation and scores 1.0; see test_eap_misses_the_saturated_key_edge"
)
NODE_LEVEL = (
    "node attribution gives every edge its sender's score, so the true input -> a0.h0<v> ties "
    "with the input's 14 other out-edges and a0.h0 -> a1.h0<k> with a0.h0's 8 others: a node "
    "score cannot rank edges of one sender"
)


def _case(name, method, ablation, scope, settings=None, xfail=None):
    """One (model, method, ablation, settings, truth scope) case, with a readable id."""
    tau = f"-tau{settings['threshold']:g}" if settings else ""
    marks = [pytest.mark.xfail(reason=xfail, strict=True)] if xfail else []
    case_id = f"{name.removeprefix('planted-')}-{method}-{ablation}{tau}"
    return pytest.param(name, method, ablation, settings or {}, scope, marks=marks, id=case_id)


# each run takes well under a second here
CASES = [
    _case(INDUCTION, "eap", "counterfactual", "corruption", xfail=EAP_SATURATED),
    _case(INDUCTION, "eap-ig-inputs", "counterfactual", "corruption"),
    _case(INDUCTION, "eap-ig-activations", "counterfactual", "corruption"),
    _case(INDUCTION, "node-attribution", "counterfactual", "corruption", xfail=NODE_LEVEL),
    _case(INDUCTION, "acdc", "counterfactual", "corruption"),
    _case(INDUCTION, "acdc", "zero", "mechanism"),
    _case(SPARSE, "eap", "counterfactual", "corruption"),
    _case(SPARSE, "eap-ig-inputs", "counterfactual", "corruption"),
    _case(SPARSE, "eap-ig-activations", "counterfactual", "corruption"),
    # planted-sparse's effects are small (one changed token, logit diff ~1): tau scaled down
    _case(SPARSE, "acdc", "counterfactual", "corruption", {"threshold": 1e-6}),
    _case(SPARSE, "acdc", "zero", "mechanism", {"threshold": 1e-4}),
]


def _run(method: str, ablation: str, name: str = INDUCTION, settings=None) -> EdgeScores:
    spec = get_method(method)
    settings = dict(settings or {})
    if ablation != "counterfactual":
        settings["ablation"] = ablation
    if method == "acdc":
        settings["progress"] = False
    return spec(*planted_case(name), spec.config(settings))


@pytest.mark.parametrize(("name", "method", "ablation", "settings", "scope"), CASES)
def test_discovery_methods_recover_the_planted_edges(name, method, ablation, settings, scope):
    scores = _run(method, ablation, name, settings)
    assert score_against_planted(scores, planted_edges(name, scope)) >= 0.9


def test_eap_misses_the_saturated_key_edge():
    """Why EAP is quarantined above: its score for the key edge is rounding-level while exact
    patching of that edge costs 15.6 of logit diff."""
    scores = _run("eap", "counterfactual")
    top = float(scores.scores.abs().max())
    assert abs(scores.of("a0.h0->a1.h0<k>")) < 1e-6 * top
    assert abs(scores.of("a0.h0->a1.h0<v>")) > 0.2 * top


def test_acdc_keeps_exactly_the_planted_induction_circuit():
    """At its default threshold ACDC's circuit (score >= tau) is the truth itself."""
    for ablation, scope in PROTOCOLS:
        scores = _run("acdc", ablation)
        values = scores.values().tolist()
        kept = {e.name for e, v in zip(scores.graph.edges, values, strict=True) if v >= 0.01}
        assert kept == planted_edges(INDUCTION, scope)


@pytest.mark.parametrize("name", [INDUCTION, SPARSE])
@pytest.mark.parametrize("scope", ["corruption", "mechanism"])
def test_random_scores_are_near_chance(name, scope):
    true = planted_edges(name, scope)
    auc = score_against_planted(_run("random", "counterfactual", name), true)
    assert abs(auc - 0.5) <= 0.2
    spec = get_method("random")
    model, problem = planted_case(name)
    seeds = [spec(model, problem, spec.config({"seed": s})) for s in range(20)]
    mean = sum(score_against_planted(s, true) for s in seeds) / len(seeds)
    assert abs(mean - 0.5) <= 0.1  # one AUC's sd: ~0.17 with 3 true edges, ~0.07 with 16
