"""Small inline-SVG charts for the report: labelled heatmaps and line charts.

Drawn in Python from saved numbers, so they need no script, print as vectors and carry a native
tooltip (`<title>`) per cell / point. Every label passes through `esc`.
"""

from __future__ import annotations

import html
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

CELL_W, CELL_H = 22, 15
CHAR_W = 6.2  # px per character of 10 px sans-serif, for margins
MAX_LABEL = 24
LEGEND_H = 100


def esc(value: Any) -> str:
    """Text or attribute value, HTML-escaped (quotes included)."""
    return html.escape(str(value), quote=True)


def fmt(value: Any, digits: int = 3) -> str:
    """A number for people: None / NaN -> "n/a", ints as ints, floats to `digits` decimals."""
    if value is None:
        return "n/a"
    if isinstance(value, bool) or not isinstance(value, int | float):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if not math.isfinite(value):
        return "n/a"
    return f"{value:,.0f}" if abs(value) >= 1e4 else f"{value:.{digits}f}"


def _finite(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return None


def _mix(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> str:
    t = min(max(t, 0.0), 1.0)
    r, g, bl = (round(x + (y - x) * t) for x, y in zip(a, b, strict=True))
    return f"#{r:02x}{g:02x}{bl:02x}"


WHITE, RED, BLUE, INK = (255, 255, 255), (178, 24, 43), (33, 102, 172), (8, 48, 107)


def diverging_color(value: float | None, limit: float) -> str:
    """Red for positive, blue for negative, white at 0 (matplotlib's RdBu_r ends)."""
    if value is None:
        return "#d9d9d9"
    t = abs(value) / limit if limit > 0 else 0.0
    return _mix(WHITE, RED if value >= 0 else BLUE, t)


def sequential_color(value: float | None, top: float) -> str:
    if value is None:
        return "#d9d9d9"
    return _mix(WHITE, INK, value / top if top > 0 else 0.0)


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL else label[: MAX_LABEL - 1] + "\u2026"


def heatmap_svg(
    values: Sequence[Sequence[Any]],
    row_labels: Sequence[str],
    col_labels: Sequence[str],
    row_axis: str,
    col_axis: str,
    value_label: str,
    diverging: bool = True,
) -> str:
    """A (rows, cols) heatmap; each cell's tooltip names its row, column and value."""
    cells = [[_finite(v) for v in row] for row in values]
    finite = [abs(v) if diverging else v for row in cells for v in row if v is not None]
    limit = max(finite, default=0.0) or 1.0
    color = diverging_color if diverging else sequential_color
    cell_w = min(40, max(CELL_W, 360 // max(len(col_labels), 1)))  # small grids drawn larger
    cell_h = min(24, max(CELL_H, 200 // max(len(row_labels), 1)))
    left = 14 + CHAR_W * max((len(_short(str(r))) for r in row_labels), default=2)
    bottom = 22 + CHAR_W * max((len(_short(str(c))) for c in col_labels), default=2)
    width = left + cell_w * len(col_labels) + 90
    height = max(10 + cell_h * len(row_labels) + bottom, LEGEND_H + 10)
    parts = [
        f'<svg class="heatmap" role="img" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}">'
    ]
    for i, (label, row) in enumerate(zip(row_labels, cells, strict=True)):
        y = 10 + i * cell_h
        parts.append(
            f'<text x="{left - 4:.0f}" y="{y + cell_h - 4}" text-anchor="end">'
            f"{esc(_short(str(label)))}</text>"
        )
        for j, value in enumerate(row):
            tip = f"{row_axis} {label}, {col_axis} {col_labels[j]}: {value_label} {fmt(value)}"
            parts.append(
                f'<rect x="{left + j * cell_w:.0f}" y="{y}" width="{cell_w}" height="{cell_h}" '
                f'fill="{color(value, limit)}"><title>{esc(tip)}</title></rect>'
            )
    base = 10 + cell_h * len(row_labels)
    for j, label in enumerate(col_labels):
        x = left + j * cell_w + cell_w / 2 + 3
        parts.append(
            f'<text transform="translate({x:.0f},{base + 6}) rotate(-90)" text-anchor="end">'
            f"{esc(_short(str(label)))}</text>"
        )
    parts.append(_legend(left + cell_w * len(col_labels) + 16, limit, diverging, value_label))
    arrow = f"{esc(col_axis)} \u2192"
    parts.append(f'<text x="{left:.0f}" y="{height - 4:.0f}" class="axis">{arrow}</text></svg>')
    return "".join(parts)


def _legend(x: float, limit: float, diverging: bool, value_label: str) -> str:
    """A vertical colour key: five swatches from the top value to the bottom one."""
    low = -limit if diverging else 0.0
    steps = [limit - (limit - low) * k / 4 for k in range(5)]
    color = diverging_color if diverging else sequential_color
    out = [f'<text x="{x:.0f}" y="18" class="axis">{esc(_short(value_label))}</text>']
    for k, value in enumerate(steps):
        y = 24 + k * 14
        out.append(
            f'<rect x="{x:.0f}" y="{y}" width="12" height="14" fill="{color(value, limit)}"/>'
            f'<text x="{x + 16:.0f}" y="{y + 11}">{esc(fmt(value, 2))}</text>'
        )
    return "".join(out)


@dataclass(frozen=True)
class Series:
    """One curve: points (x, y) with an optional +- band, a colour and a dash pattern."""

    name: str
    xs: Sequence[float]
    ys: Sequence[float | None]
    color: str
    dash: str = ""
    band: Sequence[float | None] | None = None


def line_chart_svg(
    series: Sequence[Series],
    x_label: str,
    y_label: str,
    log_x: bool = True,
    reference_lines: Sequence[tuple[float, str]] = (),
    width: int = 620,
    height: int = 340,
) -> str:
    """Curves over one x axis (log scale by default); every point has a tooltip."""
    left, right, top, bottom = 56, 150, 14, 46
    xs = [x for s in series for x in s.xs if _finite(x) is not None and (x > 0 or not log_x)]
    ys = [y for s in series for y in s.ys if _finite(y) is not None]
    ys += [v for v, _ in reference_lines] + [0.0]
    if not xs:
        return '<p class="missing">No points to draw.</p>'
    tx = (lambda v: math.log10(v)) if log_x else (lambda v: v)
    x0, x1 = tx(min(xs)), tx(max(xs))
    y0, y1 = min(ys), max(ys)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad
    plot_w, plot_h = width - left - right, height - top - bottom

    def px(v: float) -> float:
        return left + (tx(v) - x0) / (x1 - x0) * plot_w

    def py(v: float) -> float:
        return top + (y1 - v) / (y1 - y0) * plot_h

    out = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" '
        f'height="{height}">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/>',
    ]
    out += _axes(sorted(set(xs)), px, py, y0, y1, left, top, plot_w, plot_h, log_x)
    for value, label in reference_lines:
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{py(value):.1f}" y2="{py(value):.1f}" '
            f'class="ref"/><text x="{left + plot_w - 4}" y="{py(value) - 3:.1f}" '
            f'text-anchor="end" class="axis">{esc(label)}</text>'
        )
    for k, s in enumerate(series):
        out += _curve(s, px, py, log_x)
        y = top + 10 + 16 * k
        out.append(
            f'<line x1="{width - right + 12}" x2="{width - right + 36}" y1="{y}" y2="{y}" '
            f'stroke="{s.color}" stroke-width="2.5" stroke-dasharray="{s.dash}"/>'
            f'<text x="{width - right + 40}" y="{y + 4}">{esc(_short(s.name))}</text>'
        )
    out.append(
        f'<text x="{left + plot_w / 2:.0f}" y="{height - 6}" text-anchor="middle" class="axis">'
        f"{esc(x_label)}</text>"
        f'<text transform="translate(14,{top + plot_h / 2:.0f}) rotate(-90)" '
        f'text-anchor="middle" class="axis">{esc(y_label)}</text></svg>'
    )
    return "".join(out)


def x_ticks(xs: Sequence[float], log_x: bool, most: int = 8) -> list[tuple[float, str]]:
    """(value, label) of the x-axis ticks: on a log axis the powers of ten within the data
    (labelled 0.0001 ... 1; the data's end points when it spans less than a decade), else at
    most `most` evenly spread data values; labels are short (`:g`), so they cannot overlap."""
    lo, hi = min(xs), max(xs)
    if log_x:
        decades = range(math.ceil(math.log10(lo) - 1e-9), math.floor(math.log10(hi) + 1e-9) + 1)
        values = [10.0**e for e in decades] or [lo, hi]
    else:
        values = list(xs) if len(xs) <= most else list(xs[:: math.ceil(len(xs) / most)])
    return [(v, f"{v:.3g}") for v in values]


def _axes(xs, px, py, y0, y1, left, top, plot_w, plot_h, log_x) -> list[str]:
    out = []
    for x, label in x_ticks(xs, log_x):
        out.append(
            f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{top}" y2="{top + plot_h}" '
            f'class="grid"/><text x="{px(x):.1f}" y="{top + plot_h + 14}" '
            f'text-anchor="middle">{esc(label)}</text>'
        )
    for k in range(5):
        v = y0 + (y1 - y0) * k / 4
        out.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{py(v):.1f}" y2="{py(v):.1f}" '
            f'class="grid"/><text x="{left - 4}" y="{py(v) + 4:.1f}" text-anchor="end">'
            f"{esc(fmt(v, 2))}</text>"
        )
    return out


def _curve(s: Series, px, py, log_x: bool) -> list[str]:
    points = [
        (x, y, None if s.band is None else _finite(s.band[i]))
        for i, (x, y) in enumerate(zip(s.xs, s.ys, strict=True))
        if _finite(x) is not None and _finite(y) is not None and (x > 0 or not log_x)
    ]
    if not points:
        return []
    out = []
    if all(b is not None for _, _, b in points) and s.band is not None:
        upper = [f"{px(x):.1f},{py(y + b):.1f}" for x, y, b in points]
        lower = [f"{px(x):.1f},{py(y - b):.1f}" for x, y, b in reversed(points)]
        out.append(f'<polygon points="{" ".join(upper + lower)}" fill="{s.color}" opacity="0.15"/>')
    path = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y, _ in points)
    out.append(
        f'<polyline points="{path}" fill="none" stroke="{s.color}" stroke-width="2" '
        f'stroke-dasharray="{s.dash}"/>'
    )
    for x, y, b in points:
        spread = "" if b is None else f" \u00b1 {fmt(b)}"
        tip = f"{s.name}: size {x:g}, faithfulness {fmt(y)}{spread}"
        out.append(
            f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3.5" fill="{s.color}">'
            f"<title>{esc(tip)}</title></circle>"
        )
    return out
