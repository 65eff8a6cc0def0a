"""`load_model`: any supported model, instrumented."""

from __future__ import annotations

import torch

from wildcircuits.models.info import info_from_config
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.models.zoo import DEFAULT_MODEL


def load_model(
    name_or_path: str = DEFAULT_MODEL,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | str = torch.float32,
) -> InstrumentedModel:
    """Load a built-in id, HF hub id, local model folder or .gguf file, instrumented.

    Built-ins: `smollm2-135m-instruct` (default) and `gemma3-270m`, dequantized to float32.
    """
    from wildcircuits.models.loading import load_pretrained

    if isinstance(dtype, str):
        dtype = getattr(torch, dtype)
    hf_model, tokenizer, info = load_pretrained(name_or_path, device=device, dtype=dtype)
    return InstrumentedModel(hf_model, tokenizer, info)


def wrap_hf_model(hf_model, tokenizer=None, model_id: str = "in-memory") -> InstrumentedModel:
    """Instrument an already-loaded HF causal LM (e.g. a random-weight test model)."""
    info = info_from_config(hf_model.config, model_id=model_id, source="memory")
    return InstrumentedModel(hf_model.eval(), tokenizer, info)
