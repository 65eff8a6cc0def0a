"""Faithfulness, curves, baselines and reports on tiny models, against slow recomputations."""

from __future__ import annotations

import json

import pytest
import torch

from tests.edge_reference import edge_patching_reference
from tests.tiny_models import tiny_model, tiny_tokens
from wildcircuits.errors import WildcircuitsError
from wildcircuits.evaluation import (
    EDGE_ABLATIONS,
    MIB_FRACTIONS,
    AblationKind,
    AblationSpec,
    Distribution,
    EvaluationConfig,
    circuit_faithfulness,
    cmd,
    cpr,
    evaluate_circuits,
    evaluate_scores,
    faithfulness_curves,
    heldout_check,
    mean_outputs,
    random_baseline,
    random_scores,
    shared_prompts,
    top_circuits,
)
from wildcircuits.evaluation.run_metrics import select_headline
from wildcircuits.graph.build import Ranking
from wildcircuits.graph.circuit import Circuit, EdgeScores
from wildcircuits.graph.graph import Graph
from wildcircuits.models.tokens import Tokens
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.tasks.metrics import make_targets

PROVENANCE = {"model": "tiny", "quantization": "none", "metric": "logit_diff", "task": "random"}
FAMILIES = ("gpt2", "gpt_neox", "llama", "gemma3_text")


def tiny_problem(batch: int = 5, seed: int = 1, split: str | None = None) -> PatchingProblem:
    clean = tiny_tokens(batch, 8, seed=seed)
    other = tiny_tokens(batch, 8, seed=seed + 100)
    corrupted = Tokens(other.input_ids, clean.attention_mask, clean.position_ids, clean.last_index)
    targets = make_targets([[5 + i] for i in range(batch)], [[40 + i] for i in range(batch)])
    provenance = {**PROVENANCE, **({"split": split} if split else {})}
    return PatchingProblem(clean, corrupted, clean.last_index, targets, provenance=provenance)


def random_circuit(graph: Graph, fraction: float, seed: int) -> Circuit:
    generator = torch.Generator().manual_seed(seed)
    return Circuit(graph, torch.rand(graph.valid.shape, generator=generator) < fraction)


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("ablation", list(EDGE_ABLATIONS))
def test_full_circuit_is_one_and_empty_circuit_is_zero_exactly(family, ablation):
    model = tiny_model(family)
    problem = tiny_problem()
    graph = Graph.for_model(model)
    spec = AblationSpec(ablation)
    full = circuit_faithfulness(model, problem, Circuit.full(graph), spec, batch_size=2)
    empty = circuit_faithfulness(model, problem, Circuit.empty(graph), spec, batch_size=2)
    assert full.faithfulness == 1.0 and empty.faithfulness == 0.0
    assert full.m_full != full.m_empty
    plain = model.logits(problem.clean, positions=problem.positions)
    assert full.m_full == pytest.approx(float(problem.score(plain).mean()), abs=1e-5)
    if ablation is AblationKind.COUNTERFACTUAL:  # the empty circuit is the corrupted run
        assert empty.m_empty == pytest.approx(empty.m_corrupted, abs=1e-5)
    else:
        assert empty.m_corrupted is None


@pytest.mark.parametrize("family", ["llama", "gemma3_text", "gpt2"])
def test_random_circuit_faithfulness_equals_a_slow_recomputation(family):
    model = tiny_model(family)
    problem = tiny_problem(batch=4)
    graph = Graph.for_model(model)
    circuit = random_circuit(graph, 0.4, seed=3)
    fast = circuit_faithfulness(model, problem, circuit, batch_size=3)
    # Slow: the obvious per-receiver reference engine, one row at a time, then normalise.
    engine = EdgeForward(model)
    sums = {"c": 0.0, "full": 0.0, "empty": 0.0}
    with torch.no_grad():
        for row in range(problem.batch):
            one = problem.select([row])
            values = engine.outputs(one.corrupted)
            masks = {"c": circuit.ablated, "full": ~graph.valid, "empty": graph.valid}
            for name, mask in masks.items():
                logits = edge_patching_reference(
                    model, graph, one.clean, mask & graph.valid, values, one.positions
                )
                sums[name] += float(problem.score(logits, [row]).sum())
    means = {k: v / problem.batch for k, v in sums.items()}
    expected = (means["c"] - means["empty"]) / (means["full"] - means["empty"])
    assert fast.faithfulness == pytest.approx(expected, abs=1e-4)
    assert fast.metric == pytest.approx(means["c"], abs=1e-4)


