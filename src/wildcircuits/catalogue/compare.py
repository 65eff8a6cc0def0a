"""Comparing finished `discover` run folders: across models (universality) and across tasks (reuse).

    from wildcircuits.catalogue.compare import write_compare_pages
    write_compare_pages(Path("docs/catalogue"), {("ioi", "smollm2"): Path("runs/ioi-smollm2"), ...})

A cell is one (task, model) run folder. `load_cells` reads each through the report's reader
(`report.run_folder.read_run`: typed results, stale outputs hidden) and keeps the ones with an
explanation.json and a layer count (manifest.json's model info); every other cell is a
`SkippedCell` with the reason, which the pages print. verification.json, metrics.json,
behaviour.json and hypothesis.yaml are optional: what they add (the verdict, the selected
circuit's faithfulness, the clean accuracy, whether the tested hypothesis was edited) is shown
per cell, and one that cannot be read is a note, never a skip.

The analyses are in `compare_models` (`compare_models(cells) -> Universality`) and
`compare_tasks` (`compare_tasks(cells) -> Reuse`); both return frozen, JSON-serialisable
records (`to_json` / `from_json`) the catalogue can store. The pages are drawn by
`wildcircuits.report.catalogue_compare`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from wildcircuits.errors import WildcircuitsError
from wildcircuits.names import NodeKind, parse_display_node
from wildcircuits.results.explain import Explanation, HeadClass


@dataclass(frozen=True)
class SkippedCell:
    """A cell left out of the comparison, and why (in words, for the page)."""

    task: str
    model: str
    reason: str


@dataclass(frozen=True)
class Cell:
    """One usable cell: its explanation, its model's layer count, and what the optional files
    add (None where absent). `notes`: optional files that could not be read."""

    task: str
    model: str
    explanation: Explanation
    n_layers: int
    verdict: str | None = None
    faithfulness: float | None = None
    accuracy: float | None = None
    hypothesis_edited: bool | None = None
    notes: tuple[str, ...] = ()

    def heads(self) -> frozenset[str]:
        """The heads (display names, `L3.H2`) of the compact circuit, at any position."""
        return frozenset(p.node for p in self.explanation.circuit.pairs if is_head(p.node))


def is_head(node: str) -> bool:
    return parse_display_node(node).kind is NodeKind.HEAD


def class_heads(head_class: HeadClass) -> tuple[str, ...]:
    """The distinct heads of a class, in layer order (MLP members left out)."""
    nodes = {p.node for p in head_class.members if is_head(p.node)}
    return tuple(sorted(nodes, key=parse_display_node))


def signature(head_class: HeadClass) -> str:
    """What a class is compared by across cells: its IOI-paper class, else its name."""
    return head_class.paper_class or head_class.name


def load_cell(task: str, model: str, root: Path) -> Cell | SkippedCell:
    """Read one run folder; a `SkippedCell` says why it cannot be compared."""
    from wildcircuits.report.run_folder import read_run

    try:
        run = read_run(root)
    except WildcircuitsError as error:
        return SkippedCell(task, model, str(error))
    part = run.part("explanation.json")
    if not part.ok:
        stopped = run.manifest.stopped
        why = f"; the run stopped at {stopped.step}: {stopped.reason}" if stopped else ""
        return SkippedCell(task, model, part.note().rstrip(".") + why)
    n_layers = run.manifest.model.get("n_layers")
    if not isinstance(n_layers, int) or n_layers < 1:
        return SkippedCell(
            task, model, "manifest.json's model info has no n_layers (rerun the start step)"
        )
    edited, note = _hypothesis_edited(root, part.data)
    return Cell(
        task,
        model,
        part.data,
        n_layers,
        verdict=_get(run.result("verification.json"), "verdict"),
        faithfulness=_selected(run.result("metrics.json")),
        accuracy=_accuracy(run.result("behaviour.json")),
        hypothesis_edited=edited,
        notes=tuple(_notes(run) + ([note] if note else [])),
    )


_OPTIONAL = ("verification.json", "metrics.json", "behaviour.json")


def _notes(run) -> list[str]:
    """Notes for optional files that exist but could not be read (or are stale)."""
    return [
        run.part(name).note()
        for name in _OPTIONAL
        if run.part(name).state.value not in ("ok", "not computed")
    ]


def _get(result, key: str):
    return None if result is None else getattr(result, key)


def _selected(metrics) -> float | None:
    return None if metrics is None else metrics.selected.faithfulness


def _accuracy(behaviour) -> float | None:
    return None if behaviour is None else behaviour.clean.accuracy


def _hypothesis_edited(root: Path, explanation: Explanation) -> tuple[bool | None, str]:
    """Whether hypothesis.yaml's classes (names and members) differ from the explanation's
    (a person edited the hypothesis that verify tested); None when there is no file."""
    path = root / "hypothesis.yaml"
    if not path.is_file():
        return None, ""
    from wildcircuits.explanation.hypothesis import load_hypothesis

    try:
        hypothesis = load_hypothesis(path)
    except WildcircuitsError as error:
        return None, f"hypothesis.yaml could not be read: {error}"
    claimed = {(c.name, frozenset(c.members)) for c in hypothesis.classes}
    found = {(c.name, frozenset(c.members)) for c in explanation.classes}
    return claimed != found, ""


def load_cells(
    cells: Mapping[tuple[str, str], Path],
) -> tuple[tuple[Cell, ...], tuple[SkippedCell, ...]]:
    """Every cell read (sorted by task, then model): the usable ones and the skipped ones."""
    used: list[Cell] = []
    skipped: list[SkippedCell] = []
    for (task, model), root in sorted(cells.items()):
        cell = load_cell(task, model, Path(root))
        (skipped if isinstance(cell, SkippedCell) else used).append(cell)
    return tuple(used), tuple(skipped)


def write_compare_pages(out_dir: Path, cells: Mapping[tuple[str, str], Path]) -> list[Path]:
    """Write out_dir/universality.html (across models) and out_dir/reuse.html (across tasks)
    from the cells' run folders, and their typed results universality.json / reuse.json
    (atomically); returns the two pages' paths. Self-contained pages, no script."""
    from wildcircuits.catalogue.compare_models import compare_models
    from wildcircuits.catalogue.compare_tasks import compare_tasks
    from wildcircuits.report.catalogue_compare import write_reuse_page, write_universality_page
    from wildcircuits.results.io import save_json

    used, skipped = load_cells(cells)
    out_dir = Path(out_dir)
    universality, reuse = compare_models(used, skipped), compare_tasks(used, skipped)
    for name, result in (("universality.json", universality), ("reuse.json", reuse)):
        save_json(out_dir / name, result.to_json(), require_provenance=False)
    return [
        write_universality_page(out_dir / "universality.html", universality, used),
        write_reuse_page(out_dir / "reuse.html", reuse, used),
    ]


__all__ = [
    "Cell",
    "SkippedCell",
    "class_heads",
    "load_cell",
    "load_cells",
    "signature",
    "write_compare_pages",
]
