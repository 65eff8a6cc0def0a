"""Write a probe result: DIR/behaviour.json (atomic) and DIR/behaviour.png (matplotlib, Agg)."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

from wildcircuits.results.behaviour import BREAKS, HOLDS, ProbeResult

_COLORS = {"holds": "#2e7d32", "degrades": "#f9a825", "breaks": "#c62828", "undefined": "#9e9e9e"}


def write_probe(result: ProbeResult, out_dir: str | Path) -> tuple[Path, Path]:
    """behaviour.json and behaviour.png in `out_dir`; both written via temp file + rename."""
    out = Path(out_dir)
    json_path, png_path = out / "behaviour.json", out / "behaviour.png"
    result.save(json_path)
    fd, tmp = tempfile.mkstemp(dir=out, prefix=".behaviour.png.", suffix=".png")
    os.close(fd)
    try:
        plot_behaviour(result, Path(tmp))
        os.replace(tmp, png_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return json_path, png_path


def _rows(result: ProbeResult) -> list[tuple[str, float | None, float, str]]:
    """(label, normalized score, accuracy, verdict) for the baseline, corruptions, variations."""
    rows = [("clean", result.clean.normalized, result.clean.accuracy, "holds")]
    for name, stats in result.corrupted.items():
        rows.append((f"corrupt: {name}", stats.normalized, stats.accuracy, "undefined"))
    for v in result.variations:
        rows.append((v.name, v.normalized, v.accuracy, v.verdict.value))
    return rows


def _bar(value: float | None) -> float:
    """A bar length: undefined (None / NaN) draws as 0."""
    return 0.0 if value is None or not math.isfinite(value) else value


def plot_behaviour(result: ProbeResult, path: Path) -> None:
    """Two panels: normalized metric (clean=1, default corruption=0) and accuracy per row."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = _rows(result)
    labels = [r[0] for r in rows]
    height = max(3.0, 0.32 * len(rows) + 1.5)
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, height), sharey=True)
    y = list(range(len(rows)))[::-1]
    colors = [_COLORS.get(r[3], "#9e9e9e") for r in rows]
    left.barh(y, [_bar(r[1]) for r in rows], color=colors)
    for threshold in (BREAKS, HOLDS):
        left.axvline(threshold, color="black", linestyle="--", linewidth=0.8)
    left.axvline(0, color="gray", linewidth=0.6)
    left.set_yticks(y, labels, fontsize=8)
    left.set_xlabel(f"normalized {result.metric} (clean = 1, {result.default_corruption} = 0)")
    right.barh(y, [_bar(r[2]) for r in rows], color=colors)
    right.set_xlim(0, 1)
    right.set_xlabel("accuracy")
    model = result.provenance.get("model_id")
    fig.suptitle(
        f"{result.task} on {model} (n={result.n}, seed={result.provenance['seed']}); "
        f"holds >= {HOLDS}, breaks < {BREAKS}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110, format="png")
    plt.close(fig)
