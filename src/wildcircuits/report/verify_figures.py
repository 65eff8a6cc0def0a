"""The verification figures: the completeness scatter and the causal-scrubbing bars.

`completeness_svg(points, worst)` is the IOI paper's completeness figure (Wang et al. 2023):
x = F(M \\ K), y = F(C \\ K), one marker per knocked-out set K, coloured and shaped by its kind
(empty, class, random, greedy), with the y = x line on which a complete circuit keeps every
point. `scrub_bars_svg(scrubbing)` draws one horizontal bar per scrubbed claim (loss recovered,
its interval as a whisker, references at 0 and 1). `estimate_text` is the one formatter of an
`Estimate` ("0.83 [0.71, 0.92]"), used by these figures and by the section's tables.

Plain SVG with inline attributes and `<title>` tooltips (no script, no stylesheet, no URL);
every string passes through `esc`, every number through `fmt`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from wildcircuits.report.sections import missing
from wildcircuits.report.svg import esc, fmt
from wildcircuits.results.verify import Estimate, KnockoutPoint, Scrubbing, ScrubClaim

#: knocked-out-set kind -> (colour, marker, legend text); another kind is drawn as a green square.
KIND_STYLE = {
    "empty": ("#1d2430", "diamond", "K = {} (nothing knocked out)"),
    "class": ("#2166ac", "circle", "K = one class"),
    "random": ("#8a949f", "dot", "K = a random subset"),
    "greedy": ("#b2182b", "triangle", "K = the greedy worst set"),
}
OTHER_KIND = ("#59a14f", "square")
SCRUB_COLOR = {"whole": "#3b6ea5", "class": "#7a9cc6", "path": "#9cb7d8"}
CHAR_W = 6.2  # px per character of 10 px sans-serif
MAX_LABEL = 46
MAX_NAMED = 12  # members of K named in a tooltip


def estimate_text(estimate: Estimate | None, digits: int = 2) -> str:
    """`0.83 [0.71, 0.92]`: the value and its interval (`n/a` for None or NaN)."""
    if estimate is None:
        return "n/a"
    text = fmt(estimate.value, digits)
    interval = estimate.interval
    if interval is None:
        return text
    return f"{text} [{fmt(interval.low, digits)}, {fmt(interval.high, digits)}]"


def _short(text: str, most: int = MAX_LABEL) -> str:
    return text if len(text) <= most else text[: most - 1] + "\u2026"


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _ends(estimate: Estimate) -> list[float]:
    """The value and, where finite, its interval's ends (for an axis range)."""
    out = [estimate.value]
    if estimate.interval is not None:
        out += [estimate.interval.low, estimate.interval.high]
    return [v for v in out if _finite(v)]


def _span(values: Sequence[float], always: Sequence[float] = ()) -> tuple[float, float]:
    """An axis range holding `values` and `always`, padded by 5% on each side."""
    lo, hi = min([*values, *always]), max([*values, *always])
    hi = hi if hi > lo else lo + 1.0
    pad = 0.05 * (hi - lo)
    return lo - pad, hi + pad


# the completeness scatter ---------------------------------------------------------------------
def _marker(shape: str, x: float, y: float, color: str) -> str:
    if shape == "circle":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{color}" fill-opacity="0.85"/>'
    if shape == "dot":
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{color}" fill-opacity="0.7"/>'
    if shape == "diamond":
        d = f"M{x:.1f},{y - 6:.1f} L{x + 6:.1f},{y:.1f} L{x:.1f},{y + 6:.1f} L{x - 6:.1f},{y:.1f} Z"
        return f'<path d="{d}" fill="{color}"/>'
    if shape == "triangle":
        d = f"M{x:.1f},{y - 6:.1f} L{x + 6:.1f},{y + 5:.1f} L{x - 6:.1f},{y + 5:.1f} Z"
        return f'<path d="{d}" fill="{color}"/>'
    return f'<rect x="{x - 4.5:.1f}" y="{y - 4.5:.1f}" width="9" height="9" fill="{color}"/>'


