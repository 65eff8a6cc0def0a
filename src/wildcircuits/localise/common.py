"""Small helpers shared by the localisation methods: per-row gathers and provenance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from wildcircuits.models.instrumented import InstrumentedModel


def at_positions(value: Tensor, positions: Tensor) -> Tensor:
    """Each row's value at its own position: (batch, pos, ...) -> (batch, ...)."""
    rows = torch.arange(value.shape[0], device=value.device)
    return value[rows, positions.to(value.device)]


def provenance(
    model: InstrumentedModel, base: Mapping[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """Model id and quantization, then `base` (e.g. a problem's provenance), then `extra`.

    A model without quantization (e.g. full-precision random weights) says so explicitly.
    """
    out: dict[str, Any] = {
        "model": model.info.model_id,
        "quantization": model.info.quantization or "none (unquantized weights)",
    }
    out.update({k: v for k, v in (base or {}).items() if v is not None or k not in out})
    out.update(extra)
    return out
