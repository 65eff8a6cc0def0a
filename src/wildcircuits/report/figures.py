"""Figures: every result is drawn as a PNG (matplotlib) and an interactive HTML (plotly).

Axes are labelled in the model's terms (L12.H3, token strings). Functions take plain arrays and
labels, never a model, so the report can redraw them from saved results alone.

Each `save_*` writes `<stem>.png` and `<stem>.html` and returns both paths. HTML figures in one
folder share a `plotly.min.js` written beside them, so they open offline without a network.
"""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

FigurePaths = tuple[Path, Path]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def provenance_caption(provenance: Mapping[str, Any]) -> str:
    """One line saying how the numbers were obtained."""
    keys = (
        "model",
        "quantization",
        "task",
        "split",
        "metric",
        "corruption",
        "ablation",
        "seed",
        "n",
        "direction",
    )
    parts = [f"{k}={provenance[k]}" for k in keys if provenance.get(k) not in (None, "")]
    return "; ".join(parts)


def _symmetric_limit(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.abs(finite).max()) if finite.size else 1.0


def save_heatmap(
    values: np.ndarray,
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    stem: Path | str,
    title: str,
    row_axis: str,
    col_axis: str,
    provenance: Mapping[str, Any] | None = None,
    colorbar: str = "",
    diverging: bool = True,
) -> FigurePaths:
    """A (rows, cols) heatmap; diverging colours centred on 0 unless `diverging=False`."""
    values = np.asarray(values, dtype=float)
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    caption = provenance_caption(provenance or {})
    limit = _symmetric_limit(values)
    cmap, vmin, vmax = ("RdBu_r", -limit, limit) if diverging else ("viridis", None, None)
    plt = _pyplot()
    height = max(3.0, 0.22 * len(row_labels) + 1.5)
    width = max(4.5, 0.32 * len(col_labels) + 2.5)
    fig, ax = plt.subplots(figsize=(min(width, 22), min(height, 18)))
    image = ax.imshow(values, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto")
    ax.set_xticks(range(len(col_labels)), labels=list(col_labels), rotation=90, fontsize=7)
    ax.set_yticks(range(len(row_labels)), labels=list(row_labels), fontsize=7)
    ax.set_xlabel(col_axis)
    ax.set_ylabel(row_axis)
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label=colorbar)
    if caption:
        fig.text(0.01, 0.005, textwrap.fill(caption, 140), fontsize=6, va="bottom")
    fig.tight_layout(rect=(0, 0.04 if caption else 0, 1, 1))
    png = stem.with_suffix(".png")
    _save_png(fig, png)
    plt.close(fig)
    html = _heatmap_html(
        values,
        row_labels,
        col_labels,
        stem,
        title,
        row_axis,
        col_axis,
        caption,
        colorbar,
        diverging,
        limit,
    )
    return png, html


def _heatmap_html(
    values, rows, cols, stem, title, row_axis, col_axis, caption, colorbar, diverging, limit
) -> Path:
    import plotly.graph_objects as go

    heat = go.Heatmap(
        z=values,
        x=[f"{i}: {c}" for i, c in enumerate(cols)],
        y=[f"{i}: {r}" for i, r in enumerate(rows)],
        colorscale="RdBu_r" if diverging else "Viridis",
        zmid=0 if diverging else None,
        zmin=-limit if diverging else None,
        zmax=limit if diverging else None,
        colorbar={"title": colorbar},
        hovertemplate=f"{row_axis}=%{{y}}<br>{col_axis}=%{{x}}<br>value=%{{z:.4f}}<extra></extra>",
    )
    fig = go.Figure(heat)
    fig.update_layout(
        title=f"{title}<br><sup>{caption}</sup>" if caption else title,
        xaxis_title=col_axis,
        yaxis_title=row_axis,
        yaxis_autorange="reversed",
    )
    return _write_html(fig, stem)


