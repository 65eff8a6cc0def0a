"""A tiny catalogue on disk: tiny GGUF models x JSONL tasks, each cell the whole pipeline in
seconds. `write_inputs` writes the model and three tasks: `copy` (the tiny model does it at
the gate used here), `swapped` (answer and distractor exchanged: its clean accuracy is one minus
copy's, so the behaviour gate stops it) and `bad` (multi-token answers: the cell fails)."""

from __future__ import annotations

import json
import random
from pathlib import Path

from tests.conftest import tiny_gguf
from wildcircuits.pipeline import DiscoverConfig

#: The gate between copy's clean accuracy (4/6 on the train split) and swapped's (2/6).
MIN_ACCURACY = 0.5


def _rows(swap: bool) -> list[dict]:
    rng = random.Random(0)
    letters = "abcdefghijklmnopqrstuvwxyz"
    rows = []
    for i in range(60):
        a, b, c, d, e, f = rng.sample(letters, 6)
        answer, distractor = (f, c) if swap else (c, f)
        rows.append(
            {
                "clean": f"{a}{b}{c}{a}{b}",
                "corrupted": {"other": f"{d}{e}{f}{d}{e}"},
                "answer": answer,
                "distractor": distractor,
                "template": f"t{i % 2}",
            }
        )
    return rows


def write_inputs(folder: Path) -> dict[str, str]:
    """Write tiny.gguf, copy.jsonl, swapped.jsonl and bad.jsonl; returns name -> path."""
    folder.mkdir(parents=True, exist_ok=True)
    tiny_gguf(folder / "tiny.gguf")
    paths = {"model": str(folder / "tiny.gguf")}
    for name, rows in (("copy", _rows(False)), ("swapped", _rows(True))):
        (folder / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        paths[name] = str(folder / f"{name}.jsonl")
    bad = {"clean": "abcab", "corrupted": "defde", "answer": "xyz", "distractor": "qrs"}
    (folder / "bad.jsonl").write_text(json.dumps(bad) + "\n")
    paths["bad"] = str(folder / "bad.jsonl")
    return paths


def tiny_config() -> DiscoverConfig:
    return DiscoverConfig(
        method="eap", n_examples=6, n_heldout=6, random_seeds=(1, 2), min_accuracy=MIN_ACCURACY
    )
