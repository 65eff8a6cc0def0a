"""The circuit catalogue: one `discover` cell per (task, model), verified by stated criteria.

    import wildcircuits as wc
    result = wc.catalogue("ioi,greater_than", "smollm2-135m-instruct,gemma3-270m", "cat/")
    result.counts()  # {"verified": ..., "not verified": ..., ...}

- `plan`: names checked before any cell runs, safe cell folder names, DIR/plan.json;
- `cells`: run one cell (the worker side) and read its state back from its folder;
- `criteria`: the verified criteria (`VerifiedCriteria`) applied to a cell's files;
- `executors`: the embedded local executor and the Ray one (optional extra);
- `run`: the driver (`catalogue`, `rebuild`), progress, catalogue.json and index.html;
- `compare` (`compare_models`, `compare_tasks`): universality across models and reuse across
  tasks, the index's universality.html and reuse.html (`write_compare_pages`).
Names resolve lazily: importing this package loads neither torch nor Ray.

`wc.catalogue` is this package (importing any submodule sets the package attribute, so a
function of the same name could not live beside it); the package is callable and a call is
`run.catalogue(...)`, so `wc.catalogue(tasks, models, out)` and `wc.catalogue.rebuild(out)`
both read as written.
"""

from __future__ import annotations

import importlib
import sys
import types
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


class _CallablePackage(types.ModuleType):
    """This package, callable as `wildcircuits.catalogue.run.catalogue`."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from wildcircuits.catalogue.run import catalogue

        return catalogue(*args, **kwargs)


sys.modules[__name__].__class__ = _CallablePackage
