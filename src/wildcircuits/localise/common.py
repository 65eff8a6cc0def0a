"""Small helpers shared by the localisation methods: per-row gathers and provenance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.tasks.metrics import at_positions

__all__ = ["at_positions", "provenance"]  # at_positions: one home, in tasks.metrics


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
