"""Saving results: atomic writes and JSON that carries provenance.

Every saved number says how it was obtained (metric, ablation / patching direction, split, seed,
model and quantization); `save_json` refuses a result without a `provenance` mapping.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from wildcircuits.errors import WildcircuitsError

REQUIRED_PROVENANCE = ("model", "quantization", "metric")


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write `data` to `path` through a temp file in the same folder and a rename; the file gets
    the mode a plain `open` would give it (0666 less the user's umask), not mkstemp's 0600."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _plain(value: Any) -> Any:
    """Tensors / arrays / numpy scalars -> lists and floats; NaN and inf -> None."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def save_json(
    path: Path | str,
    data: Mapping[str, Any],
    require_provenance: bool = True,
    required: Sequence[str] = REQUIRED_PROVENANCE,
) -> Path:
    """Atomically write a result as JSON; it must carry a provenance mapping with the keys
    `required` (none checked when `required` is empty or `require_provenance` is False)."""
    if require_provenance and required:
        provenance = data.get("provenance")
        missing = [k for k in required if not (provenance or {}).get(k)]
        if provenance is None or missing:
            raise WildcircuitsError(
                f"result for {path} lacks provenance {missing or list(required)}: "
                "every saved number must say how it was obtained"
            )
    text = json.dumps(_plain(dict(data)), indent=2, sort_keys=False)
    return atomic_write_bytes(path, (text + "\n").encode())


def load_json(path: Path | str) -> dict[str, Any]:
    """Read a JSON result; a missing or corrupt file is a clear error."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise WildcircuitsError(f"result file {path} does not exist") from None
    except json.JSONDecodeError as error:
        raise WildcircuitsError(f"result file {path} is not valid JSON ({error})") from None
