"""Session fixtures for the task tests: the two real tokenizers (no model weights)."""

from __future__ import annotations

import pytest

REAL_TOKENIZER_IDS = ("smollm2-135m-instruct", "gemma3-270m")


@pytest.fixture(scope="session")
def real_tokenizers() -> dict:
    """{model id: tokenizer} from the converted-GGUF cache (built once if missing)."""
    from wildcircuits.models import cache, zoo

    out = {}
    for model_id in REAL_TOKENIZER_IDS:
        path = zoo.locate_gguf(model_id, cache.cache_root())
        out[model_id] = cache.load_tokenizer(cache.ensure_converted(path).folder)
    return out


#: One JSONL task row; `%s` is the corrupted prompt (a longer one has another token length).
JSONL_ROW = (
    '{"clean": "When Mary and John left, John thanked", "corrupted": "%s", '
    '"answer": " Mary", "distractor": " John"}'
)