def test_mean_ablation_values_are_masked_per_position_means():
    model = tiny_model("llama")
    engine = EdgeForward(model)
    tokens = tiny_tokens(4, 7, seed=5)  # rows 1 and 2 padded
    outputs = engine.outputs(tokens)  # (batch, pos, sender, d_model)
    mean = mean_outputs(engine, tokens, batch_size=3)
    mask = tokens.attention_mask.bool()
    for p in range(tokens.seq_len):
        rows = mask[:, p].nonzero().flatten()
        torch.testing.assert_close(mean[0, p], outputs[rows, p].mean(0), atol=1e-5, rtol=1e-5)
    overall = mean_outputs(engine, tokens, batch_size=2, per_position=False)
    torch.testing.assert_close(overall[0, 0], outputs[mask].mean(0), atol=1e-5, rtol=1e-5)


def test_mean_reference_choice_matters():
    model = tiny_model("qwen2")
    problem = tiny_problem()
    circuit = random_circuit(Graph.for_model(model), 0.3, seed=1)
    on_corrupted = circuit_faithfulness(model, problem, circuit, AblationSpec("mean"))
    on_clean = circuit_faithfulness(
        model, problem, circuit, AblationSpec("mean", Distribution.CLEAN)
    )
    assert on_corrupted.provenance["mean_reference"] == "corrupted"
    assert on_clean.m_empty != pytest.approx(on_corrupted.m_empty, abs=1e-6)


def test_top_circuits_rank_signed_and_absolute():
    graph = Graph(2, 2)
    scores = torch.zeros(graph.valid.shape)
    edges = ["a0.h0->m1", "input->logits", "m0->a1.h1<k>"]
    for name, value in zip(edges, [1.0, -5.0, 2.0], strict=True):
        scores[graph.edge_cell(name)] = value
    es = EdgeScores(graph, scores, "hand")
    signed = top_circuits(es, [1, 2], Ranking.SIGNED, pruned=False)
    absolute = top_circuits(es, [1, 2], Ranking.ABSOLUTE, pruned=False)
    assert [e.name for e in signed[1].edge_list()] == sorted(
        ["m0->a1.h1<k>", "a0.h0->m1"], key=lambda n: graph.edge_cell(n)
    )
    assert [e.name for e in absolute[0].edge_list()] == ["input->logits"]
    assert {e.name for e in absolute[1].edge_list()} == {"input->logits", "m0->a1.h1<k>"}
    # Pruned: a0.h0 -> m1 and m0 -> a1.h1<k> do not lie on an input -> logits path.
    assert top_circuits(es, [2], Ranking.SIGNED)[0].n_edges == 0


def test_curve_equals_circuit_by_circuit_and_is_chunking_invariant():
    model = tiny_model("gpt2")
    problem = tiny_problem(batch=5)
    scores = random_scores(Graph.for_model(model), seed=4)
    fractions = (0.05, 0.2, 0.5, 1.0)
    curves = faithfulness_curves(model, problem, scores, fractions=fractions, batch_size=2)
    whole = faithfulness_curves(model, problem, scores, fractions=fractions, batch_size=5)
    for ranking in (Ranking.SIGNED, Ranking.ABSOLUTE):
        circuits = top_circuits(scores, curves[ranking].n_selected, ranking)
        for circuit, f in zip(circuits, curves[ranking].faithfulness, strict=True):
            alone = circuit_faithfulness(model, problem, circuit, batch_size=5)
            assert f == pytest.approx(alone.faithfulness, abs=1e-5)
        torch.testing.assert_close(
            torch.tensor(curves[ranking].faithfulness),
            torch.tensor(whole[ranking].faithfulness),
            atol=1e-5,
            rtol=0,
        )
    assert curves[Ranking.SIGNED].faithfulness[-1] == 1.0


