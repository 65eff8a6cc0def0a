"""DIR/catalogue.md: the catalogue's cells as one Markdown table (for docs and reviews), from
catalogue.json only; the HTML index (`catalogue_index`) is the sortable view of the same rows
and formats every number (its `number_cell`, `faithfulness_cell`, `cell_seconds`,
`forwards_cell`)."""

from __future__ import annotations

from pathlib import Path

from wildcircuits.report.catalogue_index import (
    cell_seconds,
    faithfulness_cell,
    forwards_cell,
    number_cell,
)
from wildcircuits.results.catalogue import Catalogue, Cell
from wildcircuits.results.io import atomic_write_bytes

COLUMNS = (
    "task", "model", "state", "behaviour", "heads / MLPs / edges", "F(C)/F(M) [95%]",
    "edge faithfulness (random)", "claims", "classes", "failed criteria", "seconds",
    "token-forwards",
)  # fmt: skip


def _cell_text(value: str) -> str:
    """Table-safe text: pipes escaped, newlines folded."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _row(cell: Cell) -> list[str]:
    b = cell.behaviour
    behaviour = "n/a" if b is None else (
        f"{b.metric} {number_cell(b.clean_mean)[0]} vs {number_cell(b.corrupted_mean)[0]}, "
        f"acc {number_cell(b.accuracy)[0]}")  # fmt: skip
    sizes = " / ".join(number_cell(v)[0] for v in (cell.n_heads, cell.n_mlps, cell.n_edges))
    edge = f"{number_cell(cell.edge_faithfulness)[0]} ({number_cell(cell.random_faithfulness)[0]})"
    claims = ", ".join(f"{n} {status}" for status, n in sorted(cell.claims.items())) or "n/a"
    failed = "; ".join(c.name for c in cell.failed_criteria) or (
        cell.error or cell.stop_reason or "none")  # fmt: skip
    values = [cell.task, cell.model, cell.state.value, behaviour, sizes,
              faithfulness_cell(cell)[0], edge, claims, ", ".join(cell.classes) or "n/a", failed,
              number_cell(cell_seconds(cell))[0], forwards_cell(cell)[0]]  # fmt: skip
    return [_cell_text(v) for v in values]


def render_markdown(result: Catalogue) -> str:
    """The table, with the counts per state and the criteria's thresholds above it."""
    counts = {}
    for cell in result.cells:
        counts[cell.state.value] = counts.get(cell.state.value, 0) + 1
    lines = [
        "# Circuit catalogue",
        "",
        f"{len(result.cells)} cells ({len(result.tasks)} tasks x {len(result.models)} models): "
        + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        + ".",
        "",
        "Verified criteria (stated once, the same for every cell): "
        + _cell_text(", ".join(f"{k} = {v}" for k, v in vars(result.criteria).items()))
        + ".",
        "",
        *_failure_table(result),
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(_row(cell)) + " |" for cell in result.cells]
    return "\n".join(lines) + "\n"


def _failure_table(result: Catalogue) -> list[str]:
    """Which criteria fail the finished cells: per criterion, how many it fails and how many
    it alone fails (those would be verified but for it)."""
    failures = result.failures()
    if not failures:
        return []
    header = "| criterion | cells failing it | the only failure of |"
    lines = ["Criteria the cells fail:", "", header, "|---|---|---|"]
    lines += [f"| {_cell_text(name)} | {n} | {alone} |" for name, n, alone in failures]
    return [*lines, ""]


def write_markdown(root: Path | str, result: Catalogue) -> Path:
    """Write ROOT/catalogue.md atomically; returns its path."""
    return atomic_write_bytes(Path(root) / "catalogue.md", render_markdown(result).encode())
