"""Tiny randomly initialised models of every supported family (no download needed)."""

from __future__ import annotations

import functools
import logging

import torch
import transformers as hf

from wildcircuits.models import InstrumentedModel, tokens_from_ids, wrap_hf_model

VOCAB = 97

logging.getLogger("transformers").setLevel(logging.ERROR)


def _configs() -> dict[str, object]:
    common_ids = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return {
        "gpt2": hf.GPT2Config(
            n_layer=3, n_head=4, n_embd=32, vocab_size=VOCAB, n_positions=64, **common_ids
        ),
        "gpt_neox": hf.GPTNeoXConfig(
            num_hidden_layers=3,
            num_attention_heads=4,
            hidden_size=32,
            intermediate_size=64,
            vocab_size=VOCAB,
            max_position_embeddings=64,
            rotary_pct=0.25,
            **common_ids,
        ),
        "llama": hf.LlamaConfig(
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            hidden_size=32,
            intermediate_size=64,
            vocab_size=VOCAB,
            **common_ids,
        ),
        "qwen2": hf.Qwen2Config(
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=2,
            hidden_size=32,
            intermediate_size=64,
            vocab_size=VOCAB,
            **common_ids,
        ),
        "gemma3_text": hf.Gemma3TextConfig(
            num_hidden_layers=3,
            num_attention_heads=4,
            num_key_value_heads=1,
            hidden_size=32,
            head_dim=16,
            intermediate_size=64,
            vocab_size=VOCAB,
            sliding_window=4,
            layer_types=["sliding_attention", "sliding_attention", "full_attention"],
            **common_ids,
        ),
    }


FAMILIES = tuple(_configs())


@functools.cache
def tiny_model(family: str, seed: int = 0) -> InstrumentedModel:
    """A random-weight model of `family` with eager attention, instrumented."""
    config = _configs()[family]
    torch.manual_seed(seed)
    hf_model = hf.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    for parameter in hf_model.parameters():
        parameter.requires_grad_(False)
    # Random RMSNorm / LayerNorm weights: the defaults (ones / zeros) would hide norm bugs.
    with torch.no_grad():
        for name, parameter in hf_model.named_parameters():
            if "norm" in name or "ln_" in name:
                parameter.add_(0.1 * torch.randn_like(parameter))
    return wrap_hf_model(hf_model, model_id=f"tiny-{family}")


def tiny_tokens(batch: int = 3, length: int = 9, seed: int = 1, padded: bool = True):
    """Random ids; row 1 right-padded and row 2 left-padded when `padded`."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, VOCAB, (batch, length), generator=generator)
    mask = torch.ones_like(ids)
    if padded and batch >= 3:
        mask[1, length - 3 :] = 0
        mask[2, :2] = 0
    return tokens_from_ids(ids, mask)


class CharTokenizer:
    """Enough of a tokenizer for tokenizing prompts: one token per character."""

    bos_token_id = 1
    pad_token_id = 0

    def __call__(self, text, add_special_tokens=True):
        ids = [3 + (ord(c) % 90) for c in text]
        return {"input_ids": ([1] if add_special_tokens else []) + ids}