def test_curve_forward_budget(monkeypatch):
    model = tiny_model("llama")
    problem = tiny_problem(batch=6)
    scores = random_scores(Graph.for_model(model), seed=0)
    calls = {"cache": 0, "patched": 0}
    original = EdgeForward.run

    def counting(self, tokens, positions, ablated=None, ablation=None, **kwargs):
        calls["patched" if ablated is not None else "cache"] += 1
        return original(self, tokens, positions, ablated, ablation, **kwargs)

    monkeypatch.setattr(EdgeForward, "run", counting)
    chunks = 3
    curves = faithfulness_curves(model, problem, scores, batch_size=2)
    n_sizes = len(curves[Ranking.SIGNED].fractions)
    assert calls["cache"] == chunks  # corrupted outputs: once per chunk
    assert calls["patched"] <= chunks * 2 * n_sizes
    assert len(set(curves[Ranking.SIGNED].n_selected)) > 2 * 5  # not a degenerate grid


def test_pruning_does_not_change_counterfactual_faithfulness():
    model = tiny_model("qwen2")
    problem = tiny_problem()
    scores = random_scores(Graph.for_model(model), seed=2)
    fractions = (0.02, 0.1, 0.3)
    pruned = faithfulness_curves(model, problem, scores, fractions=fractions)
    plain = faithfulness_curves(model, problem, scores, fractions=fractions, pruned=False)
    for ranking in pruned:
        assert pruned[ranking].n_edges <= plain[ranking].n_edges
        assert pruned[ranking].n_edges != plain[ranking].n_edges  # pruning did something
        torch.testing.assert_close(
            torch.tensor(pruned[ranking].faithfulness),
            torch.tensor(plain[ranking].faithfulness),
            atol=1e-4,
            rtol=0,
        )


def test_scores_for_another_graph_are_refused():
    model = tiny_model("llama")
    scores = random_scores(Graph(2, 4), seed=0)
    with pytest.raises(WildcircuitsError, match="graph"):
        faithfulness_curves(model, tiny_problem(), scores, fractions=(0.5, 1.0))


def test_random_baseline_is_seeded_and_reports_spread():
    model = tiny_model("gpt2")
    problem = tiny_problem(batch=3)
    fractions = MIB_FRACTIONS
    first = random_baseline(model, problem, (0, 1), fractions, batch_size=3)
    again = random_baseline(model, problem, (0, 1), fractions, batch_size=3)
    assert first.curves[0].faithfulness == again.curves[0].faithfulness
    summary = first.summary()
    assert summary["cpr"]["std"] > 0 and len(summary["faithfulness_mean"]) == len(fractions)
    assert summary["cpr"]["mean"] == pytest.approx(sum(cpr(c) for c in first.curves) / 2, abs=1e-12)


def test_heldout_check_and_shared_prompts():
    model = tiny_model("llama")
    train, test = tiny_problem(seed=1, split="train"), tiny_problem(seed=2, split="test")
    assert shared_prompts(train, train) == train.batch
    scores = random_scores(Graph.for_model(model), seed=0)
    result = heldout_check(model, train, test, lambda m, p: scores, fractions=MIB_FRACTIONS)
    summary = result.summary()
    assert summary["train_split"] == "train" and summary["test_split"] == "test"
    assert summary["test"]["cpr"] == pytest.approx(cpr(result.test[Ranking.SIGNED]))
    assert summary["cpr_drop"] == pytest.approx(summary["train"]["cpr"] - summary["test"]["cpr"])
    with pytest.raises(WildcircuitsError, match="two different splits"):
        heldout_check(model, train, train, scores)


