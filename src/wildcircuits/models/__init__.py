"""Models: loading (built-in zoo, hub, local folders, GGUF) and the instrumented model.

Names resolve lazily so that light modules (e.g. `models.zoo` for `wildcircuits models`) do not
import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "InstrumentedModel": "wildcircuits.models.instrumented",
    "RunResult": "wildcircuits.models.instrumented",
    "ModelInfo": "wildcircuits.models.info",
    "info_from_config": "wildcircuits.models.info",
    "Tokens": "wildcircuits.models.tokens",
    "tokenize": "wildcircuits.models.tokens",
    "tokens_from_ids": "wildcircuits.models.tokens",
    "load_model": "wildcircuits.models.load",
    "wrap_hf_model": "wildcircuits.models.load",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'wildcircuits.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # pragma: no cover
    from wildcircuits.models.info import ModelInfo as ModelInfo
    from wildcircuits.models.info import info_from_config as info_from_config
    from wildcircuits.models.instrumented import InstrumentedModel as InstrumentedModel
    from wildcircuits.models.instrumented import RunResult as RunResult
    from wildcircuits.models.load import load_model as load_model
    from wildcircuits.models.load import wrap_hf_model as wrap_hf_model
    from wildcircuits.models.tokens import Tokens as Tokens
    from wildcircuits.models.tokens import tokenize as tokenize
    from wildcircuits.models.tokens import tokens_from_ids as tokens_from_ids
