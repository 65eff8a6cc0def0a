"""Models: loading (built-in zoo, hub, local folders, GGUF) and the instrumented model."""

from __future__ import annotations

import torch

from wildcircuits.models.info import ModelInfo, info_from_config
from wildcircuits.models.instrumented import InstrumentedModel, RunResult
from wildcircuits.models.tokens import Tokens, tokenize, tokens_from_ids

__all__ = [
    "InstrumentedModel",
    "ModelInfo",
    "RunResult",
    "Tokens",
    "info_from_config",
    "load_model",
    "tokenize",
    "tokens_from_ids",
    "wrap_hf_model",
]


def load_model(
    name_or_path: str = "smollm2-135m-instruct",
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
) -> InstrumentedModel:
    """Load a built-in id, HF hub id, local model folder or .gguf file, instrumented."""
    from wildcircuits.models.loading import load_pretrained

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    hf_model, tokenizer, info = load_pretrained(name_or_path, device=device, dtype=dtype)
    return InstrumentedModel(hf_model, tokenizer, info)


def wrap_hf_model(hf_model, tokenizer=None, model_id: str = "in-memory") -> InstrumentedModel:
    """Instrument an already-loaded HF causal LM (e.g. a random-weight test model)."""
    info = info_from_config(hf_model.config, model_id=model_id, source="memory")
    return InstrumentedModel(hf_model.eval(), tokenizer, info)
