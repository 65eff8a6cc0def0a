"""The class diagram: functional classes as boxes (layers top to bottom), measured paths as arrows.

`class_diagram_svg(explanation)` draws one `<g class="class-box">` per class (its name, IOI-paper
class, layers and members at positions), a `logits` box at the bottom, and one
`<path class="class-arrow">` per measured `ClassPath` (width: |effect|; blue: the path supports
the metric, red: it opposes it; solid q / in / logits, dashed k, dotted v; faint and unlabelled
below `ARROW_THRESHOLD`). Plain SVG with inline attributes and `<title>` tooltips: no script, no
stylesheet, so it also shows in a notebook; every string passes through `esc`.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

from wildcircuits.explanation.algorithm import ARROW_THRESHOLD
from wildcircuits.names import parse_display_node
from wildcircuits.report.svg import esc, fmt
from wildcircuits.results.explain import ClassPath, Explanation, HeadClass

BOX_W, LINE_H, HEAD_H, ROW_GAP, COL_GAP, LEFT, LANE_GAP = 210, 13, 34, 70, 36, 56, 9
CHAR_W = 6.0  # px per character of the 10 px member lines
DASH = {"k": "6 4", "v": "2 3"}
SLOT_OFFSET = {"q": -0.3, "k": 0.0, "v": 0.3}
POSITIVE, NEGATIVE, WEAK = "#2166ac", "#b2182b", "#9aa3ad"
FILL = {None: "#f4f1e8"}  # descriptive classes; IOI-paper classes get a light blue
PAPER_FILL = "#e8f0f8"


@dataclass(frozen=True)
class Box:
    """A class's box: top-left corner, size, and the rows it spans."""

    name: str
    x: float
    y: float
    height: float
    row: int

    @property
    def centre(self) -> float:
        return self.x + BOX_W / 2


def _depth(c: HeadClass) -> float:
    return statistics.median(parse_display_node(p.node).layer for p in c.members)


def _depth_label(depth: float) -> str:
    """A row's label: its median layer (`L12`, or `L12.5` between two layers)."""
    return f"L{int(depth)}" if depth == int(depth) else f"L{depth:.1f}"


def _layers(c: HeadClass) -> str:
    layers = sorted({parse_display_node(p.node).layer for p in c.members})
    return f"L{layers[0]}" if len(layers) == 1 else f"L{layers[0]}\u2013L{layers[-1]}"


def _member_lines(c: HeadClass) -> list[str]:
    """The members (`L3.H2@END`), packed into lines that fit the box."""
    lines: list[str] = []
    for name in (p.name for p in c.members):
        if lines and (len(lines[-1]) + 2 + len(name)) * CHAR_W <= BOX_W - 16:
            lines[-1] += ", " + name
        else:
            lines.append(name)
    return lines


def _layout(classes: Sequence[HeadClass]) -> tuple[dict[str, Box], float, float, list[float]]:
    """Boxes in rows by median layer (equal medians side by side); the logits row last.
    Returns boxes by class name (and `logits`), width, height and each row's depth."""
    depths = sorted({_depth(c) for c in classes})
    rows = [[c for c in classes if _depth(c) == d] for d in depths]
    width = LEFT + max([len(r) for r in rows] + [1]) * (BOX_W + COL_GAP) + 20
    boxes: dict[str, Box] = {}
    y = 16.0
    for k, row in enumerate(rows):
        heights = [HEAD_H + LINE_H * len(_member_lines(c)) + 6 for c in row]
        span = len(row) * BOX_W + (len(row) - 1) * COL_GAP
        x = LEFT + (width - LEFT - span) / 2
        for c, h in zip(row, heights, strict=True):
            boxes[c.name] = Box(c.name, x, y, h, k)
            x += BOX_W + COL_GAP
        y += max(heights) + ROW_GAP
    boxes["logits"] = Box("logits", LEFT + (width - LEFT - BOX_W) / 2, y, 28, len(rows))
    return boxes, width, y + 28 + 14, depths


