"""The catalogue's comparison pages: universality.html (one task across models) and reuse.html
(one model across tasks), drawn from `catalogue.compare_models.Universality` /
`catalogue.compare_tasks.Reuse` and the cells' explanations.

Self-contained: the report's stylesheet inlined, figures as inline SVG (the class diagrams of
`report.class_diagram`, the Jaccard heat maps of `report.svg.heatmap_svg`), no script, nothing
fetched. Every string from a run folder passes through `esc` (directly or via `table`).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

from wildcircuits.catalogue.compare import Cell, SkippedCell
from wildcircuits.catalogue.compare_models import (
    IOI_PAPER,
    ModelProfile,
    TaskComparison,
    Universality,
    Verdict,
)
from wildcircuits.catalogue.compare_tasks import ModelReuse, Reuse
from wildcircuits.report.class_diagram import class_diagram_svg
from wildcircuits.report.sections import Raw, missing, table
from wildcircuits.report.svg import esc, heatmap_svg
from wildcircuits.results import atomic_write_bytes

VERDICT_BADGE = {Verdict.SAME: "pass", Verdict.REORDERED: "warn", Verdict.DIFFERENT: "fail"}


def _page(title: str, body: str) -> str:
    css = resources.files("wildcircuits.report").joinpath("assets", "report.css").read_text()
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{css}</style></head>"
        f"<body><main><h1>{esc(title)}</h1>{body}</main></body></html>\n"
    )


def _write(path: Path, html: str) -> Path:
    atomic_write_bytes(path, html.encode("utf-8"))
    path.chmod(0o644)
    return path


def _anchor(text: str) -> str:
    return "s-" + re.sub(r"[^a-zA-Z0-9_-]+", "-", text)


def cells_table(cells: Sequence[Cell]) -> str:
    """One row per compared cell: what its optional files add, and their notes."""
    rows = [
        [c.task, c.model, c.n_layers, len(c.explanation.classes), len(c.heads()),
         c.faithfulness, c.accuracy, c.verdict or "not verified",
         {None: "no file", True: "yes", False: "no"}[c.hypothesis_edited], "; ".join(c.notes)]
        for c in cells
    ]  # fmt: skip
    header = ["task", "model", "layers", "classes", "circuit heads", "selected faithfulness",
              "clean accuracy", "verification", "hypothesis edited", "notes"]  # fmt: skip
    return table(header, rows, {2, 3, 4, 5, 6}) if rows else missing("No usable cells.")


def skipped_notes(skipped: Sequence[SkippedCell]) -> str:
    if not skipped:
        return ""
    items = "".join(
        f'<li class="skipped-cell">{esc(s.task)} on {esc(s.model)}: {esc(s.reason)}</li>'
        for s in skipped
    )
    return f"<h3>Cells left out</h3><ul>{items}</ul>"


def _class_rows(model: ModelProfile) -> list[list[object]]:
    return [
        [c.name, c.paper_class or "", ", ".join(c.heads), ", ".join(c.positions), c.mean_layer,
         c.depth, c.effect, "n/a" if c.share is None else f"{c.share:.0%}"]
        for c in model.classes
    ]  # fmt: skip


def _classes(t: TaskComparison) -> str:
    header = ["class", "IOI-paper class", "heads", "at", "mean layer", "depth (layer / layers)",
              "effect", "share"]  # fmt: skip
    out = []
    for m in t.models:
        out.append(
            f"<h4>{esc(m.model)} ({m.n_layers} layers)</h4>"
            + table(header, _class_rows(m), {4, 5, 6})
            + f'<p class="caption">effect: {esc(m.effect_source.value)}; share: |effect| over '
            "the sum of |effect| of the classes.</p>"
        )
    return "".join(out)


def _paper_table(t: TaskComparison) -> str:
    models = [m.model for m in t.models]
    rows = [
        [r.paper_class, len(r.gpt2_small_heads), ", ".join(r.gpt2_small_heads)]
        + [Raw(_count(r.heads.get(m, 0))) for m in models]
        for r in t.paper_rows
    ]
    header = ["IOI-paper class", "GPT-2 small heads", "which (layer.head)"] + models
    return (
        "<h3>Against the IOI paper's seven classes</h3>"
        + f'<div class="paper-table">{table(header, rows, {1})}</div>'
        + f'<p class="caption">GPT-2 small\'s classes and heads: {esc(IOI_PAPER)}, Figure 2 '
        "(26 heads in seven classes). A model's cell: how many of its circuit's heads the "
        "explain step put in that class (none: the class is absent).</p>"
    )


def _count(n: int) -> str:
    return f"{n} heads" if n else '<span class="missing">none</span>'


def _diagrams(t: TaskComparison, cells: dict[tuple[str, str], Cell]) -> str:
    parts = []
    for m in t.models:
        svg = class_diagram_svg(cells[(t.task, m.model)].explanation,
                                svg_id=_anchor(f"diagram-{t.task}-{m.model}"))  # fmt: skip
        parts.append(
            f'<div class="compare-diagram" data-model="{esc(m.model)}"><h4>{esc(m.model)}</h4>'
            f'<div class="figure-box">{svg}</div></div>'
        )
    return f'<div class="grid-pair">{"".join(parts)}</div>'


def task_section(t: TaskComparison, cells: dict[tuple[str, str], Cell]) -> str:
    sentences = "".join(f"<li>{esc(s)}</li>" for s in t.sentences)
    paper = _paper_table(t) if t.paper_rows else ""
    return (
        f'<section id="{esc(_anchor(t.task))}" class="task-compare" data-task="{esc(t.task)}">'
        f'<h2>{esc(t.task)}</h2><p><span class="verdict verdict-{VERDICT_BADGE[t.verdict]} '
        f'algorithm-verdict">{esc(t.verdict.value)}</span> (compared by '
        f"{esc(t.compared_by)}, in depth order)</p><ul>{sentences}</ul>"
        f"<h3>Classes</h3>{_classes(t)}{paper}<h3>Class diagrams</h3>{_diagrams(t, cells)}"
        "</section>"
    )


def universality_html(result: Universality, cells: Sequence[Cell]) -> str:
    by_key = {(c.task, c.model): c for c in cells}
    single = "".join(
        f"<li>{esc(task)}: only {esc(model)} explains it</li>"
        for task, model in result.single.items()
    )
    body = (
        "<p>For every task that two or more models' circuits explain: the classes each circuit "
        "has, their depth (mean layer of the members over the model's layers), the share of the "
        "effect each carries, and whether the same algorithm appears (the same classes in the "
        "same depth order). For IOI the classes are set against the IOI paper's "
        f"({esc(IOI_PAPER)}) seven GPT-2-small classes.</p>"
        + "<h3>Cells</h3>" + cells_table(cells) + skipped_notes(result.skipped)
        + (f"<h3>Tasks not compared</h3><ul>{single}</ul>" if single else "")
        + ("".join(task_section(t, by_key) for t in result.tasks)
           or missing("No task is explained by two or more models."))
    )  # fmt: skip
    return _page("wildcircuits catalogue: across models", body)


def _heatmap(m: ModelReuse) -> str:
    svg = heatmap_svg(m.jaccard, m.tasks, m.tasks, "task", "task", "Jaccard", diverging=False)
    return f'<div class="figure-box jaccard-map" data-model="{esc(m.model)}">{svg}</div>'


def model_section(m: ModelReuse) -> str:
    pairs = [[p.first, p.second, p.jaccard, len(p.shared), ", ".join(p.shared)] for p in m.pairs]
    tasks = sorted({t for s in m.shared_heads for t in s.classes})
    heads = [[s.head] + [s.classes.get(t, "") for t in tasks] for s in m.shared_heads]
    recurring = [
        [r.compared, ", ".join(r.tasks), ", ".join(r.shared_heads) or "none",
         "; ".join(f"{t}: {', '.join(h) or 'MLPs only'}" for t, h in r.heads.items())]
        for r in m.recurring
    ]  # fmt: skip
    sentences = "".join(f"<li>{esc(s)}</li>" for s in m.sentences)
    return (
        f'<section id="{esc(_anchor(m.model))}" class="model-reuse" data-model="{esc(m.model)}">'
        f"<h2>{esc(m.model)}</h2><ul>{sentences}</ul>{_heatmap(m)}"
        '<p class="caption">Jaccard index |A \u2229 B| / |A \u222a B| of the heads of two tasks\' '
        "compact circuits (any position; MLPs left out); grey: both circuits have no heads.</p>"
        + "<h3>Task pairs</h3>"
        + table(["task", "task", "Jaccard", "shared heads", "which"], pairs, {2, 3})
        + "<h3>Heads in several tasks' circuits (their class in each)</h3>"
        + (table(["head"] + tasks, heads) if heads else missing("No head is in two circuits."))
        + "<h3>Recurring classes</h3>"
        + (table(["class", "tasks", "same heads", "heads per task"], recurring)
           if recurring else missing("No class is found in two tasks."))
        + "</section>"
    )  # fmt: skip


def reuse_html(result: Reuse, cells: Sequence[Cell]) -> str:
    single = "".join(
        f"<li>{esc(model)}: only {esc(task)} is explained</li>"
        for model, task in result.single.items()
    )
    body = (
        "<p>Per model: which heads the circuits of different tasks share (Jaccard heat map), "
        "and which classes recur across tasks (compared by IOI-paper class, else by name), as "
        "Merullo et al. report for IOI and Colored Objects.</p>"
        + "<h3>Cells</h3>" + cells_table(cells) + skipped_notes(result.skipped)
        + (f"<h3>Models not compared</h3><ul>{single}</ul>" if single else "")
        + ("".join(model_section(m) for m in result.models)
           or missing("No model explains two or more tasks."))
    )  # fmt: skip
    return _page("wildcircuits catalogue: across tasks", body)


def write_universality_page(path: Path, result: Universality, cells: Sequence[Cell]) -> Path:
    return _write(Path(path), universality_html(result, cells))


def write_reuse_page(path: Path, result: Reuse, cells: Sequence[Cell]) -> Path:
    return _write(Path(path), reuse_html(result, cells))


__all__ = [
    "reuse_html",
    "universality_html",
    "write_reuse_page",
    "write_universality_page",
]
