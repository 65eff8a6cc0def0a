"""How the main result objects show themselves in Jupyter (`_repr_html_`).

Each function returns one self-contained HTML fragment: inline SVG and a small table, no script,
no stylesheet link and no network access, so a notebook saved offline shows the same thing.
Every string taken from a result (labels, edge names, provenance) is escaped.

- a `ScoreGrid` as its heatmap and its largest entries;
- `EdgeScores` as a summary, the top edges and a small graph of them;
- a `Circuit` as a summary and a small graph of its edges;
- an `EvaluationReport` as its summary table and faithfulness curve.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from wildcircuits.report.svg import Series, esc, fmt, heatmap_svg, line_chart_svg

#: Edges drawn in the small graph of edge scores or a circuit (largest |score| first).
GRAPH_EDGES = 40
#: Rows of the "largest entries" tables.
TOP_ROWS = 10
_STYLE = "font-family:sans-serif;font-size:12px;max-width:100%;overflow-x:auto"
# The report's stylesheet rules the SVG pieces need, scoped to the fragment (no external sheet).
_SHEET = (
    "<style>.wildcircuits svg{font:10px sans-serif}.wildcircuits .edge{fill:none}"
    ".wildcircuits .node rect{stroke:#39424e;stroke-width:.8}.wildcircuits .axis{fill:#666}"
    ".wildcircuits .frame{fill:#fff;stroke:#ccc}.wildcircuits .grid{stroke:#eceff3}"
    ".wildcircuits .ref{stroke:#888;stroke-dasharray:4 3}"
    ".wildcircuits td,.wildcircuits th{padding:1px 8px;text-align:left}</style>"
)
_CURVE_COLORS = ("#4e79a7", "#f28e2b", "#59a14f", "#e15759")


def _frame(title: str, body: Iterable[str]) -> str:
    return (
        f'<div class="wildcircuits" style="{_STYLE}">{_SHEET}<b>{esc(title)}</b>'
        f"{''.join(body)}</div>"
    )


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{esc(fmt(cell) if isinstance(cell, float) else cell)}</td>"
                         for cell in row) + "</tr>"
        for row in rows
    )  # fmt: skip
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _provenance(provenance: Mapping[str, Any]) -> str:
    text = ", ".join(f"{k}: {v}" for k, v in provenance.items() if v not in (None, "", {}))
    return f'<p style="color:#555">{esc(text)}</p>' if text else ""


def grid_html(grid: Any) -> str:
    """A `ScoreGrid`: heatmap (rows x columns) and its largest entries by |value|."""
    values = grid.values.detach().cpu().tolist()
    svg = heatmap_svg(
        values, grid.row_labels, grid.col_labels, grid.row_axis, grid.col_axis, grid.value_label
    )
    rows = [(r, c, v) for r, c, v in grid.top(TOP_ROWS)]
    table = _table([grid.row_axis, grid.col_axis, grid.value_label], rows)
    return _frame(grid.title, [_provenance(grid.provenance), svg, table])


def _circuit_file(graph: Any, edges: Sequence[tuple[str, float]]) -> Any:
    """The run folder's circuit-file type, for these edges only: what the report's graph
    drawing reads."""
    from wildcircuits.results.circuits import CircuitFile, Member

    return CircuitFile(
        cfg={"n_layers": graph.n_layers, "n_heads": graph.n_heads},
        edges={name: Member(in_graph=True, score=value) for name, value in edges},
    )


def _graph_svg(graph: Any, edges: Sequence[tuple[str, float]]) -> str:
    from wildcircuits.report.graph_view import build_graph_view

    if not edges:
        return "<p>No edges.</p>"
    view = build_graph_view(_circuit_file(graph, edges), None, {})
    return view.svg


def edge_scores_html(scores: Any) -> str:
    """`EdgeScores`: method, size, provenance, the top edges and a graph of them."""
    values = scores.values()
    top = scores.top(GRAPH_EDGES)
    summary = (
        f"<p>{values.numel():,} edges; {int((values != 0).sum()):,} non-zero; "
        f"max |score| {fmt(float(values.abs().max()) if values.numel() else None)}; "
        f"settings {esc(dict(scores.settings))}; the graph draws the {len(top)} edges of "
        "largest |score|</p>"
    )
    table = _table(["edge", "score"], top[:TOP_ROWS])
    title = f"EdgeScores ({scores.method})"
    body = [summary, _provenance(scores.provenance), table, _graph_svg(scores.graph, top)]
    return _frame(title, body)


def circuit_html(circuit: Any, scores: Any = None) -> str:
    """A `Circuit`: its size, nodes, heads and a graph of (up to `GRAPH_EDGES` of) its edges."""
    names = [e.name for e in circuit.edge_list()]
    values = {} if scores is None else {name: scores.of(name) for name in names}
    edges = sorted(((n, values.get(n, 1.0)) for n in names), key=lambda e: -abs(e[1]))
    heads = ", ".join(node.display for node in circuit.heads()) or "none"
    summary = (
        f"<p>{circuit.n_edges:,} of {circuit.graph.n_edges:,} edges "
        f"({circuit.fraction:.2%}); {len(circuit.nodes())} nodes; heads: {esc(heads)}</p>"
    )
    return _frame("Circuit", [summary, _graph_svg(circuit.graph, edges[:GRAPH_EDGES])])


def evaluation_html(report: Any) -> str:
    """An `EvaluationReport`: its summary lines as a table and the faithfulness curves."""
    series = [
        Series(f"{ordering.value} top-k", curve.fractions, curve.faithfulness, color)
        for (ordering, curve), color in zip(report.curves.items(), _CURVE_COLORS, strict=False)
    ]
    if report.random is not None:
        first = report.random.curves[0]
        series.append(
            Series("random (mean)", first.fractions, report.random.mean_faithfulness, "#999", "4 3")
        )
    chart = line_chart_svg(
        series,
        "fraction of edges (log)",
        "normalized faithfulness",
        reference_lines=[(1.0, "full model"), (0.8, "0.8")],
    )
    table = _table(["measure"], [(line,) for line in report.lines()])
    return _frame("Evaluation", [_provenance(report.provenance), table, chart])
