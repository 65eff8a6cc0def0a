"""Report sections drawn from the run folder's JSON: task, behaviour, localisation, evaluation.

Each `*_section(run)` returns an HTML fragment. Every string from a file is escaped with `esc`;
a missing file gives its "not computed" note instead of the section's body.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from typing import Any

from wildcircuits.report.run_folder import RunFiles
from wildcircuits.report.svg import Series, esc, fmt, heatmap_svg, line_chart_svg

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
def _example_rows(example: Mapping[str, Any]) -> list[list[Any]]:
    rows = [["clean", Raw(prompt(example.get("clean", "")))]]
    for name, text in (example.get("corrupted") or {}).items():
        rows.append([f"corrupted: {name}", Raw(prompt(text))])
    answers = ", ".join(repr(a) for a in example.get("answers") or [])
    distractors = ", ".join(repr(d) for d in example.get("distractors") or [])
    rows.append(["answers / distractors", f"{answers} / {distractors}"])
    return rows


def task_section(run: RunFiles) -> str:
    behaviour, extra = run.part("behaviour.json"), run.part("examples.json")
    name = behaviour.data.get("task") if behaviour.ok else run.config.get("task", "?")
    out = [f"<p><strong>Task:</strong> {esc(name)}"]
    if behaviour.ok and behaviour.data.get("description"):
        out.append(f" &mdash; {esc(behaviour.data['description'])}")
    out.append("</p>")
    examples = list(extra.data.get("examples") or [])[:5] if extra.ok else []
    if not examples and behaviour.ok and behaviour.data.get("example"):
        examples = [behaviour.data["example"]]
    if not examples:
        return "".join(out) + missing("No example prompts: " + behaviour.note())
    for i, example in enumerate(examples):
        out.append(f"<h3>Example {i + 1}</h3>")
        out.append(table(["prompt", "text"], _example_rows(example)))
    return "".join(out)


def behaviour_section(run: RunFiles) -> str:
    part = run.part("behaviour.json")
    if not part.ok:
        return missing(part.note())
    data = part.data
    header = ["distribution", "n", "mean", "std", "accuracy", "normalized", "verdict"]
    rows = [["clean", *_stats(data.get("clean") or {}), badge("baseline")]]
    for name, stats in (data.get("corrupted") or {}).items():
        rows.append([f"corrupted: {name}", *_stats(stats), badge("corruption")])
    for v in data.get("variations") or []:
        verdict = badge(v.get("verdict", "undefined"))
        rows.append([v.get("name", "?"), *_stats(v), verdict])
    thresholds = data.get("thresholds") or {}
    caption = (
        f"Metric {data.get('metric', '?')} (n={data.get('n', '?')}); normalized: clean = 1, "
        f"{data.get('default_corruption', '?')} = 0; holds >= {thresholds.get('holds', '?')}, "
        f"breaks < {thresholds.get('breaks', '?')}."
    )
    figure = next((f for f in ("behaviour.png", "figures/behaviour.png") if run.path(f)), None)
    pic = image(run, figure, "behaviour figure") if figure else missing("No behaviour figure.")
    return (
        table(header, rows, numeric={1, 2, 3, 4, 5})
        + f'<p class="caption">{esc(caption)}</p>'
        + f'<div class="figure-box">{pic}</div>'
    )


def _stats(stats: Mapping[str, Any]) -> list[Any]:
    keys = ("n", "mean", "std", "accuracy", "normalized")
    return [stats.get(k) for k in keys]


# localisation ---------------------------------------------------------------------------------
def _grid(name: str, grid: Mapping[str, Any]) -> str:
    title = GRID_TITLES.get(name) or grid.get("title") or name
    try:
        svg = heatmap_svg(
            grid["values"],
            grid["row_labels"],
            grid["col_labels"],
            grid.get("row_axis", "row"),
            grid.get("col_axis", "column"),
            grid.get("value_label", "score"),
        )
    except (KeyError, TypeError, ValueError) as error:
        return f"<h3>{esc(title)}</h3>" + missing(f"Grid {name} is malformed ({error}).")
    provenance = grid.get("provenance") or {}
    caption = "; ".join(f"{k}={v}" for k, v in provenance.items() if not isinstance(v, dict))
    return (
        f"<h3>{esc(title)}</h3>"
        f'<div class="figure-box">{svg}<p class="caption">{esc(caption)}</p></div>'
    )


def localise_section(run: RunFiles) -> str:
    part = run.part("localise.json")
    if not part.ok:
        return missing(part.note())
    grids = part.data.get("grids") or {}
    order = [n for n in GRID_TITLES if n in grids] + [n for n in grids if n not in GRID_TITLES]
    out = [_grid(name, grids[name]) for name in order if isinstance(grids[name], Mapping)]
    for name in GRID_TITLES:
        if name not in grids:
            out.append(f"<h3>{esc(GRID_TITLES[name])}</h3>" + missing("Not computed."))
    out.append("<h3>Head roles</h3>" + _head_roles(part.data.get("head_roles")))
    out.append(
        "<h3>Attention patterns of key heads</h3>"
        + _patterns(run, part.data.get("attention_patterns"))
    )
    return "".join(out)


def _head_roles(data: Any) -> str:
    if not isinstance(data, Mapping) or not data.get("heads"):
        return missing("Not computed.")
    heads = [h for h in data["heads"] if h.get("labels")]
    if not heads:
        return missing("No head reached a role threshold.")
    skip = {"head", "layer", "index", "labels"}
    roles = [k for k in heads[0] if k not in skip]
    rows = [[h["head"], ", ".join(h["labels"]), *[h.get(r) for r in roles]] for h in heads]
    header = ["head", "labels", *[r.replace("_", " ") for r in roles]]
    return table(header, rows, numeric=set(range(2, 2 + len(roles))))


def _patterns(run: RunFiles, patterns: Any) -> str:
    if not patterns:
        return missing("Not computed.")
    out = []
    for entry in patterns:
        head, why = entry.get("head", "?"), entry.get("why", "")
        title = (
            f"{head}" + (f" ({why})" if why else "") + f", prompt {entry.get('prompt_index', 0)}"
        )
        body = missing("No pattern data.")
        if entry.get("pattern") and entry.get("tokens"):
            tokens = [f"{i}:{t}" for i, t in enumerate(entry["tokens"])]
            body = heatmap_svg(
                entry["pattern"], tokens, tokens, "query", "key", "attention", diverging=False
            )
        elif entry.get("figure"):
            body = image(run, entry["figure"], f"attention pattern of {head}")
        out.append(f'<div><h3>{esc(title)}</h3><div class="figure-box">{body}</div></div>')
    return f'<div class="grid-pair">{"".join(out)}</div>'


# evaluation -----------------------------------------------------------------------------------
def faithfulness_section(run: RunFiles) -> str:
    part = run.part("metrics.json")
    if not part.ok:
        return missing(part.note())
    data = part.data
    curves = [c for c in data.get("curves") or [] if isinstance(c, Mapping)]
    out = []
    if curves:
        series = [_series(c) for c in curves]
        chart = line_chart_svg(
            series,
            "circuit size (fraction of edges, log scale)",
            "normalized faithfulness",
            reference_lines=[(1.0, "full model"), (0.8, "80%")],
        )
        out.append(f'<div class="figure-box">{chart}</div>')
        rows = [
            [c.get("name"), c.get("kind"), c.get("cpr"), c.get("cmd"), c.get("log_area")]
            for c in curves
        ]
        out.append(table(["curve", "kind", "CPR", "CMD", "log-area"], rows, numeric={2, 3, 4}))
    else:
        out.append(missing("No faithfulness curve."))
    out.append(_smallest(data.get("smallest_80")))
    out.append(
        "<h3>Ablation-type sensitivity</h3>"
        + _rows_table(data.get("ablation_sensitivity"), ["ablation", "n_edges", "faithfulness"])
    )
    out.append(
        "<h3>Held-out split</h3>"
        + _rows_table(data.get("held_out"), ["split", "n", "n_edges", "faithfulness"])
    )
    keys = ("method", "metric", "ablation", "split")
    caption = "; ".join(f"{k}={data[k]}" for k in keys if data.get(k) is not None)
    out.append(f'<p class="caption">{esc(caption)}</p>')
    return "".join(out)


def _series(curve: Mapping[str, Any]) -> Series:
    color, dash = CURVE_STYLE.get(str(curve.get("kind")), CURVE_STYLE["other"])
    xs = curve.get("fractions") or []
    return Series(
        str(curve.get("name", "?")),
        xs,
        curve.get("faithfulness") or [None] * len(xs),
        color,
        dash,
        curve.get("faithfulness_std"),
    )


def _smallest(entry: Any) -> str:
    if entry is None:
        return "<h3>Smallest 80%-faithful circuit</h3>" + missing("No size reaches 80%.")
    if not isinstance(entry, Mapping):
        return ""
    text = (
        f"{fmt(entry.get('n_edges'))} edges (fraction {fmt(entry.get('fraction'), 4)}), "
        f"faithfulness {fmt(entry.get('faithfulness'))}"
    )
    return f"<h3>Smallest 80%-faithful circuit</h3><p>{esc(text)}</p>"


def _rows_table(rows: Any, keys: Sequence[str]) -> str:
    if not rows:
        return missing("Not computed.")
    body = [[row.get(k) for k in keys] for row in rows if isinstance(row, Mapping)]
    return table(list(keys), body, numeric=set(range(1, len(keys))))


def redteam_section(run: RunFiles) -> str:
    part = run.part("redteam.json")
    if not part.ok:
        return missing(part.note())
    checks = part.data.get("checks") or []
    if not checks:
        return missing("No checks recorded.")
    rows = []
    for check in checks:
        numbers = check.get("numbers") or {}
        detail = "; ".join(f"{k} = {fmt(v)}" for k, v in numbers.items())
        rows.append(
            [
                check.get("question") or check.get("name"),
                badge(check.get("verdict", "?")),
                check.get("evidence", ""),
                detail,
            ]
        )
    return table(["question", "verdict", "evidence", "numbers"], rows)