def _box_svg(c: HeadClass, box: Box) -> str:
    title = f"{c.name}: {c.sentence}"
    fill = PAPER_FILL if c.paper_class else FILL[None]
    kind = c.paper_class or "descriptive"
    lines = "".join(
        f'<text x="{box.x + 8:.0f}" y="{box.y + HEAD_H + 10 + LINE_H * i:.0f}" '
        f'font-size="10" fill="#333">{esc(line)}</text>'
        for i, line in enumerate(_member_lines(c))
    )
    return (
        f'<g class="class-box" data-class="{esc(c.name)}"><title>{esc(title)}</title>'
        f'<rect x="{box.x:.0f}" y="{box.y:.0f}" width="{BOX_W}" height="{box.height:.0f}" '
        f'rx="6" fill="{fill}" stroke="#39424e" stroke-width="1"/>'
        f'<text x="{box.x + 8:.0f}" y="{box.y + 15:.0f}" font-size="12" font-weight="600" '
        f'fill="#111">{esc(_short(c.name, 30))}</text>'
        f'<text x="{box.x + 8:.0f}" y="{box.y + 28:.0f}" font-size="10" fill="#5b6573">'
        f"{esc(_short(kind, 22))} \u00b7 {esc(_layers(c))}</text>{lines}</g>"
    )


