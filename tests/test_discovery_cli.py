"""`wildcircuits discover-edges`: option plumbing, output files and errors (tiny model)."""

from __future__ import annotations

import json

import pytest
import torch

from tests.discovery_fixtures import tiny_problem
from tests.tiny_models import tiny_model
from wildcircuits.cli.main import main
from wildcircuits.graph.circuit import EdgeScores


@pytest.fixture
def tiny_task(monkeypatch):
    """Make the CLI's problem loader return a tiny model and problem (no real model, no task)."""
    model = tiny_model("llama")
    problem = tiny_problem(model)
    monkeypatch.setattr("wildcircuits.cli.attribute.load_problem", lambda args: (model, problem))
    return model, problem


def test_discover_edges_writes_scores_and_summary(tiny_task, tmp_path, capsys):
    model, problem = tiny_task
    status = main(["discover-edges", "ioi", "--method", "eap-ig-inputs", "--steps", "2",
                   "--riemann", "right", "--batch-size", "2", "--top", "5", "--quiet",
                   "--out", str(tmp_path)])  # fmt: skip
    assert status == 0
    scores = EdgeScores.load(tmp_path / "scores.pt")
    assert scores.method == "eap-ig-inputs"
    assert scores.settings["steps"] == 2 and scores.settings["riemann"] == "right"
    assert scores.settings["batch_size"] == 2
    summary = json.loads((tmp_path / "discovery.json").read_text())
    assert [row["edge"] for row in summary["top_edges"]] == [e for e, _ in scores.top(5)]
    assert summary["provenance"]["model"] == "tiny-llama"
    assert summary["provenance"]["method"] == "eap-ig-inputs"
    assert summary["n_examples"] == problem.batch
    assert len(summary["top_nodes"]) == 5 and "outgoing" in summary["node_score"]
    out = capsys.readouterr().out
    assert summary["top_edges"][0]["edge"] in out


def test_discover_edges_seed_reaches_the_random_method(tiny_task, tmp_path):
    for seed in (1, 2):
        main(["discover-edges", "ioi", "--method", "random", "--seed", str(seed),
              "--out", str(tmp_path / str(seed))])  # fmt: skip
    one = EdgeScores.load(tmp_path / "1" / "scores.pt")
    two = EdgeScores.load(tmp_path / "2" / "scores.pt")
    assert one.settings["seed"] == 1 and not torch.equal(one.scores, two.scores)


def test_discover_edges_rejects_unknown_methods_and_settings(tiny_task, tmp_path, capsys):
    assert main(["discover-edges", "ioi", "--method", "magic", "--out", str(tmp_path)]) == 2
    assert "known methods" in capsys.readouterr().err
    assert main(["discover-edges", "ioi", "--method", "eap", "--steps", "3",
                 "--out", str(tmp_path)]) == 2  # fmt: skip
    assert "no steps setting" in capsys.readouterr().err
    assert main(["discover-edges", "ioi", "--method", "eap", "--set", "tau=1",
                 "--out", str(tmp_path)]) == 2  # fmt: skip
    assert "no setting" in capsys.readouterr().err
    assert not (tmp_path / "scores.pt").exists()


def test_discover_edges_acdc_writes_its_own_circuit(tiny_task, tmp_path, capsys):
    from wildcircuits.graph.mib import load_mib_json

    model, _ = tiny_task
    tau = 2e-4
    status = main(["discover-edges", "ioi", "--method", "acdc", "--set", f"threshold={tau}",
                   "--quiet", "--out", str(tmp_path)])  # fmt: skip
    assert status == 0
    scores = EdgeScores.load(tmp_path / "scores.pt")
    kept = (scores.scores >= tau) & scores.graph.valid
    assert 0 < int(kept.sum()) < scores.graph.n_edges
    loaded = load_mib_json(tmp_path / "circuit.json", scores.graph, d_model=model.d_model)
    assert torch.equal(loaded.circuit.edges, kept)
    summary = json.loads((tmp_path / "discovery.json").read_text())
    assert summary["acdc_circuit"]["n_edges"] == int(kept.sum())
    assert "ACDC circuit" in capsys.readouterr().out


def test_discover_edges_ablation_option_reaches_the_method_and_its_provenance(
    tiny_task, tmp_path, capsys
):
    status = main(["discover-edges", "ioi", "--method", "acdc", "--ablation", "mean:clean",
                   "--set", "threshold=2e-4", "--quiet", "--out", str(tmp_path)])  # fmt: skip
    assert status == 0
    summary = json.loads((tmp_path / "discovery.json").read_text())
    assert summary["settings"]["ablation"] == "mean:clean"
    assert summary["provenance"]["ablation"] == "mean:clean"
    assert summary["provenance"]["mean_reference"] == "clean"
    assert main(["discover-edges", "ioi", "--method", "eap-ig-inputs", "--ablation", "zero",
                 "--out", str(tmp_path / "ig")]) == 2  # fmt: skip
    assert "does not support 'zero' ablation; its ablations: counterfactual" in (
        capsys.readouterr().err
    )
    assert main(["discover-edges", "ioi", "--method", "random", "--ablation", "mean",
                 "--out", str(tmp_path / "random")]) == 2  # fmt: skip
    assert "runs no ablation" in capsys.readouterr().err


def test_evaluate_parses_the_ablation_spec_before_loading_a_model(capsys, tmp_path):
    args = ["evaluate", str(tmp_path / "scores.pt"), "--task", "ioi", "--out", str(tmp_path)]
    assert main([*args, "--ablation", "resample"]) == 2
    assert "evaluate does not support 'resample' ablation" in capsys.readouterr().err
    assert main([*args, "--ablation", "mean:nowhere"]) == 2
    assert "unknown option 'nowhere'" in capsys.readouterr().err
