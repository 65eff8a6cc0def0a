"""Write a probe result: DIR/behaviour.json (atomic) and DIR/behaviour.png (matplotlib, Agg)."""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from wildcircuits.tasks.probe import BREAKS, HOLDS, ProbeResult

_COLORS = {"holds": "#2e7d32", "degrades": "#f9a825", "breaks": "#c62828", "undefined": "#9e9e9e"}


def _clean_json(value: Any) -> Any:
    """NaN / inf -> None so the file is strict JSON."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _clean_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean_json(v) for v in value]
    return value


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_probe(result: ProbeResult, out_dir: str | Path) -> tuple[Path, Path]:
    """behaviour.json and behaviour.png in `out_dir`; both written via temp file + rename."""
    out = Path(out_dir)
    data = _clean_json(result.to_dict())
    json_path, png_path = out / "behaviour.json", out / "behaviour.png"
    _atomic_write(json_path, lambda p: p.write_text(json.dumps(data, indent=2) + "\n"))
    _atomic_write(png_path, lambda p: plot_behaviour(data, p))
    return json_path, png_path


def _rows(data: dict[str, Any]) -> list[tuple[str, float | None, float, str]]:
    """(label, normalized score, accuracy, verdict) for the baseline, corruptions, variations."""
    rows = [("clean", data["clean"]["normalized"], data["clean"]["accuracy"], "holds")]
    for name, stats in data["corrupted"].items():
        rows.append((f"corrupt: {name}", stats["normalized"], stats["accuracy"], "undefined"))
    for v in data["variations"]:
        rows.append((v["name"], v["normalized"], v["accuracy"], v["verdict"]))
    return rows


def plot_behaviour(data: dict[str, Any], path: Path) -> None:
    """Two panels: normalized metric (clean=1, default corruption=0) and accuracy per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows(data)
    labels = [r[0] for r in rows]
    height = max(3.0, 0.32 * len(rows) + 1.5)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, height), sharey=True)
    y = list(range(len(rows)))[::-1]
    colors = [_COLORS.get(r[3], "#9e9e9e") for r in rows]
    left.barh(y, [0.0 if r[1] is None else r[1] for r in rows], color=colors)
    for threshold in (BREAKS, HOLDS):
        left.axvline(threshold, color="black", linestyle="--", linewidth=0.8)
    left.axvline(0, color="gray", linewidth=0.6)
    left.set_yticks(y, labels, fontsize=8)
    left.set_xlabel(f"normalized {data['metric']} (clean = 1, {data['default_corruption']} = 0)")
    right.barh(y, [0.0 if r[2] is None else r[2] for r in rows], color=colors)
    right.set_xlim(0, 1)
    right.set_xlabel("accuracy")
    model = data["provenance"].get("model_id")
    fig.suptitle(
        f"{data['task']} on {model} (n={data['n']}, seed={data['provenance']['seed']}); "
        f"holds >= {HOLDS}, breaks < {BREAKS}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
