"""Provenance and shape of a loaded model."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class ModelInfo:
    """What a model is and where it came from; every reported number carries it.

    `quantization` names the origin of the weights (e.g. "GGUF Q4_1, dequantized to float32"),
    or None for full-precision checkpoints.
    """

    model_id: str
    family: str
    source: str  # "builtin", "hub", "local" or "gguf"
    path: str | None
    quantization: str | None
    sha256: str | None
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_mlp: int
    d_vocab: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
