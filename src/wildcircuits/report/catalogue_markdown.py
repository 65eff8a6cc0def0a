"""DIR/catalogue.md: the catalogue's cells as one Markdown table (for docs and reviews), from
catalogue.json only; the HTML index (`catalogue_index`) is the sortable view of the same rows."""

from __future__ import annotations

from pathlib import Path

from wildcircuits.results.catalogue import Catalogue, Cell
from wildcircuits.results.io import atomic_write_bytes

COLUMNS = (
    "task", "model", "state", "behaviour", "heads / MLPs / edges", "F(C)/F(M) [95%]",
    "edge faithfulness (random)", "claims", "classes", "failed criteria", "seconds",
)  # fmt: skip


def _cell_text(value: str) -> str:
    """Table-safe text: pipes escaped, newlines folded."""
    return " ".join(str(value).split()).replace("|", "\\|")


def _number(value: float | None, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _row(cell: Cell) -> list[str]:
    b = cell.behaviour
    behaviour = "n/a" if b is None else (
        f"{b.metric} {_number(b.clean_mean)} vs {_number(b.corrupted_mean)}, "
        f"acc {_number(b.accuracy)}")  # fmt: skip
    f = cell.faithfulness
    faithful = "n/a" if f is None or f.value is None else (
        f"{f.value:.2f} [{_number(f.low)}, {_number(f.high)}]")  # fmt: skip
    sizes = " / ".join("n/a" if v is None else str(v)
                       for v in (cell.n_heads, cell.n_mlps, cell.n_edges))  # fmt: skip
    edge = f"{_number(cell.edge_faithfulness)} ({_number(cell.random_faithfulness)})"
    claims = ", ".join(f"{n} {status}" for status, n in sorted(cell.claims.items())) or "n/a"
    failed = "; ".join(c.name for c in cell.failed_criteria) or (
        cell.error or cell.stop_reason or "none")  # fmt: skip
    seconds = sum(s.seconds or 0.0 for s in cell.steps)
    values = [cell.task, cell.model, cell.state.value, behaviour, sizes, faithful, edge, claims,
              ", ".join(cell.classes) or "n/a", failed, f"{seconds:.0f}"]  # fmt: skip
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
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "---|" * len(COLUMNS),
    ]
    lines += ["| " + " | ".join(_row(cell)) + " |" for cell in result.cells]
    return "\n".join(lines) + "\n"


def write_markdown(root: Path | str, result: Catalogue) -> Path:
    """Write ROOT/catalogue.md atomically; returns its path."""
    return atomic_write_bytes(Path(root) / "catalogue.md", render_markdown(result).encode())