def _short(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "\u2026"


Points = tuple[tuple[float, float], ...]


def _route(p: ClassPath, boxes: dict[str, Box], k: int, lane: float | None) -> Points:
    """The four control points of one arrow. Into the next row: from the sender's bottom (k
    spreads arrows leaving one box) to the receiver's top (q left, k middle, v right). Past a
    row: out of the sender's right side, down the lane at x = `lane`, into the receiver's right
    side, so it never crosses a box. Within a row: side to side."""
    s, r = boxes[p.sender], boxes[p.receiver]
    if lane is not None:
        y1 = s.y + s.height / 2
        y2 = r.y + r.height * (0.5 + SLOT_OFFSET.get(p.slot, 0.0))
        x1, x2 = s.x + BOX_W, r.x + BOX_W
        return (x1, y1), (lane, y1), (lane, y2), (x2, y2)
    x1 = s.centre + ((k % 5) - 2) * BOX_W / 12
    x2 = r.centre + SLOT_OFFSET.get(p.slot, 0.0) * BOX_W
    y1, y2 = s.y + s.height, r.y
    if r.row <= s.row:  # same row (a member earlier than the median): leave from the side
        x1, y1 = (s.x + BOX_W, s.y + s.height / 2) if r.x > s.x else (s.x, s.y + s.height / 2)
    bend = max(abs(y2 - y1) / 2, 30)
    return (x1, y1), (x1, y1 + bend), (x2, y2 - bend), (x2, y2)


def _arrow_svg(p: ClassPath, points: Points, strongest: float, label_at: float) -> str:
    """One measured path along `points`, its label at `label_at` of the way."""
    weak = abs(p.effect) < ARROW_THRESHOLD
    color = WEAK if weak else (POSITIVE if p.effect >= 0 else NEGATIVE)
    width = 1 + 5 * min(abs(p.effect) / strongest, 1.0) if strongest > 0 and not weak else 1
    interval = "" if p.interval is None else f" [{fmt(p.interval[0])}, {fmt(p.interval[1])}]"
    tip = f"{p.sender} \u2192 {p.receiver} ({p.slot} at {p.position}): effect {fmt(p.effect)}"
    (x1, y1), (c1x, c1y), (c2x, c2y), (x2, y2) = points
    path = f"M{x1:.1f},{y1:.1f} C{c1x:.1f},{c1y:.1f} {c2x:.1f},{c2y:.1f} {x2:.1f},{y2:.1f}"
    label = ""
    if not weak:
        mx, my = _bezier(label_at, *points)
        label = (
            f'<text x="{mx:.1f}" y="{my:.1f}" font-size="10" text-anchor="middle" fill="{color}" '
            f'stroke="#fff" stroke-width="3" paint-order="stroke">'
            f"{esc(p.slot)} {esc(f'{p.effect:+.2f}')}</text>"
        )
    marker = "wc-arrow-weak" if weak else ("wc-arrow-pos" if p.effect >= 0 else "wc-arrow-neg")
    return (
        f'<g class="class-link"><path class="class-arrow{" weak" if weak else ""}" d="{path}" '
        f'fill="none" stroke="{color}" stroke-width="{width:.1f}" '
        f'stroke-dasharray="{DASH.get(p.slot, "")}" opacity="{0.35 if weak else 0.9}" '
        f'marker-end="url(#{marker})" data-sender="{esc(p.sender)}" '
        f'data-receiver="{esc(p.receiver)}" data-slot="{esc(p.slot)}">'
        f"<title>{esc(tip + interval)}</title></path>{label}</g>"
    )


def _lanes(paths: Sequence[ClassPath], boxes: dict[str, Box]) -> dict[int, float]:
    """x of the lane of each arrow that passes a row (by index in `paths`); the strongest
    arrows get the lanes nearest the boxes."""
    right = max(b.x + BOX_W for b in boxes.values())
    skips = [i for i, p in enumerate(paths) if boxes[p.receiver].row - boxes[p.sender].row > 1]
    skips.sort(key=lambda i: -abs(paths[i].effect))
    return {i: right + LANE_GAP * (n + 2) for n, i in enumerate(skips)}


def _bezier(t: float, *points: tuple[float, float]) -> tuple[float, float]:
    """The point at t of a cubic Bezier curve (labels sit near the receiver end, where the
    slot offsets keep the q / k / v arrows apart)."""
    weights = ((1 - t) ** 3, 3 * (1 - t) ** 2 * t, 3 * (1 - t) * t**2, t**3)
    return (
        sum(w * p[0] for w, p in zip(weights, points, strict=True)),
        sum(w * p[1] for w, p in zip(weights, points, strict=True)),
    )


def _markers() -> str:
    def marker(name: str, color: str) -> str:
        return (
            f'<marker id="{name}" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="9" '
            f'markerHeight="9" markerUnits="userSpaceOnUse" orient="auto">'
            f'<path d="M0,0 L10,5 L0,10 z" '
            f'fill="{color}"/></marker>'
        )

    return (
        f"<defs>{marker('wc-arrow-pos', POSITIVE)}{marker('wc-arrow-neg', NEGATIVE)}"
        f"{marker('wc-arrow-weak', WEAK)}</defs>"
    )


def class_diagram_svg(explanation: Explanation, svg_id: str = "class-diagram") -> str:
    """The diagram of `explanation.classes` and `explanation.paths` as one inline `<svg>`;
    `svg_id`: its element id (pages with several diagrams give each its own)."""
    classes = explanation.classes
    if not classes:
        return '<p class="missing">No functional classes: nothing to draw.</p>'
    boxes, width, height, depths = _layout(classes)
    known = [p for p in explanation.paths if p.sender in boxes and p.receiver in boxes]
    strongest = max((abs(p.effect) for p in known), default=0.0)
    known.sort(key=lambda p: abs(p.effect))  # strong arrows drawn on top
    lanes = _lanes(known, boxes)
    width = max(width, max(lanes.values(), default=0.0) + 48)
    order: dict[str, int] = {}
    arrows = []  # the k-th arrow leaving a box starts at its own x
    for i, p in enumerate(known):
        k = order[p.sender] = order.get(p.sender, -1) + 1
        points = _route(p, boxes, k, lanes.get(i))
        arrows.append(_arrow_svg(p, points, strongest, 0.9 if i in lanes else 0.7))
    tops = {box.row: box.y for box in boxes.values()}
    rows = "".join(
        f'<text x="8" y="{tops[k] + 15:.0f}" font-size="11" fill="#5b6573">'
        f"{esc(_depth_label(d))}</text>"
        for k, d in enumerate(depths)
    )
    logits = boxes["logits"]
    return (
        f'<svg id="{esc(svg_id)}" class="class-diagram" role="img" aria-label="class diagram" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" width="{width:.0f}" height="{height:.0f}" '
        f'font-family="system-ui, sans-serif">{_markers()}{rows}'
        + "".join(_box_svg(c, boxes[c.name]) for c in classes)
        + f'<g class="logits-box"><rect x="{logits.x:.0f}" y="{logits.y:.0f}" width="{BOX_W}" '
        f'height="28" rx="6" fill="#eee" stroke="#39424e"/><text x="{logits.centre:.0f}" '
        f'y="{logits.y + 18:.0f}" text-anchor="middle" font-size="12" font-weight="600">'
        f"logits</text></g>" + "".join(arrows) + "</svg>"
    )


__all__ = ["class_diagram_svg"]