def _style(kind: str) -> tuple[str, str]:
    color, shape, _ = KIND_STYLE.get(kind, (*OTHER_KIND, kind))
    return color, shape


def _point_tip(point: KnockoutPoint) -> str:
    names = [p.name for p in point.knocked_out]
    shown = ", ".join(names[:MAX_NAMED]) + (
        f", {len(names) - MAX_NAMED} more" if names[MAX_NAMED:] else ""
    )
    return (
        f"{point.label} ({point.kind}): K = {{{shown}}}\n"
        f"F(C \\ K) = {estimate_text(point.f_circuit)}\n"
        f"F(M \\ K) = {estimate_text(point.f_model)}\n"
        f"completeness |F(C \\ K) - F(M \\ K)| = {estimate_text(point.completeness)}"
    )


def _whiskers(point: KnockoutPoint, px: Callable, py: Callable, color: str) -> str:
    """Interval lines: F(M \\ K)'s horizontally, F(C \\ K)'s vertically."""
    out = []
    x, y = px(point.f_model.value), py(point.f_circuit.value)
    model, circuit = point.f_model.interval, point.f_circuit.interval
    if model is not None and _finite(model.low) and _finite(model.high):
        out.append(
            f'<line x1="{px(model.low):.1f}" x2="{px(model.high):.1f}" y1="{y:.1f}" '
            f'y2="{y:.1f}" stroke="{color}" stroke-opacity="0.45"/>'
        )
    if circuit is not None and _finite(circuit.low) and _finite(circuit.high):
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{py(circuit.low):.1f}" '
            f'y2="{py(circuit.high):.1f}" stroke="{color}" stroke-opacity="0.45"/>'
        )
    return "".join(out)


def nice_ticks(lo: float, hi: float, most: int = 6) -> list[float]:
    """Round tick values inside [lo, hi]: the finest step of 1, 2, 2.5 or 5 times a power of
    ten that gives at most `most` ticks (labels read 0.5, 1, 1.5 rather than 0.74, 1.40)."""
    power = 10.0 ** math.floor(math.log10((hi - lo) / most))
    while True:  # ends: the step grows tenfold per round
        for k in (1, 2, 2.5, 5):
            step = k * power
            first, last = math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9)
            if last - first + 1 <= most:
                return [round(n * step, 12) + 0.0 for n in range(first, last + 1)]  # no "-0"
        power *= 10


def _scatter_axes(lo: float, hi: float, px: Callable, py: Callable, box: tuple) -> list[str]:
    left, top, size = box
    out = [f'<rect x="{left}" y="{top}" width="{size}" height="{size}" class="frame"/>']
    for v in nice_ticks(lo, hi):
        out.append(
            f'<line x1="{px(v):.1f}" x2="{px(v):.1f}" y1="{top}" y2="{top + size}" class="grid"/>'
            f'<line x1="{left}" x2="{left + size}" y1="{py(v):.1f}" y2="{py(v):.1f}" class="grid"/>'
            f'<text x="{px(v):.1f}" y="{top + size + 14}" text-anchor="middle">{v:g}</text>'
            f'<text x="{left - 4}" y="{py(v) + 4:.1f}" text-anchor="end">{v:g}</text>'
        )
    out.append(
        f'<line x1="{px(lo):.1f}" y1="{py(lo):.1f}" x2="{px(hi):.1f}" y2="{py(hi):.1f}" '
        f'class="ref ko-diagonal"/><text x="{px(hi) - 4:.1f}" y="{py(hi) + 14:.1f}" '
        'text-anchor="end" class="axis">y = x (complete)</text>'
    )
    return out


