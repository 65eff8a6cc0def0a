"""The circuit catalogue: one `discover` cell per (task, model), verified by stated criteria.

    import wildcircuits as wc
    result = wc.catalogue("ioi,greater_than", "smollm2-135m-instruct,gemma3-270m", "cat/")
    result.counts()  # {"verified": ..., "not verified": ..., ...}

- `plan`: names checked before any cell runs, safe cell folder names, DIR/plan.json;
- `cells`: run one cell (the worker side) and read its state back from its folder;
- `criteria`: the verified criteria (`VerifiedCriteria`) applied to a cell's files;
- `executors`: the embedded local executor and the Ray one (optional extra);
- `run`: the driver (`catalogue`, `rebuild`), progress, catalogue.json and index.html.
Names resolve lazily: importing this package loads neither torch nor Ray.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "catalogue": "wildcircuits.catalogue.run",
    "rebuild": "wildcircuits.catalogue.run",
    "VerifiedCriteria": "wildcircuits.results.catalogue",
    "Catalogue": "wildcircuits.results.catalogue",
    "CellState": "wildcircuits.results.catalogue",
    "failed_criteria": "wildcircuits.catalogue.criteria",
    "make_plan": "wildcircuits.catalogue.plan",
    "cell_folder_name": "wildcircuits.catalogue.plan",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'wildcircuits.catalogue' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
