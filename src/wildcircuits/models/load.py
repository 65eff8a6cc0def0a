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
    model = InstrumentedModel(hf_model, tokenizer, info)
    check_finite(model)
    return model


def check_finite(model: InstrumentedModel, n_tokens: int = 8) -> None:
    """Raise `ModelFileError` unless a forward on a few token ids gives finite logits.

    Weights holding NaN / inf (a corrupt file, a bad conversion, a dtype that overflows) would
    otherwise turn every later number into `nan`; a result must never be built on them.
    """
    from wildcircuits.errors import ModelFileError
    from wildcircuits.models.cache import cache_root
    from wildcircuits.models.tokens import tokens_from_ids

    ids = torch.arange(n_tokens, device=model.device)[None] % model.info.d_vocab  # (1, pos)
    logits = model.logits(tokens_from_ids(ids))
    if not bool(torch.isfinite(logits).all()):
        bad = int((~torch.isfinite(logits)).sum())
        raise ModelFileError(
            f"model {model.info.model_id!r} gives non-finite logits ({bad} of {logits.numel()} "
            f"values on a {n_tokens}-token check): its weights hold NaN / inf or overflow in "
            f"{model.dtype}; re-convert or re-download the model (converted GGUF models live "
            f"under {cache_root()}) or load it in float32"
        )


def wrap_hf_model(hf_model, tokenizer=None, model_id: str = "in-memory") -> InstrumentedModel:
    """Instrument an already-loaded HF causal LM (e.g. a random-weight test model)."""
    info = info_from_config(hf_model.config, model_id=model_id, source="memory")
    return InstrumentedModel(hf_model.eval(), tokenizer, info)