def completeness_svg(points: Sequence[KnockoutPoint], worst: KnockoutPoint | None = None) -> str:
    """The IOI paper's completeness figure: x = F(M \\ K), y = F(C \\ K), one marker per point
    (`<g class="ko-point" data-kind=...>`, its `<title>` naming K), the y = x line; the worst
    point ringed. A point without a finite value is left out and the caption says so."""
    drawn = [p for p in points if _finite(p.f_model.value) and _finite(p.f_circuit.value)]
    if not drawn:
        return missing("No completeness point to draw.")
    lo, hi = _span([v for p in drawn for e in (p.f_model, p.f_circuit) for v in _ends(e)])
    left, top, size, legend_w = 60, 14, 360, 210
    width, height = left + size + legend_w, top + size + 46

    def px(v: float) -> float:
        return left + (v - lo) / (hi - lo) * size

    def py(v: float) -> float:
        return top + (hi - v) / (hi - lo) * size

    out = [
        f'<svg class="chart" id="completeness-scatter" role="img" viewBox="0 0 {width} '
        f'{height}" width="{width}" height="{height}">'
    ]
    out += _scatter_axes(lo, hi, px, py, (left, top, size))
    for point in drawn:
        color, shape = _style(point.kind)
        x, y = px(point.f_model.value), py(point.f_circuit.value)
        ring = ""
        if point == worst:
            ring = f'<circle cx="{x:.1f}" cy="{y:.1f}" r="9" fill="none" stroke="{color}"/>'
        out.append(
            f'<g class="ko-point" data-kind="{esc(point.kind)}" data-label="{esc(point.label)}">'
            f"<title>{esc(_point_tip(point))}</title>{_whiskers(point, px, py, color)}"
            f"{_marker(shape, x, y, color)}{ring}</g>"
        )
    out += _scatter_legend(sorted({p.kind for p in drawn}, key=_kind_order), left + size + 16)
    out.append(
        f'<text x="{left + size / 2:.0f}" y="{height - 8}" text-anchor="middle" class="axis">'
        "F(M \\ K): the model with K knocked out</text>"
        f'<text transform="translate(14,{top + size / 2:.0f}) rotate(-90)" text-anchor="middle" '
        'class="axis">F(C \\ K): the circuit with K knocked out</text></svg>'
    )
    left_out = len(points) - len(drawn)
    note = missing(f"{left_out} points have no finite value and are not drawn.") if left_out else ""
    return "".join(out) + note


def _kind_order(kind: str) -> tuple[int, str]:
    order = list(KIND_STYLE)
    return (order.index(kind) if kind in order else len(order), kind)


def _scatter_legend(kinds: Sequence[str], x: float) -> list[str]:
    out = []
    for k, kind in enumerate(kinds):
        color, shape = _style(kind)
        text = KIND_STYLE[kind][2] if kind in KIND_STYLE else kind
        y = 24 + 18 * k
        out.append(_marker(shape, x + 6, y - 4, color))
        out.append(f'<text x="{x + 18:.0f}" y="{y}">{esc(text)}</text>')
    out.append(f'<text x="{x + 18:.0f}" y="{24 + 18 * len(kinds)}">ringed: the worst K</text>')
    return out


# the scrubbing bars ---------------------------------------------------------------------------
def _unscrubbable(claim: ScrubClaim, x: float, y: float) -> str:
    """The row's text in place of a bar: `not scrubbable: <why>`."""
    why = claim.note.removeprefix("not scrubbable").lstrip(": ")
    text = f"not scrubbable: {why}" if why else "not scrubbable"
    return (
        f'<text x="{x:.1f}" y="{y + 4:.1f}" class="axis scrub-none" font-style="italic">'
        f"{esc(_short(text, 80))}</text>"
    )


def _bar(estimate: Estimate, kind: str, y: float, px: Callable) -> str:
    """The bar from 0 to the value and, where there is one, the interval's whisker."""
    x0, x1 = sorted((px(0.0), px(estimate.value)))
    color = SCRUB_COLOR.get(kind, SCRUB_COLOR["path"])
    out = (
        f'<rect class="bar" x="{x0:.1f}" y="{y - 6:.1f}" width="{max(x1 - x0, 1):.1f}" '
        f'height="12" fill="{color}"/>'
    )
    interval = estimate.interval
    if interval is not None and _finite(interval.low) and _finite(interval.high):
        a, b = px(interval.low), px(interval.high)
        out += (
            f'<path class="whisker" d="M{a:.1f},{y:.1f} H{b:.1f} M{a:.1f},{y - 4:.1f} '
            f'V{y + 4:.1f} M{b:.1f},{y - 4:.1f} V{y + 4:.1f}" stroke="#1d2430" fill="none"/>'
        )
    return out


