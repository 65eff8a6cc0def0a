"""The `discover` pipeline end to end with a loss task (the metric read at many positions per row):
a tiny GGUF model and a JSONL task of repeated letter sequences with `loss_after` rows; every
step runs, as for one-position tasks."""

from __future__ import annotations

import json
import random

import pytest

from wildcircuits.errors import TaskError
from wildcircuits.pipeline import STEPS, DiscoverConfig, discover
from wildcircuits.tasks import Split, load_task


def _rows(n: int = 60, length: int = 4, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    letters = "abcdefghijklmnopqrsuvwxyz"  # no "t": "Ġt" merges would make ragged tokens
    rows = []
    for i in range(n):
        word = "".join(rng.sample(letters, length))
        other = "".join(rng.sample([c for c in letters if c not in word], length))
        rows.append({"clean": word * 2, "corrupted": {"unrelated": other + word},
                     "loss_after": word + word[0], "template": f"t{i % 2}"})  # fmt: skip
    return rows


@pytest.fixture
def loss_setup(tmp_path, tmp_cache, write_tiny_gguf):
    model = tmp_path / "tiny.gguf"
    # seeds picked so this random model's clean loss beats the corrupted one on both splits
    write_tiny_gguf(model, seed=4)
    task = tmp_path / "repeat.jsonl"
    task.write_text("\n".join(json.dumps(r) for r in _rows(seed=2)) + "\n")
    return str(model), str(task)


def test_loss_rows_give_the_loss_metric_at_the_repeated_tokens(loss_setup):
    from wildcircuits.models import load_model

    model_path, task_path = loss_setup
    model = load_model(model_path)
    task = load_task(task_path)
    assert task.metric.value == "loss"
    data = task.build(model.tokenizer, 4, split=Split.ALL)
    example = data.examples[0]
    ids = example.clean.token_ids
    # clean "wxyzwxyz" (+ BOS): targets x, y, z of the repeat, read one token earlier
    assert example.loss_targets == tuple(ids[-3:])
    assert example.loss_positions == (len(ids) - 4, len(ids) - 3, len(ids) - 2)
    problem = task.problem(model, 4)
    assert problem.positions.shape == (4, 3) and problem.multi_position


def test_bad_loss_rows_are_refused_with_the_fix(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"clean": "abab", "corrupted": "cdab", "loss_after": "x"}) + "\n")
    with pytest.raises(TaskError, match="prefix of clean"):
        load_task(path)
    rows = [{"clean": "abab", "corrupted": "cdab", "loss_after": "aba"},
            {"clean": "abab", "corrupted": "cdab", "answer": "a", "distractor": "b"}]  # fmt: skip
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(TaskError, match="mixes answer rows and loss_after rows"):
        load_task(path)


def test_full_run_on_a_loss_task_runs_every_step(loss_setup, tmp_path):
    model, task = loss_setup
    config = DiscoverConfig(task=task, model=model, method="eap", n_examples=6, n_heldout=6,
                            random_seeds=(1, 2), min_accuracy=0.0, min_loss_gap=0.0)  # fmt: skip
    folder = discover(config, tmp_path / "run", progress=False)
    manifest = json.loads((folder / "manifest.json").read_text())
    assert "stopped" not in manifest or not manifest["stopped"]
    assert [manifest["steps"][s]["state"] for s in STEPS] == ["done"] * len(STEPS)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["provenance"]["metric"] == "loss"
    assert {c["kind"] for c in metrics["curves"]} == {"method", "random"}
    explanation = json.loads((folder / "explanation.json").read_text())
    assert explanation
    verification = json.loads((folder / "verification.json").read_text())
    assert verification
    assert "report" in manifest["steps"] and (folder / "report.html").exists()


def test_the_loss_gate_asks_for_a_loss_gap_not_top1_accuracy():
    from types import SimpleNamespace as NS

    from wildcircuits.pipeline.config import MIN_LOSS_GAP
    from wildcircuits.pipeline.steps_localise import _gate

    def probe(clean: float, corrupted: float, accuracy: float):
        return NS(clean=NS(mean=clean, accuracy=accuracy), baseline=NS(mean=corrupted),
                  higher_is_better=False, metric="loss", default_corruption="c")  # fmt: skip

    # SmolLM2 induction: loss 7.23 vs 12.95, top-1 0.21 -> it does the task
    assert _gate(probe(7.23, 12.95, 0.21), 0.6) is None
    reason = _gate(probe(7.0, 7.0 + MIN_LOSS_GAP / 2, 0.9), 0.6)
    assert reason and "gap below 1.0 nats" in reason
    answer = NS(clean=NS(mean=3.0, accuracy=0.21), baseline=NS(mean=-1.0),
                higher_is_better=True, metric="logit_diff", default_corruption="c")  # fmt: skip
    assert "clean accuracy 0.21" in _gate(answer, 0.6)
