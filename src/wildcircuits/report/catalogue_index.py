"""DIR/index.html: the catalogue as one self-contained page (no network), a sortable and
filterable table of the cells, each row linking to its cell's report.html.

Every string from the cells (task and model names, class names, criteria, errors) is escaped;
the report's CSS is inlined and the few lines of script (sort on a header click, filter on
typing) are inline too. Numeric columns sort by a `data-sort` number, not by their text.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from wildcircuits.report.html import _asset
from wildcircuits.report.svg import esc, fmt
from wildcircuits.results.catalogue import Catalogue, Cell, CellState
from wildcircuits.results.io import atomic_write_bytes

#: (heading, numeric?) per column, in order.
COLUMNS = (
    ("task", False),
    ("model", False),
    ("state", False),
    ("behaviour", True),
    ("heads", True),
    ("MLPs", True),
    ("edges", True),
    ("faithfulness", True),
    ("edge faithfulness", True),
    ("random", True),
    ("CPR", True),
    ("CMD", True),
    ("claims s / f / i", False),
    ("classes", False),
    ("failed criteria", False),
    ("seconds", True),
    ("token-forwards", True),
    ("report", False),
)
STATE_BADGE = {
    CellState.VERIFIED: "pass",
    CellState.NOT_VERIFIED: "warn",
    CellState.NO_BEHAVIOUR: "undefined",
    CellState.FAILED: "failed",
    CellState.PENDING: "pending",
}
COMPARE_PAGES = (
    ("universality.html", "Across models (universality)"),
    ("reuse.html", "Across tasks (reuse)"),
)

SCRIPT = """
(function () {
  var table = document.getElementById('cells'), body = table.tBodies[0];
  var filter = document.getElementById('filter'), shown = document.getElementById('shown');
  function count() {
    var n = 0; for (var r of body.rows) { if (!r.hidden) n++; }
    shown.textContent = n + ' of ' + body.rows.length + ' cells';
  }
  filter.addEventListener('input', function () {
    var words = filter.value.toLowerCase().split(/\\s+/).filter(Boolean);
    for (var r of body.rows) {
      var text = r.textContent.toLowerCase();
      r.hidden = !words.every(function (w) { return text.indexOf(w) >= 0; });
    }
    count();
  });
  table.querySelectorAll('th').forEach(function (th, col) {
    th.addEventListener('click', function () {
      var up = th.getAttribute('aria-sort') !== 'ascending';
      table.querySelectorAll('th').forEach(function (h) { h.removeAttribute('aria-sort'); });
      th.setAttribute('aria-sort', up ? 'ascending' : 'descending');
      var numeric = th.dataset.numeric === '1';
      var rows = Array.from(body.rows);
      function key(r) {
        var cell = r.cells[col];
        if (!numeric) return cell.textContent.toLowerCase();
        var v = parseFloat(cell.dataset.sort);
        return isNaN(v) ? null : v;
      }
      rows.sort(function (a, b) {
        var x = key(a), y = key(b);
        if (x === y) return 0;
        if (x === null) return 1;
        if (y === null) return -1;
        return (x < y ? -1 : 1) * (up ? 1 : -1);
      });
      rows.forEach(function (r) { body.appendChild(r); });
    });
  });
  count();
})();
"""

CSS = """
#cells th { cursor: pointer; user-select: none; white-space: nowrap; }
#cells th[aria-sort=ascending]::after { content: ' \\25B2'; }
#cells th[aria-sort=descending]::after { content: ' \\25BC'; }
#filter { font: inherit; padding: 4px 8px; width: 24em; margin: 6px 12px 6px 0; }
#cells td.small { font-size: 0.85em; max-width: 22em; }
main { max-width: 1500px; }
"""


def number_cell(value: float | int | None) -> tuple[str, str]:
    """(shown text, data-sort value) of a number."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a", ""
    return fmt(value), repr(float(value))


def faithfulness_cell(cell: Cell) -> tuple[str, str]:
    """(shown text with its 95% interval, data-sort value) of the cell's F(C) / F(M)."""
    f = cell.faithfulness
    if f is None or f.value is None:
        return "n/a", ""
    text, key = number_cell(f.value)
    if f.low is not None and f.high is not None:
        text += f" [{fmt(f.low, 2)}, {fmt(f.high, 2)}]"
    return text, key


def cell_seconds(cell: Cell) -> float | None:
    """The cell's steps' seconds summed (None when no step has a time)."""
    values = [s.seconds for s in cell.steps if s.seconds is not None]
    return sum(values) if values else None


def forwards_cell(cell: Cell) -> tuple[str, str]:
    """(shown text, data-sort value) of the token-forwards of the cell's steps, summed; where
    some done steps predate the count, the sum of those counted says so ("3 of 10 steps")."""
    done = [s for s in cell.steps if s.state == "done"]
    counted = [s.token_forwards for s in done if s.token_forwards is not None]
    if not counted:
        return "n/a", ""
    text, key = number_cell(sum(counted))
    if len(counted) < len(done):
        text += f" ({len(counted)} of {len(done)} steps)"
    return text, key