def _scrub_row(claim: ScrubClaim, y: float, px: Callable, x_label: float, x_value: float) -> str:
    """One claim's row: its label, its bar and whisker, its number (or why it has none)."""
    estimate = claim.loss_recovered
    scrubbable = estimate is not None and _finite(estimate.value)
    tip = f"{claim.claim} ({claim.kind}): loss recovered {estimate_text(estimate)}; "
    tip += f"{claim.n_rows} prompts with a valid resample" + (
        f"; {claim.note}" if claim.note else ""
    )
    head = (
        f'<g class="scrub-bar" data-claim="{esc(claim.claim)}" data-kind="{esc(claim.kind)}" '
        f'data-scrubbable="{str(scrubbable).lower()}"><title>{esc(tip)}</title>'
        f'<text x="{x_label:.0f}" y="{y + 4:.1f}" text-anchor="end">{esc(_short(claim.claim))}'
        "</text>"
    )
    if not scrubbable:
        return head + _unscrubbable(claim, px(0.0) + 4, y) + "</g>"
    text = f"{estimate_text(estimate)} (n = {claim.n_rows})"
    value = f'<text x="{x_value:.0f}" y="{y + 4:.1f}">{esc(text)}</text>'
    return head + _bar(estimate, claim.kind, y, px) + value + "</g>"


def scrub_bars_svg(scrubbing: Scrubbing) -> str:
    """One horizontal bar per scrubbed claim (`<g class="scrub-bar">`): loss recovered with its
    interval as a whisker, reference lines at 0 (fully resampled) and 1 (the model); a claim
    that could not be scrubbed gets its row with the reason instead of a bar."""
    claims = scrubbing.claims
    if not claims:
        return missing("No claim was scrubbed.")
    values = [v for c in claims if c.loss_recovered is not None for v in _ends(c.loss_recovered)]
    lo, hi = _span(values, always=(0.0, 1.0))
    label_w = 14 + CHAR_W * max(len(_short(c.claim)) for c in claims)
    plot_w, row_h, top = 360, 24, 24
    width, height = label_w + plot_w + 170, top + row_h * len(claims) + 34

    def px(v: float) -> float:
        return label_w + (v - lo) / (hi - lo) * plot_w

    out = [
        f'<svg class="chart" id="scrub-bars" role="img" viewBox="0 0 {width:.0f} {height}" '
        f'width="{width:.0f}" height="{height}">',
        f'<rect x="{label_w:.0f}" y="{top - 12}" width="{plot_w}" '
        f'height="{row_h * len(claims)}" class="frame"/>',
    ]
    bottom = top - 12 + row_h * len(claims)
    for value, label in ((0.0, "0: fully resampled"), (1.0, "1: the model")):
        x = px(value)
        out.append(
            f'<line x1="{x:.1f}" x2="{x:.1f}" y1="{top - 12}" y2="{bottom}" '
            f'class="ref"/><text x="{x:.1f}" y="{top - 15}" text-anchor="middle" class="axis">'
            f"{esc(label)}</text>"
        )
    for k, claim in enumerate(claims):
        out.append(_scrub_row(claim, top + row_h * k, px, label_w - 6, label_w + plot_w + 8))
    out.append(
        f'<text x="{label_w + plot_w / 2:.0f}" y="{height - 6}" text-anchor="middle" '
        'class="axis">loss recovered (1 = the model, 0 = everything resampled)</text></svg>'
    )
    return "".join(out)


__all__ = ["completeness_svg", "estimate_text", "nice_ticks", "scrub_bars_svg"]
