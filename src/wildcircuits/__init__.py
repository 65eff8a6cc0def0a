"""wildcircuits: find, test and verify circuits inside real pretrained language models.

The public API is re-exported here. Names are resolved lazily so that `wildcircuits --help`
and other light commands do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "WildcircuitsError": "wildcircuits.errors",
    "InstrumentedModel": "wildcircuits.models",
    "ModelInfo": "wildcircuits.models",
    "RunResult": "wildcircuits.models",
    "Tokens": "wildcircuits.models",
    "load_model": "wildcircuits.models",
    "wrap_hf_model": "wildcircuits.models",
    "Intervention": "wildcircuits.patching.hooks",
    "Mode": "wildcircuits.patching.hooks",
    "replace": "wildcircuits.patching.hooks",
    "Component": "wildcircuits.patching.sites",
    "Site": "wildcircuits.patching.sites",
    "format_site": "wildcircuits.patching.sites",
    "parse_site": "wildcircuits.patching.sites",
    "verify_model": "wildcircuits.models.verify",
}

__all__ = sorted([*_EXPORTS, "__version__"])


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'wildcircuits' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # pragma: no cover
    from wildcircuits.errors import WildcircuitsError as WildcircuitsError
    from wildcircuits.models import InstrumentedModel as InstrumentedModel
    from wildcircuits.models import ModelInfo as ModelInfo
    from wildcircuits.models import RunResult as RunResult
    from wildcircuits.models import Tokens as Tokens
    from wildcircuits.models import load_model as load_model
    from wildcircuits.models import wrap_hf_model as wrap_hf_model
    from wildcircuits.models.verify import verify_model as verify_model
    from wildcircuits.patching.hooks import Intervention as Intervention
    from wildcircuits.patching.hooks import Mode as Mode
    from wildcircuits.patching.hooks import replace as replace
    from wildcircuits.patching.sites import Component as Component
    from wildcircuits.patching.sites import Site as Site
    from wildcircuits.patching.sites import format_site as format_site
    from wildcircuits.patching.sites import parse_site as parse_site
