"""Report sections drawn from the run folder's JSON: task, behaviour, localisation, evaluation.

Each `*_section(run)` returns an HTML fragment. Every string from a file is escaped with `esc`;
a missing file gives its "not computed" note instead of the section's body.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from wildcircuits.report.run_folder import RunFiles
from wildcircuits.report.svg import Series, esc, fmt, heatmap_svg, line_chart_svg
from wildcircuits.results.behaviour import Example, Examples, ProbeResult, Stats, VariationResult
from wildcircuits.results.localise import AttentionPattern, GridData, HeadRoleTable, Localise
from wildcircuits.results.metrics import Curve, Metrics, Smallest
from wildcircuits.results.verdicts import Check, RedTeam

GRID_TITLES = {
    "dla_layer": "Direct logit attribution by layer",
    "dla_head": "Direct logit attribution by head",
    "patch_layer_pos": "Activation patching: layer x position",
    "patch_head": "Activation patching: by head",
}
CURVE_STYLE = {"method": ("#3b6ea5", ""), "random": ("#c0392b", "6 4"), "other": ("#59a14f", "2 3")}


def missing(note: str) -> str:
    return f'<p class="missing">{esc(note)}</p>'


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], numeric: set[int] = frozenset()):
    """An HTML table; cells are escaped unless wrapped in `Raw`."""
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = []
    for row in rows:
        cells = []
        for i, cell in enumerate(row):
            text = cell.html if isinstance(cell, Raw) else esc(fmt(cell))
            cells.append(f'<td class="num">{text}</td>' if i in numeric else f"<td>{text}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class Raw:
    """Already-escaped HTML for a table cell."""

    def __init__(self, html: str) -> None:
        self.html = html


def badge(word: Any) -> Raw:
    text = str(word)
    return Raw(f'<span class="verdict verdict-{esc(text.lower())}">{esc(text)}</span>')


def image(run: RunFiles, relative: str, alt: str) -> str:
    """A PNG from the run folder as a data URI (or a note when it is missing)."""
    path = run.path(relative)
    if path is None:
        return missing(f"Figure {relative} not found.")
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img class="figure" alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def prompt(text: Any) -> str:
    return f'<span class="prompt">{esc(text)}</span>'


# task and behaviour ---------------------------------------------------------------------------
def _example_rows(example: Example) -> list[list[Any]]:
    rows = [["clean", Raw(prompt(example.clean))]]
    for name, text in example.corrupted.items():
        rows.append([f"corrupted: {name}", Raw(prompt(text))])
    answers = ", ".join(repr(a) for a in example.answers)
    distractors = ", ".join(repr(d) for d in example.distractors)
    rows.append(["answers / distractors", f"{answers} / {distractors}"])
    return rows


def task_section(run: RunFiles) -> str:
    part = run.part("behaviour.json")
    behaviour: ProbeResult | None = part.data
    extra: Examples | None = run.result("examples.json")
    name = behaviour.task if behaviour else run.config.task
    out = [f"<p><strong>Task:</strong> {esc(name)}"]
    if behaviour and behaviour.description:
        out.append(f" &mdash; {esc(behaviour.description)}")
    out.append("</p>")
    examples = list(extra.examples[:5]) if extra else []
    if not examples and behaviour and behaviour.example:
        examples = [behaviour.example]
    if not examples:
        return "".join(out) + missing("No example prompts: " + part.note())
    for i, example in enumerate(examples):
        out.append(f"<h3>Example {i + 1}</h3>")
        out.append(table(["prompt", "text"], _example_rows(example)))
    return "".join(out)


def behaviour_section(run: RunFiles) -> str:
    part = run.part("behaviour.json")
    if not part.ok:
        return missing(part.note())
    data: ProbeResult = part.data
    header = ["distribution", "n", "mean", "std", "accuracy", "normalized", "verdict"]
    rows = [["clean", *_stats(data.clean), badge("baseline")]]
    for name, stats in data.corrupted.items():
        rows.append([f"corrupted: {name}", *_stats(stats), badge("corruption")])
    for v in data.variations:
        rows.append([v.name, *_stats(v), badge(v.verdict.value)])
    thresholds = data.thresholds
    caption = (
        f"Metric {data.metric} (n={data.n}); normalized: clean = 1, "
        f"{data.default_corruption} = 0; holds >= {thresholds.get('holds', '?')}, "
        f"breaks < {thresholds.get('breaks', '?')}."
    )
    figure = next((f for f in ("behaviour.png", "figures/behaviour.png") if run.path(f)), None)
    pic = image(run, figure, "behaviour figure") if figure else missing("No behaviour figure.")
    return (
        table(header, rows, numeric={1, 2, 3, 4, 5})
        + f'<p class="caption">{esc(caption)}</p>'
        + f'<div class="figure-box">{pic}</div>'
    )


def _stats(stats: Stats | VariationResult) -> list[Any]:
    return [stats.n, stats.mean, stats.std, stats.accuracy, stats.normalized]


# localisation ---------------------------------------------------------------------------------
def _grid(name: str, grid: GridData) -> str:
    title = GRID_TITLES.get(name) or grid.title or name
    try:
        svg = heatmap_svg(
            grid.values,
            grid.row_labels,
            grid.col_labels,
            grid.row_axis,
            grid.col_axis,
            grid.value_label,
        )
    except (TypeError, ValueError) as error:
        return f"<h3>{esc(title)}</h3>" + missing(f"Grid {name} is malformed ({error}).")
    caption = "; ".join(f"{k}={v}" for k, v in grid.provenance.items() if not isinstance(v, dict))
    return (
        f"<h3>{esc(title)}</h3>"
        f'<div class="figure-box">{svg}<p class="caption">{esc(caption)}</p></div>'
    )


def localise_section(run: RunFiles) -> str:
    part = run.part("localise.json")
    if not part.ok:
        return missing(part.note())
    data: Localise = part.data
    grids = data.grids
    order = [n for n in GRID_TITLES if n in grids] + [n for n in grids if n not in GRID_TITLES]
    out = [_grid(name, grids[name]) for name in order]
    for name in GRID_TITLES:
        if name not in grids:
            out.append(f"<h3>{esc(GRID_TITLES[name])}</h3>" + missing("Not computed."))
    out.append("<h3>Head roles</h3>" + _head_roles(data.head_roles))
    out.append("<h3>Attention patterns of key heads</h3>" + _patterns(run, data.attention_patterns))
    return "".join(out)


def _head_roles(data: HeadRoleTable | None) -> str:
    if data is None or not data.heads:
        return missing("Not computed.")
    heads = [h for h in data.heads if h.labels]
    if not heads:
        return missing("No head reached a role threshold.")
    roles = list(heads[0].scores)
    rows = [[h.head, ", ".join(h.labels), *[h.scores.get(r) for r in roles]] for h in heads]
    header = ["head", "labels", *[r.replace("_", " ") for r in roles]]
    return table(header, rows, numeric=set(range(2, 2 + len(roles))))


def _patterns(run: RunFiles, patterns: Sequence[AttentionPattern]) -> str:
    if not patterns:
        return missing("Not computed.")
    out = []
    for entry in patterns:
        why = f" ({entry.why})" if entry.why else ""
        title = f"{entry.head}{why}, prompt {entry.prompt_index}"
        body = missing("No pattern data.")
        if entry.pattern and entry.tokens:
            tokens = [f"{i}:{t}" for i, t in enumerate(entry.tokens)]
            body = heatmap_svg(
                entry.pattern, tokens, tokens, "query", "key", "attention", diverging=False
            )
        elif entry.figure:
            body = image(run, entry.figure, f"attention pattern of {entry.head}")
        out.append(f'<div><h3>{esc(title)}</h3><div class="figure-box">{body}</div></div>')
    return f'<div class="grid-pair">{"".join(out)}</div>'


# evaluation -----------------------------------------------------------------------------------
def faithfulness_section(run: RunFiles) -> str:
    part = run.part("metrics.json")
    if not part.ok:
        return missing(part.note())
    data: Metrics = part.data
    out = []
    if data.curves:
        chart = line_chart_svg(
            [_series(c) for c in data.curves],
            "circuit size (fraction of edges, log scale)",
            "normalized faithfulness",
            reference_lines=[(1.0, "full model"), (0.8, "80%")],
        )
        out.append(f'<div class="figure-box">{chart}</div>')
        rows = [[c.name, c.kind.value, c.cpr, c.cmd, c.log_area] for c in data.curves]
        out.append(table(["curve", "kind", "CPR", "CMD", "log-area"], rows, numeric={2, 3, 4}))
    else:
        out.append(missing("No faithfulness curve."))
    out.append(_smallest(data.smallest_80))
    sensitivity = [[r.ablation, r.n_edges, r.faithfulness] for r in data.ablation_sensitivity]
    out.append(
        "<h3>Ablation-type sensitivity</h3>"
        + _rows_table(sensitivity, ["ablation", "n_edges", "faithfulness"])
    )
    held_out = [[r.split, r.n, r.n_edges, r.faithfulness] for r in data.held_out]
    out.append(
        "<h3>Held-out split</h3>" + _rows_table(held_out, ["split", "n", "n_edges", "faithfulness"])
    )
    caption = "; ".join(f"{k}={v}" for k, v in data.settings().items() if v is not None)
    out.append(f'<p class="caption">{esc(caption)}</p>')
    return "".join(out)


def _series(curve: Curve) -> Series:
    color, dash = CURVE_STYLE.get(curve.kind.value, CURVE_STYLE["other"])
    return Series(
        curve.name, curve.fractions, curve.faithfulness, color, dash, curve.faithfulness_std
    )


def _smallest(entry: Smallest | None) -> str:
    if entry is None:
        return "<h3>Smallest 80%-faithful circuit</h3>" + missing("No size reaches 80%.")
    text = (
        f"{fmt(entry.n_edges)} edges (fraction {fmt(entry.fraction, 4)}), "
        f"faithfulness {fmt(entry.faithfulness)}"
    )
    return f"<h3>Smallest 80%-faithful circuit</h3><p>{esc(text)}</p>"


def _rows_table(rows: Sequence[Sequence[Any]], keys: Sequence[str]) -> str:
    if not rows:
        return missing("Not computed.")
    return table(list(keys), rows, numeric=set(range(1, len(keys))))


def redteam_section(run: RunFiles) -> str:
    part = run.part("redteam.json")
    if not part.ok:
        return missing(part.note())
    data: RedTeam = part.data
    if not data.checks:
        return missing("No checks recorded.")
    return checks_table(data.checks)


def checks_table(checks: Sequence[Check]) -> str:
    """Red-team checks (redteam.json, verification.json): question, verdict, evidence, numbers."""
    rows = []
    for check in checks:
        detail = "; ".join(f"{k} = {fmt(v)}" for k, v in check.numbers.items())
        row = [check.question or check.name, badge(check.verdict.value), check.evidence, detail]
        rows.append(row)
    return table(["question", "verdict", "evidence", "numbers"], rows)
