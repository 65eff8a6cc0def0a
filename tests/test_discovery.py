"""Discovery methods: registry, EAP and node attribution against slow references, invariants.

Slow references use only the exact edge patching engine (`EdgeForward.run`, no gradients): an
edge's EAP score is the derivative of the loss as that one edge's input moves from clean toward
corrupted, measured by central finite differences in float64.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from tests.discovery_fixtures import (
    double_model,
    finite_difference,
    patched_loss,
    sender_outputs,
    tiny_problem,
)
from tests.tiny_models import FAMILIES, tiny_model
from wildcircuits.discovery import (
    METHODS,
    DiscoveryError,
    EAPConfig,
    NodeAttributionConfig,
    RandomScoresConfig,
    eap,
    get_method,
    method_names,
    node_attribution,
    node_scores,
    random_scores,
    register,
)
from wildcircuits.discovery.common import loss_value
from wildcircuits.graph.circuit import EdgeScores
from wildcircuits.patching.edges import EdgeForward

BUILTIN = {"eap", "eap-ig-inputs", "eap-ig-activations", "random", "node-attribution"}


# registry ------------------------------------------
def test_registry_lists_the_builtin_methods_and_unknown_names_raise():
    assert set(method_names()) >= BUILTIN
    with pytest.raises(DiscoveryError, match="unknown discovery method 'nope'.*eap-ig-inputs"):
        get_method("nope")
    spec = get_method("eap-ig-inputs")
    assert spec.config({"steps": 3}).steps == 3
    with pytest.raises(DiscoveryError, match="no setting.*'tau'.*steps"):
        spec.config({"tau": 0.1})


def test_register_accepts_new_methods_and_rejects_clashes_and_mutable_configs():
    @dataclasses.dataclass(frozen=True)
    class Config:
        scale: float = 1.0

    def constant(model, problem, config):
        return random_scores(model, problem, RandomScoresConfig())

    try:
        register("test-constant", Config)(constant)
        assert get_method("test-constant").config({"scale": 2.0}).scale == 2.0
        with pytest.raises(DiscoveryError, match="already registered"):
            register("test-constant", Config)(lambda m, p, c: None)
    finally:
        METHODS.pop("test-constant", None)

    @dataclasses.dataclass
    class Mutable:
        x: int = 0

    with pytest.raises(DiscoveryError, match="frozen dataclass"):
        register("test-mutable", Mutable)


# EAP vs the slow finite-difference reference ------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_eap_equals_per_edge_finite_differences(family):
    model = double_model(family)
    problem = tiny_problem(model)
    scores = eap(model, problem, EAPConfig(batch_size=2))
    engine = EdgeForward(model)
    clean, diff = sender_outputs(engine, problem)
    graph = engine.graph
    generator = torch.Generator().manual_seed(0)
    edges = graph.valid.nonzero()
    picked = edges[torch.randperm(len(edges), generator=generator)[:25]].tolist()
    picked += [[graph.logits_receiver, s] for s in (0, graph.n_senders - 1)]
    top = scores.scores.abs().flatten().topk(8).indices.tolist()
    picked += [[i // graph.n_senders, i % graph.n_senders] for i in top]
    # float32 softmaxes (as in HF eager) leave ~1e-5 x max|score| of noise in both sides
    scale = float(scores.scores.abs().max())
    for r, s in picked:
        ablated = torch.zeros_like(graph.valid)
        ablated[r, s] = True
        expected = finite_difference(engine, problem, ablated, clean, diff)
        got = float(scores.scores[r, s])
        name = f"{graph.senders[s].name}->{graph.receivers[r].name}"
        assert got == pytest.approx(expected, rel=1e-3, abs=5e-5 * scale), name


def test_eap_scores_are_a_full_float_matrix_with_provenance():
    model = tiny_model("llama")
    problem = tiny_problem(model)
    scores = eap(model, problem, EAPConfig())
    assert isinstance(scores, EdgeScores) and scores.method == "eap"
    assert bool((scores.scores[~scores.graph.valid] == 0).all())
    assert int((scores.values() != 0).sum()) > 0.9 * scores.graph.n_edges
    for key in ("model", "quantization", "metric", "method", "settings", "ablation"):
        assert key in scores.provenance
    assert scores.settings["batch_size"] == 16 and "progress" not in scores.settings


@pytest.mark.parametrize("family", ["gpt2", "gemma3_text"])
def test_eap_chunking_does_not_change_the_scores(family):
    model = tiny_model(family)
    problem = tiny_problem(model)  # padded rows
    whole = eap(model, problem, EAPConfig(batch_size=3)).scores
    rows = eap(model, problem, EAPConfig(batch_size=1)).scores
    torch.testing.assert_close(rows, whole, atol=1e-6, rtol=1e-5)


# linearisation: for small corruptions, EAP predicts exact patching to first order ----------------
def _nudge(model, size: float, seed: int = 0):
    """A float64 copy of `model` in which token 6's embedding is token 5's plus `size` noise."""
    import copy

    from wildcircuits.models import wrap_hf_model

    hf_model = copy.deepcopy(model.hf_model)
    embedding = hf_model.get_input_embeddings().weight
    noise = torch.randn(embedding.shape[1], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        embedding[6] = embedding[5] + size * noise.to(embedding.dtype)
    return wrap_hf_model(hf_model, model_id="nudged")


def _small_corruption_errors(family: str, size: float) -> list[tuple[float, float]]:
    """(|exact - EAP|, |exact|) for: all in-edges of the logits, all out-edges of a0.h1, and
    the edge input -> a2.h1<v>; the corruption moves one token's embedding by `size`."""
    from dataclasses import replace

    model = _nudge(double_model(family), size)
    problem = tiny_problem(model, same=True)
    ids = problem.clean.input_ids.clone()
    ids[:, 4] = 5
    corrupted_ids = ids.clone()
    corrupted_ids[:, 4] = 6
    problem = replace(
        problem,
        clean=replace(problem.clean, input_ids=ids),
        corrupted=replace(problem.corrupted, input_ids=corrupted_ids),
    )
    scores = eap(model, problem, EAPConfig()).scores
    engine = EdgeForward(model)
    graph = engine.graph
    corrupted = engine.outputs(problem.corrupted)
    base = float(loss_value(problem, model.logits(problem.clean, positions=problem.positions)))
    sets = [torch.zeros_like(graph.valid) for _ in range(3)]
    sets[0][graph.logits_receiver] = True
    sets[1][:, graph.sender_index[graph.senders[2]]] = True
    sets[2][graph.attention_receivers(2).start + 2 * graph.n_heads + 1, 0] = True
    errors = []
    for mask in sets:
        mask &= graph.valid
        exact = patched_loss(engine, problem, mask, corrupted) - base
        errors.append((abs(exact - float(scores[mask].sum())), abs(exact)))
    return errors


