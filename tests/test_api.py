"""The short Python API (`import wildcircuits as wc`) and the Jupyter views of results."""

from __future__ import annotations

import re

import pytest

import wildcircuits as wc
from tests.tiny_models import tiny_model, tiny_tokens
from wildcircuits.graph.build import Ranking, greedy
from wildcircuits.graph.graph import Graph
from wildcircuits.patching.grid import ScoreGrid


def test_every_export_resolves():
    for name in wc.__all__:
        assert getattr(wc, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        wc.nonsense  # noqa: B018


def test_readme_verbs_on_the_real_model(smollm2):
    """The README's first example, at a size that runs in seconds."""
    model = wc.load_model("smollm2-135m-instruct")
    problem = wc.load_task("ioi").problem(model, n=4, split="train")
    assert problem.batch == 4 and problem.provenance["split"] == "train"
    scores = wc.score_edges(model, problem, method="eap", settings={"batch_size": 4})
    assert scores.method == "eap" and scores.graph.n_edges == Graph.for_model(model).n_edges
    report = wc.evaluate(
        model, problem, scores, wc.EvaluationConfig(fractions=(0.01, 1.0), random_seeds=(0,))
    )
    text = str(report)
    assert "CPR" in text and "smallest circuit" in text
    full = report.curves[Ranking.SIGNED].faithfulness[-1]
    assert full == pytest.approx(1.0, abs=1e-4)  # the whole graph is the model


def test_problem_rejects_an_unknown_split(smollm2):
    model = wc.load_model("smollm2-135m-instruct")
    with pytest.raises(wc.WildcircuitsError, match="unknown split 'validation'.*train"):
        wc.load_task("ioi").problem(model, n=4, split="validation")


def test_problem_needs_a_tokenizer():
    with pytest.raises(wc.WildcircuitsError, match="has none"):
        wc.load_task("ioi").problem(tiny_model("llama"), n=4)


def test_score_edges_rejects_unknown_settings():
    with pytest.raises(wc.WildcircuitsError, match="no setting.*'stepz'"):
        wc.score_edges(tiny_model("llama"), None, method="eap-ig-inputs", settings={"stepz": 3})


def _grid() -> ScoreGrid:
    import torch

    values = torch.tensor([[0.5, -1.0], [0.25, float("nan")]])
    return ScoreGrid("g", "Heads <b>", values, "layer", "head", ["0", "1"], ["<h0>", "h1"],
                     {"model": "tiny & co"})  # fmt: skip


def _assert_offline(html: str) -> None:
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert "http" not in html.replace("http://www.w3.org", "")


def test_score_grid_shows_itself_as_a_heatmap():
    html = _grid()._repr_html_()
    _assert_offline(html)
    assert html.count("<rect x=") >= 4  # one cell each (plus the legend)
    assert "Heads &lt;b&gt;" in html and "&lt;h0&gt;" in html and "tiny &amp; co" in html
    assert "<b>Heads <b>" not in html  # strings are escaped


def test_edge_scores_and_circuits_show_a_summary_and_a_graph():
    import torch

    graph = Graph(2, 2)
    generator = torch.Generator().manual_seed(0)
    scores = wc.EdgeScores(graph, torch.randn(graph.n_receivers, graph.n_senders,
                                             generator=generator), "eap", {"steps": 1})  # fmt: skip
    html = scores._repr_html_()
    _assert_offline(html)
    assert f"{graph.n_edges:,} edges" in html and "EdgeScores (eap)" in html
    top_name = scores.top(1)[0][0]
    assert top_name.replace("<", "&lt;").replace(">", "&gt;") in html
    assert "<svg" in html and 'class="edge"' in html
    circuit = greedy(scores, 6)
    assert circuit.n_edges > 0
    html = circuit._repr_html_()
    _assert_offline(html)
    assert re.search(rf"{circuit.n_edges:,} of {graph.n_edges:,} edges", html)
    assert html.count('class="edge"') == circuit.n_edges


def test_evaluation_report_shows_its_table_and_curve():
    from wildcircuits.evaluation.curves import FaithfulnessCurve
    from wildcircuits.evaluation.report import EvaluationReport

    curves = {
        r: FaithfulnessCurve((0.1, 1.0), (2, 20), (0.5, 1.0), (1.0, 2.0), 2.0, 0.0, 0.0, r,
                             "counterfactual", 20)
        for r in Ranking
    }  # fmt: skip
    report = EvaluationReport(curves, None, (), None, {"metric": "logit_diff"})
    html = report._repr_html_()
    _assert_offline(html)
    assert "<svg" in html and "CPR" in html and "logit_diff" in html
    assert str(report).splitlines() == report.lines()


def test_model_run_tokens_unchanged_by_api_import():
    """Importing the API verbs imports no model code at import time of `wildcircuits`."""
    model = tiny_model("llama")
    tokens = tiny_tokens()
    assert model.run(tokens).logits.shape[0] == tokens.batch