def save_bars(
    values: Sequence[float],
    labels: Sequence[str],
    stem: Path | str,
    title: str,
    value_axis: str,
    provenance: Mapping[str, Any] | None = None,
    errors: Sequence[float] | None = None,
) -> FigurePaths:
    """A bar chart of labelled values (optionally with error bars)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    caption = provenance_caption(provenance or {})
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(5.0, 0.3 * len(labels) + 2), 4))
    ax.bar(range(len(values)), values, yerr=errors, color="#4477aa")
    ax.set_xticks(range(len(labels)), labels=list(labels), rotation=90, fontsize=7)
    ax.set_ylabel(value_axis)
    ax.set_title(title, fontsize=10)
    ax.axhline(0, color="black", linewidth=0.5)
    if caption:
        fig.text(0.01, 0.005, textwrap.fill(caption, 140), fontsize=6, va="bottom")
    fig.tight_layout(rect=(0, 0.05 if caption else 0, 1, 1))
    png = stem.with_suffix(".png")
    _save_png(fig, png)
    plt.close(fig)
    import plotly.graph_objects as go

    bars = go.Bar(
        x=list(labels), y=list(values), error_y=None if errors is None else {"array": list(errors)}
    )
    fig_html = go.Figure(bars)
    fig_html.update_layout(title=f"{title}<br><sup>{caption}</sup>", yaxis_title=value_axis)
    return png, _write_html(fig_html, stem)


def save_lines(
    x: Sequence[float],
    series: Mapping[str, Sequence[float]],
    stem: Path | str,
    title: str,
    x_axis: str,
    y_axis: str,
    provenance: Mapping[str, Any] | None = None,
    log_x: bool = False,
    html: bool = True,
) -> FigurePaths | tuple[Path, None]:
    """Several named curves over one x axis (e.g. faithfulness vs circuit size).

    `html=False` writes the PNG only (run folders embed PNGs; no plotly.js beside them)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    caption = provenance_caption(provenance or {})
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, ys in series.items():
        ax.plot(list(x), list(ys), marker="o", markersize=3, label=name)
    if log_x:
        _log_ticks(ax, [v for v in x if v > 0])
    ax.set_xlabel(x_axis)
    ax.set_ylabel(y_axis)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    if caption:
        fig.text(0.01, 0.005, textwrap.fill(caption, 110), fontsize=6, va="bottom")
    fig.tight_layout(rect=(0, 0.06 if caption else 0, 1, 1))
    png = stem.with_suffix(".png")
    _save_png(fig, png)
    plt.close(fig)
    if not html:
        return png, None
    import plotly.graph_objects as go

    fig_html = go.Figure(
        [
            go.Scatter(x=list(x), y=list(ys), mode="lines+markers", name=n)
            for n, ys in series.items()
        ]
    )
    fig_html.update_layout(
        title=f"{title}<br><sup>{caption}</sup>",
        xaxis_title=x_axis,
        yaxis_title=y_axis,
        xaxis_type="log" if log_x else "linear",
    )
    return png, _write_html(fig_html, stem)


def _log_ticks(ax: Any, xs: Sequence[float]) -> None:
    """Log x axis with one short label per power of ten (no crowded minor-tick labels)."""
    from matplotlib.ticker import NullFormatter

    from wildcircuits.report.svg import x_ticks

    ax.set_xscale("log")
    if xs:
        values, labels = zip(*x_ticks(xs, log_x=True), strict=True)
        ax.set_xticks(values, labels=labels)
    ax.xaxis.set_minor_formatter(NullFormatter())


def save_attention_pattern(
    pattern: np.ndarray,
    tokens: Sequence[str],
    stem: Path | str,
    title: str,
    provenance: Mapping[str, Any] | None = None,
) -> FigurePaths:
    """One head's (pos, kv_pos) attention pattern on one prompt, labelled with its tokens."""
    labels = [repr(t)[1:-1] for t in tokens]
    return save_heatmap(
        pattern,
        labels,
        labels,
        stem,
        title,
        "query token",
        "key token",
        provenance,
        colorbar="attention",
        diverging=False,
    )


def _save_png(fig: Any, png: Path) -> None:
    """Render a matplotlib figure and write it atomically (a killed run leaves no half PNG)."""
    import io

    from wildcircuits.results.io import atomic_write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=130)
    atomic_write_bytes(png, buffer.getvalue())


def _write_html(fig: Any, stem: Path) -> Path:
    """The interactive figure, written under a temporary name and renamed into place."""
    import os

    html = stem.with_suffix(".html")
    partial = html.with_name(f".{html.name}.partial.html")
    fig.write_html(partial, include_plotlyjs="directory", full_html=True)
    os.replace(partial, html)
    return html
