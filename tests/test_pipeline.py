"""The `discover` pipeline end to end on a tiny GGUF model and a JSONL task (seconds), plus the
does-the-model-do-it gate, resume after a crash, and recomputing corrupt outputs."""

from __future__ import annotations

import json
import random

import pytest

from wildcircuits.pipeline import STEPS, DiscoverConfig, discover
from wildcircuits.pipeline import runner as runner_module
from wildcircuits.pipeline.run_folder import RunFolder

FILES = ["config.json", "manifest.json", "behaviour.json", "localise.json", "scores.pt",
         "circuit.json", "circuit_sizes.json", "metrics.json", "explanation.json",
         "hypothesis.yaml", "verification.json", "redteam.json", "roles.json",
         "report.html"]  # fmt: skip


@pytest.fixture
def tiny_setup(tmp_path, tmp_cache, write_tiny_gguf):
    """A tiny random Llama GGUF and a JSONL copying task for its byte-level tokenizer."""
    model = tmp_path / "tiny.gguf"
    write_tiny_gguf(model)
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    rows = []
    for i in range(60):
        a, b, c, d, e, f = rng.sample(letters, 6)
        rows.append({"clean": f"{a}{b}{c}{a}{b}", "corrupted": {"other": f"{d}{e}{f}{d}{e}"},
                     "answer": c, "distractor": f, "template": f"t{i % 2}"})  # fmt: skip
    task = tmp_path / "copy.jsonl"
    task.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return str(model), str(task)


def _config(model: str, task: str, **changes) -> DiscoverConfig:
    base = DiscoverConfig(task=task, model=model, method="eap", n_examples=6, n_heldout=6,
                          random_seeds=(1, 2), min_accuracy=0.0)  # fmt: skip
    return base.with_(**changes)


def test_full_run_writes_every_file_and_a_report(tiny_setup, tmp_path):
    model, task = tiny_setup
    folder = discover(_config(model, task), tmp_path / "run", progress=False)
    for name in FILES:
        assert (folder / name).exists(), name
    manifest = json.loads((folder / "manifest.json").read_text())
    assert [manifest["steps"][s]["state"] for s in STEPS] == ["done"] * len(STEPS)
    assert manifest["model"]["source"] == "gguf" and manifest["git_commit"]
    # Each step's cost in token-forwards: the model's steps ran some, the report none, and the
    # verify step at least its rounds of criteria (a round the split is too small for has none).
    forwards = {s: manifest["steps"][s]["token_forwards"] for s in STEPS}
    assert all(forwards[s] > 0 for s in ("behaviour", "localise", "discover", "evaluate",
                                         "explain", "verify", "redteam"))  # fmt: skip
    assert forwards["report"] == 0
    rounds = json.loads((folder / "verification.json").read_text())["provenance"]["rounds"]
    assert forwards["verify"] >= sum(r.get("token_forwards", 0) for r in rounds) > 0
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["provenance"]["quantization"]
    assert {c["kind"] for c in metrics["curves"]} == {"method", "random"}
    redteam = json.loads((folder / "redteam.json").read_text())
    assert {c["verdict"] for c in redteam["checks"]} <= {"pass", "warn"}
    assert {c["name"] for c in redteam["checks"]} >= {
        "random_circuit",
        "other_seed",
        "ablation_type",
        "position_only",
    }
    sizes = json.loads((folder / "circuit_sizes.json").read_text())
    assert all(s["n_edges"] == len(s["edges"]) for s in sizes["sizes"])
    assert (
        "Red team" in (folder / "report.html").read_text()
        or "red team" in (folder / "report.html").read_text().lower()
    )
    page = (folder / "report.html").read_text()
    assert 'class="verdict verdict-running"' not in page  # the page lists its own step as done
    assert '<td>report</td><td><span class="verdict verdict-done">' in page
    selected = metrics["selected"]
    circuit = json.loads((folder / "circuit_sizes.json").read_text())
    assert circuit["sizes"][circuit["selected"]]["faithfulness"] == selected["faithfulness"]


def test_a_model_that_does_not_do_the_task_stops_with_a_report(tiny_setup, tmp_path):
    model, task = tiny_setup
    folder = discover(_config(model, task, min_accuracy=0.99), tmp_path / "run", progress=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "does not do the task" in manifest["stopped"]["reason"]
    assert "localise" not in manifest["steps"]
    assert "does not do the task" in (folder / "report.html").read_text()
    again = discover(_config(model, task, min_accuracy=0.99), folder, resume=True, progress=False)
    manifest = json.loads((again / "manifest.json").read_text())
    assert "does not do the task" in manifest["stopped"]["reason"]  # the gate holds on resume
    assert "localise" not in manifest["steps"]


def test_resume_skips_finished_steps_and_recomputes_missing_or_corrupt_ones(
    tiny_setup, tmp_path, monkeypatch
):
    model, task = tiny_setup
    config = _config(model, task)
    calls: list[str] = []
    original = dict(runner_module.STEP_FUNCTIONS)

    def counting(name):
        def step(ctx):
            calls.append(name)
            if name == "redteam" and fail["redteam"]:
                raise RuntimeError("killed")
            return original[name](ctx)

        return step

    fail = {"redteam": True}
    monkeypatch.setattr(runner_module, "STEP_FUNCTIONS", {n: counting(n) for n in original})
    with pytest.raises(RuntimeError, match="killed"):
        discover(config, tmp_path / "run", progress=False)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["steps"]["redteam"]["state"] == "failed"
    assert manifest["steps"]["evaluate"]["state"] == "done"
    fail["redteam"] = False
    calls.clear()
    (tmp_path / "run" / "localise.json").write_text("{truncated")  # a corrupt output
    discover(config, tmp_path / "run", resume=True, progress=False)
    assert calls == ["localise", "redteam", "summarise", "report"]
    assert RunFolder(tmp_path / "run").path("roles.json").exists()


def test_other_settings_are_refused_without_resume_and_recomputed_with_it(tiny_setup, tmp_path):
    model, task = tiny_setup
    discover(_config(model, task, steps=("behaviour",)), tmp_path / "run", progress=False)
    from wildcircuits.errors import WildcircuitsError

    with pytest.raises(WildcircuitsError, match="other settings.*seed: 0 -> 5"):
        discover(_config(model, task, seed=5, steps=("behaviour",)), tmp_path / "run",
                 progress=False)  # fmt: skip
    discover(_config(model, task, seed=5, steps=("behaviour",)), tmp_path / "run", resume=True,
             progress=False)  # fmt: skip
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["steps"]["behaviour"]["inputs"]["seed"] == 5


def test_bad_settings_are_clear_errors():
    from wildcircuits.errors import WildcircuitsError

    with pytest.raises(WildcircuitsError, match="unknown step"):
        DiscoverConfig(steps=("behaviour", "dance"))
    with pytest.raises(WildcircuitsError, match="unknown ablation 'banana'"):
        DiscoverConfig(ablation="banana")
    with pytest.raises(WildcircuitsError, match="does not support 'resample'.*zero"):
        DiscoverConfig(ablation="resample")  # a site ablation, not an edge one
