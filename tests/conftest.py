"""Shared fixtures.

- `smollm2`, `gemma3`: the real built-in models, loaded once per session through the default cache
  folder (so CI converts each GGUF once and later sessions reuse it). Tests using them are slow on a
  cold cache and are marked `real_model` automatically.
- `write_tiny_gguf`: writes a tiny random Llama model with a byte-level BPE tokenizer as a real GGUF
  file (F32 tensors), so the GGUF conversion and cache paths run in seconds.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

SMOLLM2_ID = "smollm2-135m-instruct"
GEMMA3_ID = "gemma3-270m"
REAL_MODEL_FIXTURES = {"smollm2", "gemma3"}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that uses a real-model fixture as `real_model`."""
    for item in items:
        if REAL_MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.real_model)


@pytest.fixture(scope="session")
def smollm2():
    """(model, tokenizer, ModelInfo) of SmolLM2-135M-Instruct, fp32 on CPU."""
    from wildcircuits.models.loading import load_pretrained

    return load_pretrained(SMOLLM2_ID)


@pytest.fixture(scope="session")
def gemma3():
    """(model, tokenizer, ModelInfo) of Gemma3-270M, fp32 on CPU."""
    from wildcircuits.models.loading import load_pretrained

    return load_pretrained(GEMMA3_ID)


def _byte_level_alphabet() -> list[str]:
    """The 256 printable characters GPT-2's byte-level BPE uses for the 256 bytes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += range(ord("®"), ord("ÿ") + 1)
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


TINY_SHAPE = {"d_model": 16, "n_layers": 2, "n_heads": 4, "n_kv_heads": 2, "d_mlp": 32}


def tiny_gguf(path: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write a tiny random Llama GGUF model to `path`; return its tensors by GGUF name."""
    import gguf

    rng = np.random.default_rng(seed)
    d_model, d_mlp = TINY_SHAPE["d_model"], TINY_SHAPE["d_mlp"]
    d_head = d_model // TINY_SHAPE["n_heads"]
    d_kv = TINY_SHAPE["n_kv_heads"] * d_head
    tokens = ["<|endoftext|>", *_byte_level_alphabet(), "Ġt", "Ġth"]
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-test")
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_block_count(TINY_SHAPE["n_layers"])
    writer.add_context_length(64)
    writer.add_embedding_length(d_model)
    writer.add_feed_forward_length(d_mlp)
    writer.add_head_count(TINY_SHAPE["n_heads"])
    writer.add_head_count_kv(TINY_SHAPE["n_kv_heads"])
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_rope_freq_base(10000.0)
    writer.add_vocab_size(len(tokens))
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("default")
    writer.add_token_list(tokens)
    writer.add_token_types([3] + [1] * (len(tokens) - 1))
    writer.add_token_merges(["Ġ t", "Ġt h"])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)

    def weight(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) * 0.1).astype(np.float32)

    tensors = {"token_embd.weight": weight(len(tokens), d_model)}
    tensors["output_norm.weight"] = np.ones(d_model, np.float32)
    for layer in range(TINY_SHAPE["n_layers"]):
        prefix = f"blk.{layer}."
        tensors[prefix + "attn_norm.weight"] = np.ones(d_model, np.float32)
        tensors[prefix + "attn_q.weight"] = weight(d_model, d_model)
        tensors[prefix + "attn_k.weight"] = weight(d_kv, d_model)
        tensors[prefix + "attn_v.weight"] = weight(d_kv, d_model)
        tensors[prefix + "attn_output.weight"] = weight(d_model, d_model)
        tensors[prefix + "ffn_norm.weight"] = np.ones(d_model, np.float32)
        tensors[prefix + "ffn_gate.weight"] = weight(d_mlp, d_model)
        tensors[prefix + "ffn_up.weight"] = weight(d_mlp, d_model)
        tensors[prefix + "ffn_down.weight"] = weight(d_model, d_mlp)
    for name, array in tensors.items():
        writer.add_tensor(name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return tensors


@pytest.fixture
def write_tiny_gguf() -> Callable[..., dict[str, np.ndarray]]:
    """`write_tiny_gguf(path, seed=0)` writes a tiny GGUF model and returns its tensors."""
    return tiny_gguf


@pytest.fixture
def tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh, empty wildcircuits cache folder for this test (via WILDCIRCUITS_CACHE)."""
    root = tmp_path / "cache"
    monkeypatch.setenv("WILDCIRCUITS_CACHE", str(root))
    return root
