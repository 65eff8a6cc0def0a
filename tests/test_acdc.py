"""ACDC: the fast search (resumed layers, batched speculative candidates) against a naive loop."""

from __future__ import annotations

import pytest
import torch

from tests.tiny_models import tiny_model, tiny_tokens
from wildcircuits.discovery.acdc import AcdcConfig, acdc
from wildcircuits.discovery.registry import DiscoveryError, get_method
from wildcircuits.models.tokens import Tokens
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.tasks.metrics import make_targets


def _problem(model, seed: int = 3) -> PatchingProblem:
    clean = tiny_tokens()
    other = tiny_tokens(seed=seed)
    corrupted = Tokens(other.input_ids, clean.attention_mask, clean.position_ids, clean.last_index)
    targets = make_targets([[5], [6], [7]], [[8], [9], [10]])
    provenance = {"model": model.info.model_id, "quantization": "none", "metric": "logit_diff"}
    return PatchingProblem(clean, corrupted, clean.last_index, targets, provenance=provenance)


def _naive_acdc(model, problem, threshold, ablation_kind="counterfactual"):
    """One full forward per edge, receivers in reverse order, senders latest first."""
    engine = EdgeForward(model)
    graph = engine.graph
    ablation = engine.outputs(problem.corrupted)
    if ablation_kind == "mean":  # per position, over the rows with a real token there
        real = problem.corrupted.attention_mask.to(ablation)[:, :, None, None]
        ablation = ((ablation * real).sum(0) / real.sum(0).clamp(min=1))[None]
    elif ablation_kind == "zero":
        ablation = torch.zeros_like(ablation[:1])
    clean = torch.log_softmax(model.logits(problem.clean, positions=problem.positions), -1)

    def loss(mask):
        logits = engine.run(problem.clean, problem.positions, mask, ablation).logits
        return float((clean.exp() * (clean - torch.log_softmax(logits, -1))).sum(-1).mean())

    removed = torch.zeros_like(graph.valid)
    scores = torch.full(graph.valid.shape, float("nan"))
    now = loss(removed)
    for row in reversed(range(graph.n_receivers)):
        for sender in reversed(range(graph.n_upstream(graph.receivers[row]))):
            trial = removed.clone()
            trial[row, sender] = True
            value = loss(trial)
            scores[row, sender] = value - now
            if value - now < threshold:
                removed, now = trial, value
    return removed, scores


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
@pytest.mark.parametrize("candidates", [1, 5])
def test_fast_acdc_matches_the_naive_loop(family, candidates):
    model = tiny_model(family)
    problem = _problem(model)
    threshold = 2e-4
    removed, naive_scores = _naive_acdc(model, problem, threshold)
    config = AcdcConfig(threshold=threshold, candidates=candidates, progress=False)
    scores = acdc(model, problem, config)
    graph = scores.graph
    kept_fast = scores.scores >= threshold
    assert torch.equal(kept_fast & graph.valid, graph.valid & ~removed)
    tested = ~torch.isnan(naive_scores)
    torch.testing.assert_close(scores.scores[tested], naive_scores[tested], atol=2e-6, rtol=1e-4)
    kept = int((graph.valid & ~removed).sum())
    assert 0 < kept < graph.n_edges  # the threshold gives a non-trivial circuit
    assert scores.settings["edges_kept"] == kept


@pytest.mark.parametrize("kind", ["mean", "zero"])
def test_fast_acdc_with_mean_or_zero_ablation_matches_the_naive_loop(kind):
    """The mean is over the real tokens of the whole batch, then cut to each padding group's
    columns."""
    model = tiny_model("qwen2")
    problem = _problem(model, seed=5)
    assert len(problem.by_length()) == 3  # full, right-padded and left-padded rows
    removed, naive_scores = _naive_acdc(model, problem, 2e-4, kind)
    config = AcdcConfig(threshold=2e-4, candidates=4, ablation=kind, progress=False)
    scores = acdc(model, problem, config)
    assert scores.settings["padding_groups"] == 3
    graph = scores.graph
    assert torch.equal((scores.scores >= 2e-4) & graph.valid, graph.valid & ~removed)
    tested = ~torch.isnan(naive_scores)
    torch.testing.assert_close(scores.scores[tested], naive_scores[tested], atol=2e-6, rtol=1e-4)


def test_acdc_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    model = tiny_model("qwen2")
    problem = _problem(model)
    path = tmp_path / "acdc.pt"
    config = AcdcConfig(threshold=2e-4, candidates=3, checkpoint=str(path), progress=False)
    reference = acdc(model, problem, AcdcConfig(threshold=2e-4, candidates=3, progress=False))
    from wildcircuits.discovery import acdc as module

    original = module._Search._visit
    calls = {"n": 0}

    def crash_after_some(self, row, bar):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt("simulated kill")
        return original(self, row, bar)

    monkeypatch.setattr(module._Search, "_visit", crash_after_some)
    with pytest.raises(KeyboardInterrupt):
        acdc(model, problem, config)
    assert path.exists()
    monkeypatch.setattr(module._Search, "_visit", original)
    resumed = acdc(model, problem, config)
    # the resumed run recomputes its current loss in a fresh forward: float-order differences
    torch.testing.assert_close(resumed.scores, reference.scores, atol=1e-7, rtol=1e-5)
    assert torch.equal(resumed.scores >= 2e-4, reference.scores >= 2e-4)
    assert resumed.settings["edge_evaluations"] == reference.settings["edge_evaluations"]


def test_acdc_is_registered_and_rejects_bad_settings():
    spec = get_method("acdc")
    assert spec.config({"threshold": 0.5}).threshold == 0.5
    with pytest.raises(DiscoveryError, match="loss must be"):
        acdc(tiny_model("llama"), _problem(tiny_model("llama")), AcdcConfig(loss="l2"))


def test_prefiltered_edges_score_zero_and_rank_last_by_magnitude():
    """With an EAP pre-filter, untested edges are outside the circuit (score 0 < tau) and come
    after every tested edge with a non-zero score when edges are ranked by |score|."""
    model = tiny_model("llama")
    problem = _problem(model)
    config = AcdcConfig(threshold=2e-4, prefilter_top=30, progress=False)
    scores = acdc(model, problem, config)
    graph = scores.graph
    assert scores.settings["edges_prefiltered"] == graph.n_edges - 30
    values = scores.scores[graph.valid]
    untested = values == 0
    assert int(untested.sum()) >= graph.n_edges - 30
    assert bool((values[untested] < config.threshold).all())
    order = values.abs().argsort(descending=True)
    first_untested = int(untested[order].nonzero()[0])
    assert bool((values[order][:first_untested] != 0).all())
    assert first_untested >= int((values != 0).sum())


@pytest.mark.parametrize("family", ["llama", "gemma3_text"])
def test_length_groups_drop_padding_and_keep_every_real_logit(family):
    model = tiny_model(family)
    problem = _problem(model)
    whole = model.logits(problem.clean, positions=problem.positions)
    groups = problem.by_length()
    seen = torch.cat([group.rows for group in groups]).sort().values
    assert torch.equal(seen, torch.arange(problem.batch))  # every row once
    for group in groups:
        part = group.problem
        assert bool(part.clean.attention_mask.any(dim=0).all())  # no all-padding column left
        logits = model.logits(part.clean, positions=part.positions)
        torch.testing.assert_close(logits, whole[group.rows], atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(part.score(logits), problem.score(whole)[group.rows])
    assert (
        sum(g.problem.clean.seq_len * len(g.rows) for g in groups) < problem.clean.input_ids.numel()
    )