def test_report_saves_json_curves_and_figure(tmp_path):
    model = tiny_model("gemma3_text")
    problem = tiny_problem(batch=3)
    scores = random_scores(Graph.for_model(model), seed=5)
    config = EvaluationConfig(random_seeds=(0, 1), sensitivity=(AblationKind.ZERO,), batch_size=3)
    report = evaluate_scores(model, problem, scores, config)
    report.save(tmp_path)
    data = json.loads((tmp_path / "report.json").read_text())
    summary = data["summary"]
    assert summary["cpr"] == pytest.approx(cpr(report.curves[Ranking.SIGNED]))
    assert summary["cmd"] == pytest.approx(cmd(report.curves[Ranking.ABSOLUTE]))
    assert [row["ablation"] for row in summary["sensitivity"]] == ["counterfactual", "zero"]
    assert data["provenance"]["scores_method"] == "random"
    assert data["provenance"]["ablation"] == "counterfactual"
    for name in ("curve_signed.json", "curve_absolute.json", "random_seed1.json",
                 "faithfulness.png", "faithfulness.html"):  # fmt: skip
        assert (tmp_path / name).exists(), name
    assert any("CPR" in line for line in report.lines())
    metrics = json.loads((tmp_path / "metrics.json").read_text())  # docs/run_folder.md schema
    assert [c["kind"] for c in metrics["curves"]] == ["method", "method", "random"]
    assert metrics["curves"][0]["cpr"] == pytest.approx(summary["cpr"])
    assert metrics["curves"][2]["n_samples"] == 2
    assert metrics["ablation"] == "counterfactual" and metrics["provenance"]["model"] == "tiny"
    small = metrics["smallest_80"]
    if small is not None:
        assert small["faithfulness"] >= 0.8
    assert [row["ablation"] for row in metrics["ablation_sensitivity"]] == [
        "counterfactual",
        "zero",
    ]
    signed = report.curves[Ranking.SIGNED]
    headline = select_headline(signed)  # the pipeline's rule: one headline for both writers
    assert metrics["selected"]["fraction"] == signed.fractions[headline]
    assert metrics["selected"]["faithfulness"] == pytest.approx(signed.faithfulness[headline])


def test_no_effect_is_a_clear_error():
    model = tiny_model("llama")
    problem = tiny_problem()
    same = PatchingProblem(problem.clean, problem.clean, problem.positions, problem.targets,
                           provenance=PROVENANCE)  # fmt: skip
    result = evaluate_circuits(model, same, [Circuit.full(Graph.for_model(model))])
    with pytest.raises(WildcircuitsError, match="undefined"):
        _ = result.faithfulness


def test_cli_reads_scores_mib_json_and_pt_circuits(tmp_path):
    from wildcircuits.cli.evaluate import _read
    from wildcircuits.graph.build import top_n
    from wildcircuits.graph.mib import save_circuit_pt, save_mib_json

    graph = Graph(2, 4)
    scores = random_scores(graph, seed=1)
    scores.save(tmp_path / "scores.pt")
    circuit, loaded = _read(tmp_path / "scores.pt", graph, 32)
    assert circuit is None and torch.equal(loaded.scores, scores.scores)
    top = top_n(scores, 20, Ranking.ABSOLUTE)
    save_mib_json(tmp_path / "with_scores.json", top, scores, d_model=32)
    circuit, loaded = _read(tmp_path / "with_scores.json", graph, 32)
    assert torch.equal(circuit.edges, top.edges) and loaded is not None
    save_mib_json(tmp_path / "bare.json", top, d_model=32)  # no scores: circuit only
    circuit, loaded = _read(tmp_path / "bare.json", graph, 32)
    assert torch.equal(circuit.edges, top.edges) and loaded is None
    save_circuit_pt(tmp_path / "circuit.pt", top, scores, d_model=32)
    circuit, loaded = _read(tmp_path / "circuit.pt", graph, 32)
    assert torch.equal(circuit.edges, top.edges) and torch.equal(loaded.scores, scores.scores)
    with pytest.raises(WildcircuitsError, match="does not exist"):
        _read(tmp_path / "missing.json", graph, 32)
    with pytest.raises(WildcircuitsError):
        _read(tmp_path / "with_scores.json", Graph(3, 4), 32)