@pytest.mark.parametrize("family", ["gpt2", "llama", "gemma3_text"])
def test_eap_error_on_unchained_edge_sets_is_second_order(family):
    """Edge sets without chains (no edge reads another's receiver): exact patching minus the
    summed EAP scores shrinks ~4x when the corruption halves; a first-order error would not."""
    big = _small_corruption_errors(family, 2e-3)
    small = _small_corruption_errors(family, 1e-3)
    for (e_big, _), (e_small, exact) in zip(big, small, strict=True):
        assert exact > 1e-8 and e_small < 0.1 * exact
        assert 0.1 < e_small / e_big < 0.35


# node attribution ------------------------------------------
@pytest.mark.parametrize("family", ["gpt2", "qwen2", "gemma3_text"])
def test_node_scores_equal_finite_differences_of_patching_the_whole_node(family):
    model = double_model(family)
    problem = tiny_problem(model)
    nodes = node_scores(model, problem, NodeAttributionConfig())
    engine = EdgeForward(model)
    clean, diff = sender_outputs(engine, problem)
    graph = engine.graph
    scale = float(nodes.scores.abs().max())
    for s in range(graph.n_senders):
        ablated = torch.zeros_like(graph.valid)
        ablated[:, s] = graph.valid[:, s]
        expected = finite_difference(engine, problem, ablated, clean, diff)
        assert float(nodes.scores[s]) == pytest.approx(expected, rel=1e-3, abs=5e-5 * scale)


def test_node_attribution_edges_carry_their_senders_score():
    model = tiny_model("gpt2")
    problem = tiny_problem(model)
    edges = node_attribution(model, problem, NodeAttributionConfig())
    nodes = node_scores(model, problem, NodeAttributionConfig())
    eap_scores = eap(model, problem, EAPConfig())
    torch.testing.assert_close(nodes.scores, eap_scores.scores.sum(0))
    for edge in edges.graph.edges[::17]:
        assert edges.of(edge) == pytest.approx(nodes.of(edge.sender.name))
    assert nodes.top(3)[0][1] == pytest.approx(
        float(nodes.scores.abs().max()), abs=0.0, rel=0.0
    ) or (abs(nodes.top(3)[0][1]) == pytest.approx(float(nodes.scores.abs().max())))


# random baseline ------------------------------------------
def test_random_scores_are_seeded():
    model = tiny_model("llama")
    problem = tiny_problem(model)
    a = random_scores(model, problem, RandomScoresConfig(seed=3))
    b = random_scores(model, problem, RandomScoresConfig(seed=3))
    c = random_scores(model, problem, RandomScoresConfig(seed=4))
    torch.testing.assert_close(a.scores, b.scores, atol=0, rtol=0)
    assert not torch.equal(a.scores, c.scores)
    assert bool((a.scores[~a.graph.valid] == 0).all()) and bool((a.values() != 0).all())
    assert a.settings["seed"] == 3 and a.provenance["method"] == "random"


# invariants for every gradient method ------------------------------------------
@pytest.mark.parametrize("name", sorted(BUILTIN - {"random"}))
@pytest.mark.parametrize("family", ["gpt_neox", "gemma3_text"])
def test_clean_equal_to_corrupted_gives_zero_scores(name, family):
    model = tiny_model(family)
    problem = tiny_problem(model, same=True)
    spec = get_method(name)
    settings = (
        {"steps": 2} if "steps" in {f.name for f in dataclasses.fields(spec.config_type)} else {}
    )
    scores = spec(model, problem, spec.config(settings))
    assert scores.method == name
    assert bool((scores.scores == 0).all())


@pytest.mark.parametrize("name", sorted(BUILTIN))
def test_methods_leave_the_model_unchanged(name):
    model = tiny_model("qwen2")
    problem = tiny_problem(model)
    before = {k: v.clone() for k, v in model.hf_model.state_dict().items()}
    spec = get_method(name)
    settings = (
        {"steps": 2} if "steps" in {f.name for f in dataclasses.fields(spec.config_type)} else {}
    )
    spec(model, problem, spec.config(settings))
    for key, value in model.hf_model.state_dict().items():
        assert torch.equal(value, before[key]), key
    assert all(not p.requires_grad for p in model.hf_model.parameters())


def test_accuracy_metric_is_refused():
    from dataclasses import replace

    from wildcircuits.tasks.spec import MetricKind

    model = tiny_model("gpt2")
    problem = replace(tiny_problem(model), metric=MetricKind.ACCURACY)
    with pytest.raises(DiscoveryError, match="differentiable"):
        eap(model, problem, EAPConfig())
