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


def info_from_config(
    config: Any,
    model_id: str,
    source: str,
    path: str | None = None,
    quantization: str | None = None,
    sha256: str | None = None,
) -> ModelInfo:
    """Read the shape fields of a HF config (any supported family) into a `ModelInfo`."""
    n_heads = _first(config, "num_attention_heads", "n_head")
    d_model = _first(config, "hidden_size", "n_embd")
    d_head = getattr(config, "head_dim", None) or d_model // n_heads
    n_kv_heads = getattr(config, "num_key_value_heads", None) or n_heads
    d_mlp = _first(config, "intermediate_size", "n_inner", default=None) or 4 * d_model
    return ModelInfo(
        model_id=model_id,
        family=config.model_type,
        source=source,
        path=path,
        quantization=quantization,
        sha256=sha256,
        n_layers=_first(config, "num_hidden_layers", "n_layer"),
        n_heads=n_heads,
        n_kv_heads=n_kv_heads,
        d_model=d_model,
        d_head=d_head,
        d_mlp=d_mlp,
        d_vocab=config.vocab_size,
    )


_MISSING = object()


def _first(config: Any, *names: str, default: Any = _MISSING) -> Any:
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    if default is _MISSING:
        raise AttributeError(f"config has none of {names}")
    return default
