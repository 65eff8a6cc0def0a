"""The report's circuit graph: an inline SVG with layers top to bottom, plus slider data.

Nodes are the union of the selected circuit's nodes (`circuit.json`) and of every node an edge of
any slider size (`circuit_sizes.json`) touches; each node is one `<g class="node">`. Each edge is
one `<path class="edge">` whose `data-sizes` lists the slider positions it belongs to; the page
script (assets/report.js) shows the edges of the chosen size and dims nodes none of them touch.
The SVG is drawn at the selected size, so it reads the same without the script and in print.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wildcircuits.errors import GraphError
from wildcircuits.names import Node, NodeKind, layer_label, parse_edge, parse_node
from wildcircuits.report.svg import esc, fmt
from wildcircuits.results.circuits import CircuitFile, CircuitSizes, Member
from wildcircuits.results.verdicts import NodeRole

MAX_DRAWN_EDGES = 1500
ROW_H, COL_W, NODE_W, NODE_H, MARGIN = 58, 66, 52, 20, 60
ROLE_COLORS = (
    "#4e79a7",
    "#f28e2b",
    "#59a14f",
    "#e15759",
    "#b07aa1",
    "#edc948",
    "#76b7b2",
    "#ff9da7",
    "#9c755f",
    "#17becf",
)
FIXED_COLORS = {"input": "#bab0ac", "logits": "#bab0ac", "unlabelled": "#e6e6e6"}
SLOT_DASH = {"q": "", "k": "5 3", "v": "1.5 2.5", "in": ""}
SLOT_OFFSET = {"q": -12, "k": 0, "v": 12, "in": 0}


@dataclass(frozen=True)
class Size:
    """One slider position: the circuit at `n_edges` edges; `drawn` of them are drawn."""

    fraction: float | None
    n_edges: int
    drawn: int
    faithfulness: float | None = None


@dataclass(frozen=True)
class GraphView:
    svg: str
    sizes: list[Size]
    selected: int
    n_nodes: int
    roles: dict[str, str] = field(default_factory=dict)  # role -> colour, for the legend
    skipped: list[str] = field(default_factory=list)  # names that are not graph nodes / edges

    def slider_data(self) -> dict[str, Any]:
        return {
            "selected": self.selected,
            "sizes": [
                {
                    "fraction": s.fraction,
                    "n_edges": s.n_edges,
                    "drawn": s.drawn,
                    "faithfulness": s.faithfulness,
                }
                for s in self.sizes
            ],
        }


def size_label(size: Size, n_total: int | None) -> str:
    """'123 edges (0.10% of the graph)', saying when fewer are drawn."""
    share = f" ({100 * size.n_edges / n_total:.2f}% of the graph)" if n_total else ""
    drawn = f", the top {size.drawn:,} by |score| drawn" if size.drawn < size.n_edges else ""
    faith = "" if size.faithfulness is None else f", faithfulness {fmt(size.faithfulness)}"
    return f"{size.n_edges:,} edges{share}{drawn}{faith}"


def _raw_sizes(circuit: CircuitFile, sizes: CircuitSizes | None) -> tuple[list, int]:
    """[(fraction, n_edges, edge names, faithfulness)] and the selected index."""
    chosen = circuit.in_graph("edges")
    if sizes is None or not sizes.sizes:
        return [(None, len(chosen), chosen, None)], 0
    rows = [(s.fraction, s.n_edges, list(s.edges), s.faithfulness) for s in sizes.sizes]
    selected = sizes.selected
    if selected is None or not 0 <= selected < len(rows):
        selected = min(range(len(rows)), key=lambda i: abs(rows[i][1] - len(chosen)))
    return rows, selected


def build_graph_view(
    circuit: CircuitFile,
    sizes: CircuitSizes | None,
    roles: Mapping[str, NodeRole],
    extra_scores: Callable[[set[str]], dict[str, float]] = lambda names: {},
) -> GraphView:
    """Lay out the circuit (and every slider size) as SVG; see the module docstring."""
    rows, selected = _raw_sizes(circuit, sizes)
    edge_info = circuit.edges
    names = {name for _, _, edges, _ in rows for name in edges}
    missing = {n for n in names if _score(edge_info.get(n)) is None}
    scores = {n: _score(edge_info.get(n)) for n in names} | extra_scores(missing)
    membership: dict[str, set[int]] = {}
    view_sizes = []
    for index, (fraction, n_edges, edges, faith) in enumerate(rows):
        drawn = sorted(edges, key=lambda n: -abs(scores.get(n) or 0.0))[:MAX_DRAWN_EDGES]
        for name in drawn:
            membership.setdefault(name, set()).add(index)
        view_sizes.append(Size(fraction, n_edges, len(drawn), _finite(faith)))
    parsed, skipped = _parse_edges(membership)
    nodes, bad_nodes = _nodes(parsed, circuit.in_graph("nodes"))
    colors = _role_colors(nodes, roles)
    layout = _layout(nodes, circuit.n_heads)
    svg = _svg(parsed, membership, scores, nodes, layout, roles, colors, selected, circuit)
    return GraphView(svg, view_sizes, selected, len(nodes), colors, skipped + bad_nodes)


def _finite(value: Any) -> float | None:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _score(entry: Member | None) -> float | None:
    return None if entry is None else _finite(entry.score)


def _parse_edges(membership: Mapping[str, set[int]]) -> tuple[dict[str, Any], list[str]]:
    parsed, skipped = {}, []
    for name in membership:
        try:
            parsed[name] = parse_edge(name)
        except GraphError:
            skipped.append(name)
    return parsed, skipped


def _nodes(parsed: Mapping[str, Any], circuit_nodes: Sequence[str]) -> tuple[list[Node], list]:
    nodes = {e.sender for e in parsed.values()} | {e.receiver.node for e in parsed.values()}
    bad = []
    for name in circuit_nodes:
        try:
            nodes.add(parse_node(name))
        except GraphError:
            bad.append(name)
    return sorted(nodes, key=_order), bad


def _order(node: Node) -> tuple[int, int, int]:
    rank = {NodeKind.INPUT: 0, NodeKind.HEAD: 1, NodeKind.MLP: 2, NodeKind.LOGITS: 3}[node.kind]
    layer = -1 if node.kind is NodeKind.INPUT else node.layer
    return (10**9 if node.kind is NodeKind.LOGITS else layer, rank, node.head)


def _entry(node: Node, roles: Mapping[str, NodeRole]) -> NodeRole | None:
    return roles.get(node.name) or roles.get(node.display)


def node_role(node: Node, roles: Mapping[str, NodeRole]) -> str:
    if node.kind in (NodeKind.INPUT, NodeKind.LOGITS):
        return node.name
    entry = _entry(node, roles)
    return (entry.role if entry else "") or "unlabelled"


def _role_colors(nodes: Sequence[Node], roles: Mapping[str, NodeRole]) -> dict:
    seen = sorted({node_role(n, roles) for n in nodes} - set(FIXED_COLORS))
    colors = {role: ROLE_COLORS[i % len(ROLE_COLORS)] for i, role in enumerate(seen)}
    used = {node_role(n, roles) for n in nodes}
    return colors | {k: v for k, v in FIXED_COLORS.items() if k in used}


def _layout(nodes: Sequence[Node], n_heads: int) -> dict[Node, tuple[float, float]]:
    """Row per layer that has nodes (input on top, logits at the bottom); heads keep their
    column across layers, the MLP sits in the last column."""
    layers = sorted({n.layer for n in nodes if n.kind in (NodeKind.HEAD, NodeKind.MLP)})
    row = {layer: i + 1 for i, layer in enumerate(layers)}
    n_cols = max(n_heads, 1 + max((n.head for n in nodes), default=0)) + 1
    width = 2 * MARGIN + COL_W * n_cols
    out = {}
    for node in nodes:
        if node.kind is NodeKind.INPUT:
            out[node] = (width / 2, MARGIN / 2)
        elif node.kind is NodeKind.LOGITS:
            out[node] = (width / 2, MARGIN / 2 + ROW_H * (len(layers) + 1))
        else:
            col = node.head if node.kind is NodeKind.HEAD else n_cols - 1
            out[node] = (MARGIN + COL_W * (col + 0.5), MARGIN / 2 + ROW_H * row[node.layer])
    return out


def _svg(parsed, membership, scores, nodes, layout, roles, colors, selected, circuit) -> str:
    xs = [x for x, _ in layout.values()] or [MARGIN]
    ys = [y for _, y in layout.values()] or [MARGIN]
    width, height = max(xs) + COL_W / 2 + MARGIN, max(ys) + NODE_H + MARGIN / 2
    top = max((abs(s) for s in scores.values() if s is not None), default=0.0) or 1.0
    active = {parsed[n].sender for n in parsed if selected in membership[n]}
    active |= {parsed[n].receiver.node for n in parsed if selected in membership[n]}
    out = [
        f'<svg id="circuit-graph" role="img" viewBox="0 0 {width:.0f} {height:.0f}" '
        f'width="{width:.0f}" height="{height:.0f}" aria-label="circuit graph">'
    ]
    out += _row_labels(nodes, layout)
    out.append('<g class="edges">')
    for name, edge in parsed.items():
        out.append(_edge(name, edge, membership[name], scores.get(name), top, layout, selected))
    out.append('</g><g class="nodes">')
    node_info = circuit.nodes
    for node in nodes:
        out.append(_node(node, layout[node], roles, colors, node_info, node in active))
    out.append("</g></svg>")
    return "".join(out)


def _row_labels(nodes: Sequence[Node], layout: Mapping[Node, tuple[float, float]]) -> list[str]:
    rows = {n.layer: layout[n][1] for n in nodes if n.kind in (NodeKind.HEAD, NodeKind.MLP)}
    return [
        f'<text class="row-label" x="6" y="{y + 4:.0f}">{layer_label(layer)}</text>'
        for layer, y in sorted(rows.items())
    ]


def _edge(name, edge, sizes: set[int], score, top, layout, selected) -> str:
    (x1, y1), (x2, y2) = layout[edge.sender], layout[edge.receiver.node]
    slot = edge.receiver.slot.value
    x2 += SLOT_OFFSET[slot]
    half = NODE_H / 2
    if abs(y1 - y2) < 1:  # head -> MLP of the same layer: bend below the row
        d = f"M{x1:.1f},{y1 + half:.1f} C{x1:.1f},{y1 + 34:.1f} {x2:.1f},{y2 + 34:.1f} "
        d += f"{x2:.1f},{y2 + half:.1f}"
    else:
        mid = (y1 + y2) / 2
        d = f"M{x1:.1f},{y1 + half:.1f} C{x1:.1f},{mid:.1f} {x2:.1f},{mid:.1f} "
        d += f"{x2:.1f},{y2 - half:.1f}"
    stroke = "#8c8c8c" if score is None else ("#3b6ea5" if score >= 0 else "#c0392b")
    strength = 0.3 if score is None else abs(score) / top
    width, opacity = 0.6 + 5.0 * strength, 0.3 + 0.65 * strength  # weak edges fade
    tip = f"edge {name}\nscore {fmt(score, 4)}\ninput slot: {slot}"
    cls = "edge" if selected in sizes else "edge off"
    return (
        f'<path class="{cls}" d="{d}" stroke="{stroke}" stroke-width="{width:.2f}" '
        f'stroke-opacity="{opacity:.2f}" '
        f'stroke-dasharray="{SLOT_DASH[slot]}" data-sizes="{" ".join(map(str, sorted(sizes)))}" '
        f'data-src="{esc(edge.sender.name)}" data-dst="{esc(edge.receiver.node.name)}" '
        f'data-tip="{esc(tip)}"><title>{esc(tip)}</title></path>'
    )


def _node(node, xy, roles, colors, node_info, active: bool) -> str:
    role = node_role(node, roles)
    entry = _entry(node, roles) or NodeRole(role)
    score = _score(node_info.get(node.name))
    lines = [f"{node.display} ({node.name})", f"role: {role}"]
    if entry.evidence:
        lines.append(f"evidence: {entry.evidence}")
    for key, value in entry.scores.items():
        lines.append(f"{key}: {fmt(value)}")
    if score is not None:
        lines.append(f"node score: {fmt(score, 4)}")
    tip = "\n".join(lines)
    x, y = xy
    return (
        f'<g class="node{"" if active else " dim"}" data-node="{esc(node.name)}" '
        f'data-tip="{esc(tip)}" transform="translate({x:.1f},{y:.1f})">'
        f'<rect x="{-NODE_W / 2}" y="{-NODE_H / 2}" width="{NODE_W}" height="{NODE_H}" rx="6" '
        f'fill="{colors.get(role, "#e6e6e6")}"/>'
        f'<text y="4" text-anchor="middle">{esc(node.display)}</text>'
        f"<title>{esc(tip)}</title></g>"
    )