def _row(cell: Cell) -> str:
    b = cell.behaviour
    behaviour = number_cell(b.clean_mean if b else None)
    claims = (
        " / ".join(str(cell.claims.get(k, 0)) for k in ("supported", "falsified", "inconclusive"))
        if cell.claims
        else ""
    )
    failed = "; ".join(f.name for f in cell.failed_criteria)
    why = "\n".join(f"{f.name}: {f.reason}" for f in cell.failed_criteria)
    note = cell.error or cell.stop_reason or ""
    link = f'<a href="{esc(cell.folder)}/report.html">report</a>'
    numbers = {
        "behaviour": behaviour,
        "heads": number_cell(cell.n_heads),
        "MLPs": number_cell(cell.n_mlps),
        "edges": number_cell(cell.n_edges),
        "faithfulness": faithfulness_cell(cell),
        "edge faithfulness": number_cell(cell.edge_faithfulness),
        "random": number_cell(cell.random_faithfulness),
        "CPR": number_cell(cell.cpr),
        "CMD": number_cell(cell.cmd),
        "seconds": number_cell(cell_seconds(cell)),
        "token-forwards": forwards_cell(cell),
    }
    texts = {
        "task": esc(cell.task),
        "model": esc(cell.model),
        "state": f'<span class="verdict verdict-{STATE_BADGE[cell.state]}">'
        f"{esc(cell.state.value)}</span>",
        "claims s / f / i": esc(claims),
        "classes": esc(", ".join(cell.classes)),
        "failed criteria": f'<span title="{esc(why)}">{esc(failed)}</span>'
        + (f'<br><span class="note">{esc(note)}</span>' if note else ""),
        "report": link,
    }
    cells = []
    for name, numeric in COLUMNS:
        if numeric:
            text, key = numbers[name]
            cells.append(f'<td class="num" data-sort="{esc(key)}">{esc(text)}</td>')
        else:
            small = ' class="small"' if name in ("classes", "failed criteria") else ""
            cells.append(f"<td{small}>{texts[name]}</td>")
    return f'<tr data-state="{esc(cell.state.value)}">{"".join(cells)}</tr>'


def _criteria(result: Catalogue) -> str:
    c = result.criteria
    items = [
        f"compact circuit's held-out F(C) / F(M) in [{c.faithful_low}, {c.faithful_high}], "
        f"95% interval low end at least {c.interval_low}",
        "the explain step's compact circuit reached its target",
        f"selected edge circuit's held-out faithfulness at least {c.edge_faithful_min}",
        f"random circuits of that size (mean + 2 std) at least {c.random_margin} below it",
        f"not falsified: {', '.join(c.claims_not_falsified)}",
        f"every red-team check passes (required: {', '.join(c.required_checks)}"
        + (f"; exempt: {', '.join(c.exempt_checks)}" if c.exempt_checks else "")
        + ")",
    ]
    return "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


def _failures(result: Catalogue) -> str:
    """Per criterion: the finished cells it fails, and those it alone fails."""
    rows = "".join(
        f"<tr><td>{esc(name)}</td><td>{n}</td><td>{alone}</td></tr>"
        for name, n, alone in result.failures()
    )
    if not rows:
        return ""
    return (
        "<h2>What fails the cells</h2><table><thead><tr><th>criterion</th><th>cells failing it"
        f"</th><th>the only failure of</th></tr></thead><tbody>{rows}</tbody></table>"
    )


def render_index(result: Catalogue, root: Path, notes: Sequence[str] | None = None) -> str:
    """The whole page as a string; links to the comparison pages that exist in `root`."""
    counts = ", ".join(f"{n} {s}" for s, n in result.counts().items() if n)
    links = [f'<a href="{esc(p)}">{esc(t)}</a>' for p, t in COMPARE_PAGES if (root / p).exists()]
    nav = f'<nav class="toc">{"".join(links)}</nav>' if links else ""
    extra = "".join(f'<p class="note">{esc(n)}</p>' for n in notes or ())
    head = "".join(f'<th data-numeric="{int(num)}">{esc(name)}</th>' for name, num in COLUMNS)
    rows = "".join(_row(c) for c in result.cells)
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>wildcircuits catalogue</title><style>{_asset('report.css')}{CSS}</style>"
        f"</head><body><main><h1>wildcircuits: circuit catalogue</h1>"
        f'<p class="subtitle">{esc(len(result.cells))} cells ({esc(counts)}); tasks '
        f"{esc(', '.join(result.tasks))}; models {esc(', '.join(result.models))}</p>{nav}{extra}"
        f"<h2>Verified means</h2>{_criteria(result)}{_failures(result)}"
        '<h2>Cells</h2><input id="filter" type="search" placeholder="filter rows" '
        'aria-label="filter rows"><span id="shown" class="note"></span>'
        f'<div class="figure-box"><table id="cells"><thead><tr>{head}</tr></thead>'
        f"<tbody>{rows}</tbody></table></div>"
        '<p class="caption">Click a heading to sort; faithfulness is the compact circuit\'s '
        "F(C) / F(M) on held-out prompts with its 95% bootstrap interval; behaviour is the "
        "clean metric's mean; hover the failed criteria for the reasons.</p>"
        f"</main><script>{SCRIPT}</script></body></html>\n"
    )


def write_index(root: Path | str, result: Catalogue, notes: Sequence[str] | None = None) -> Path:
    """Write ROOT/index.html atomically; returns its path."""
    root = Path(root)
    path = atomic_write_bytes(root / "index.html", render_index(result, root, notes).encode())
    path.chmod(0o644)
    return path
