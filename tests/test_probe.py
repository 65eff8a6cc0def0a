"""The behaviour probe on a hand-computable stand-in model, and its outputs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from tests.tasks_fixtures import JSONL_ROW, real_tokenizers  # noqa: F401
from wildcircuits.results.behaviour import BREAKS, HOLDS, Verdict
from wildcircuits.tasks import load_task
from wildcircuits.tasks.probe import run_probe, verdict
from wildcircuits.tasks.probe_output import write_probe


class CountingModel:
    """logit[v] at position p = how often token v occurred up to p: a pure copying model."""

    def __init__(self, tokenizer) -> None:
        self.tokenizer = tokenizer
        self.device = torch.device("cpu")
        self.info = SimpleNamespace(
            to_dict=lambda: {"model_id": "counting", "quantization": "none (test stand-in)"}
        )

    def logits(self, tokens, positions=None) -> torch.Tensor:
        onehot = F.one_hot(tokens.input_ids, len(self.tokenizer)).float()
        counts = (onehot * tokens.attention_mask[..., None]).cumsum(1)  # (batch, pos, vocab)
        if positions is None:
            return counts
        return counts[torch.arange(counts.shape[0]), positions]


@pytest.fixture(scope="module")
def ioi_result(real_tokenizers):  # noqa: F811
    model = CountingModel(real_tokenizers["smollm2-135m-instruct"])
    return run_probe(model, load_task("ioi"), n=6, seed=0, batch_size=4, progress=False)


def test_probe_numbers_match_hand_computation(ioi_result) -> None:
    """IO occurs once and S twice: logit diff IO - S is -1 clean, 0 under abc, +1 flipped."""
    assert ioi_result.clean.mean == pytest.approx(-1.0)
    assert ioi_result.clean.accuracy == 0.0
    assert ioi_result.corrupted["abc"].mean == pytest.approx(0.0)
    assert ioi_result.corrupted["s2_io_flip"].mean == pytest.approx(1.0)
    assert ioi_result.clean.normalized == pytest.approx(1.0)
    assert ioi_result.corrupted["abc"].normalized == pytest.approx(0.0)
    assert ioi_result.corrupted["abc"].kl_to_clean > 0
    io_repeated = next(v for v in ioi_result.variations if v.name == "io_repeated")
    assert io_repeated.mean == pytest.approx(0.0)  # IO twice, S twice
    assert io_repeated.verdict is Verdict.BREAKS
    orders = {v.name for v in ioi_result.variations if v.name.startswith("order=")}
    assert orders == {"order=ABBA", "order=BABA"}


def test_verdict_thresholds() -> None:
    assert verdict(HOLDS) is Verdict.HOLDS
    assert verdict(HOLDS - 1e-9) is Verdict.DEGRADES
    assert verdict(BREAKS) is Verdict.DEGRADES
    assert verdict(BREAKS - 1e-9) is Verdict.BREAKS
    assert verdict(None) is Verdict.UNDEFINED


def test_probe_writes_json_and_png(ioi_result, tmp_path: Path) -> None:
    json_path, png_path = write_probe(ioi_result, tmp_path / "out")
    data = json.loads(json_path.read_text())
    for key in ("task", "model", "n", "metric", "clean", "corrupted", "variations", "provenance"):
        assert key in data
    assert data["provenance"]["model_id"] == "counting"
    assert {"metric", "split", "seed", "quantization"} <= set(data["provenance"])
    for variation in data["variations"]:
        assert {"name", "n", "mean", "accuracy", "verdict"} <= set(variation)
    assert png_path.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
        "behaviour.json",
        "behaviour.png",
    ]


def test_probe_loss_task(real_tokenizers) -> None:  # noqa: F811
    """Induction (loss metric, full-sequence logits) runs end to end with its variations."""
    model = CountingModel(real_tokenizers["smollm2-135m-instruct"])
    result = run_probe(model, load_task("induction"), n=4, batch_size=4, progress=False)
    assert result.metric == "loss" and result.higher_is_better is False
    assert result.clean.n == 4 and result.clean.mean > 0
    assert {v.name for v in result.variations} >= {"seq_len_5", "rare_tokens"}


def test_probe_saves_the_rows_the_dataset_dropped(real_tokenizers, tmp_path: Path) -> None:  # noqa: F811
    """A JSONL row whose corrupted prompt has another token length is dropped: behaviour.json's
    `build` says how many and why (not only the builder's internal count)."""
    lines = [
        JSONL_ROW % "When the tall old man and John left, John thanked",
        JSONL_ROW % "When Anna and John left, John thanked",
        JSONL_ROW % "When Kate and John left, John thanked",
    ]
    path = tmp_path / "rows.jsonl"
    path.write_text("\n".join(lines) + "\n")
    model = CountingModel(real_tokenizers["smollm2-135m-instruct"])
    result = run_probe(model, load_task(path), n=2, batch_size=4, progress=False)
    json_path, _ = write_probe(result, tmp_path / "out")
    build = json.loads(json_path.read_text())["build"]
    assert build["built"] == 2 and build["dropped_unequal_length"] == 1
    assert any("token length differs" in reason for reason in build["dropped_examples"])
