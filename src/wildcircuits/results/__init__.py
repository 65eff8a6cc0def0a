"""The run folder's results as frozen types, and saving them (atomic JSON with provenance).

- `io`: `atomic_write_bytes`, `save_json` (refuses a result without provenance), `load_json`.
- `base`: `Result` (to_json / from_json / save / load, a schema version) and `RESULT_KINDS`,
  the registry of result types by file name (docs/run_folder.md is checked against it).
- one module per group of files: `behaviour` (behaviour.json, examples.json), `localise`,
  `metrics`, `circuits` (circuit.json, circuit_sizes.json), `verdicts` (redteam.json,
  roles.json), `manifest`.

Nothing here imports torch: the report reads a run folder without loading a model.
"""

from __future__ import annotations

from wildcircuits.results import kinds as _kinds  # noqa: E402,F401  (fills RESULT_KINDS)
from wildcircuits.results.base import RESULT_KINDS, Result, load_result, register
from wildcircuits.results.codec import ResultFileError
from wildcircuits.results.io import REQUIRED_PROVENANCE, atomic_write_bytes, load_json, save_json

__all__ = [
    "REQUIRED_PROVENANCE",
    "RESULT_KINDS",
    "Result",
    "ResultFileError",
    "atomic_write_bytes",
    "load_json",
    "load_result",
    "register",
    "save_json",
]
