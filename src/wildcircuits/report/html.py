"""`report.html`: one self-contained page built from a run folder's saved files alone.

    from wildcircuits.report.html import build_report
    build_report("runs/ioi")            # writes runs/ioi/report.html; no model is loaded

Scripts, styles, data and PNG figures are inlined (data URIs); nothing is fetched. Every string
from prompts, tokens or task files is escaped, and the JSON given to the page script has `<`, `>`
and `&` written as `\\u003c`-style escapes, so no file content can close the `<script>` element.
The schema of the run folder is docs/run_folder.md.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

from wildcircuits.names import head_node
from wildcircuits.report.explain_view import explanation_section
from wildcircuits.report.graph_view import (
    GraphView,
    build_graph_view,
    size_label,
)
from wildcircuits.report.run_folder import PartState, RunFiles, read_run, scores_from_pt
from wildcircuits.report.sections import (
    badge,
    behaviour_section,
    faithfulness_section,
    image,
    localise_section,
    missing,
    redteam_section,
    table,
    task_section,
)
from wildcircuits.report.svg import esc, fmt
from wildcircuits.report.verify_view import headline, verification_section
from wildcircuits.results import atomic_write_bytes
from wildcircuits.results.behaviour import ProbeResult
from wildcircuits.results.circuits import CircuitFile
from wildcircuits.results.localise import Localise
from wildcircuits.results.metrics import Metrics
from wildcircuits.results.verdicts import NodeRole, Roles

SECTIONS = (
    ("explain", "How the model does it"),
    ("verify", "Does the explanation hold?"),
    ("task", "Task and example prompts"),
    ("behaviour", "Behaviour"),
    ("localise", "Localisation"),
    ("circuit", "Circuit"),
    ("roles", "Node roles"),
    ("faithfulness", "Faithfulness"),
    ("redteam", "Red team"),
    ("provenance", "Settings and provenance"),
    ("figures", "Other figures"),
)
PROVENANCE_KEYS = (
    "task",
    "model",
    "quantization",
    "method",
    "metric",
    "ablation",
    "split",
    "seed",
    "n_examples",
    "device",
)


def script_json(data: Any) -> str:
    """JSON safe inside `<script>`: no `</script>`, `<!--` or `&` can appear literally."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    return text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _asset(name: str) -> str:
    return resources.files("wildcircuits.report").joinpath("assets", name).read_text("utf-8")


def _roles(run: RunFiles) -> dict[str, NodeRole]:
    """node name -> role: roles.json, else the first head-role label (localise.json)."""
    roles: Roles | None = run.result("roles.json")
    if roles is not None:
        return dict(roles.nodes)
    localise: Localise | None = run.result("localise.json")
    heads = localise.head_roles.heads if localise and localise.head_roles else ()
    evidence = "head-role scores (localise.json)"
    return {
        head_node(row.layer, row.index).name: NodeRole(row.labels[0], evidence)
        for row in heads
        if row.labels
    }


def _graph(run: RunFiles) -> GraphView | None:
    circuit: CircuitFile | None = run.result("circuit.json")
    if circuit is None:
        return None
    return build_graph_view(
        circuit,
        run.result("circuit_sizes.json"),
        _roles(run),
        lambda names: {} if "discover" in run.stale else scores_from_pt(run.root, names),
    )


def _graph_total(run: RunFiles) -> int | None:
    """Edges of the full graph, for percentages (from circuit.json's cfg)."""
    from wildcircuits.graph.circuit import graph_from_config

    cfg = run.result("circuit.json").cfg
    try:
        return graph_from_config(cfg).n_edges
    except (KeyError, TypeError, ValueError):
        return None


def circuit_section(run: RunFiles, view: GraphView | None) -> str:
    if view is None:
        return missing(run.part("circuit.json").note())
    total = _graph_total(run)
    labels = [size_label(s, total) for s in view.sizes]
    sizes_part = run.part("circuit_sizes.json")
    slider = (
        f'<input id="size-slider" type="range" min="0" max="{len(view.sizes) - 1}" step="1" '
        f'value="{view.selected}" aria-label="circuit size">'
    )
    if len(view.sizes) < 2:
        slider = f'<span class="note no-print">{esc(sizes_part.note())}</span>'
    legend = "".join(
        f'<span><span class="swatch" style="background:{color}"></span>{esc(role)}</span>'
        for role, color in view.roles.items()
    )
    legend += (
        '<span class="note">edge width and opacity: |score|; blue positive, red negative; '
        "solid q or MLP / logits input, dashed k, dotted v</span>"
    )
    skipped = ""
    if view.skipped:
        skipped = missing(f"{len(view.skipped)} names are not graph nodes/edges and were left out.")
    return (
        f'<div class="slider-row"><label for="size-slider">Circuit size</label>{slider}'
        f'<span id="edge-count">{esc(labels[view.selected])}</span>'
        f'<span id="node-count" class="note">{view.n_nodes} nodes</span></div>'
        f'<div class="legend">{legend}</div>{skipped}'
        f'<div class="figure-box">{view.svg}</div>'
        '<p class="caption">Layers run top to bottom; hover a node or an edge for its scores. '
        "The page starts at the selected circuit (circuit.json); printed, it shows the size "
        "chosen on the slider.</p>"
    )


def roles_section(run: RunFiles) -> str:
    part = run.part("roles.json")
    if not part.ok:
        return missing(part.note())
    data: Roles = part.data
    out = []
    if data.summary:
        out.append("<ul>" + "".join(f"<li>{esc(s)}</li>" for s in data.summary) + "</ul>")
    rows = [[_pretty(name), e.role, e.evidence] for name, e in data.nodes.items()]
    out.append(table(["node", "role", "evidence"], rows) if rows else "")
    return "".join(out)


def _pretty(name: str) -> str:
    from wildcircuits.errors import GraphError
    from wildcircuits.names import parse_node

    try:
        return parse_node(name).display
    except GraphError:
        return name


def _settings(run: RunFiles) -> dict[str, Any]:
    """The provenance keys the issue names, from config, manifest and the result files."""
    manifest = run.manifest
    found: dict[str, Any] = {"model": manifest.model_id, "quantization": manifest.quantization}
    sources: list[Mapping[str, Any]] = [run.config.to_dict()]
    metrics: Metrics | None = run.result("metrics.json")
    if metrics is not None:
        sources += [metrics.settings(), metrics.provenance]
    behaviour: ProbeResult | None = run.result("behaviour.json")
    if behaviour is not None:
        sources += [{"task": behaviour.task, "metric": behaviour.metric}, behaviour.provenance]
    for key in PROVENANCE_KEYS:
        for source in sources:
            if found.get(key) in (None, "") and source.get(key) not in (None, ""):
                found[key] = source[key]
    return found


def provenance_section(run: RunFiles) -> str:
    settings = _settings(run)
    out = [table(["setting", "value"], [[k, settings.get(k)] for k in PROVENANCE_KEYS])]
    manifest = run.manifest
    facts = [
        ["package version", manifest.package_version],
        ["git commit", manifest.git_commit],
        ["created", manifest.created],
        ["seeds", json.dumps(manifest.seeds)],
    ]
    out.append("<h3>Provenance</h3>" + table(["", ""], facts))
    rows = [
        [name, badge(s.state.value), _seconds(s.seconds), s.token_forwards, s.error or ""]
        for name, s in manifest.steps.items()
    ]
    out.append(
        "<h3>Steps</h3>"
        + (
            table(["step", "state", "seconds", "token-forwards", "error"], rows, {2, 3})
            if rows
            else missing("No steps recorded.")
        )
    )
    config_rows = [
        [k, v if isinstance(v, str | int | float) else json.dumps(v)]
        for k, v in run.config.to_dict().items()
    ]
    out.append(
        "<h3>config.json (everything needed to rerun)</h3>" + table(["key", "value"], config_rows)
    )
    return "".join(out)


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def figures_section(run: RunFiles) -> str:
    folder = run.root / "figures"
    named = _named_figures(run)
    pngs = sorted(p for p in folder.glob("*.png") if f"figures/{p.name}" not in named)
    if not pngs:
        return missing("No other figures.")
    items = [f"<h3>{esc(p.name)}</h3>{image(run, f'figures/{p.name}', p.stem)}" for p in pngs]
    return "".join(items)


def _named_figures(run: RunFiles) -> set[str]:
    localise: Localise | None = run.result("localise.json")
    patterns = localise.attention_patterns if localise else ()
    return {p.figure for p in patterns if p.figure} | {"figures/behaviour.png"}


#: Sections shown only where their file exists (not "not computed" in every other run).
ONLY_WITH = {"explain": "explanation.json", "verify": "verification.json"}


def _sections(run: RunFiles) -> tuple[tuple[str, str], ...]:
    """The sections shown: "How the model does it" only where explanation.json exists,
    "Does the explanation hold?" only where verification.json does."""
    return tuple(
        (key, title)
        for key, title in SECTIONS
        if key not in ONLY_WITH or run.part(ONLY_WITH[key]).state is not PartState.MISSING
    )


def explain_section(run: RunFiles) -> str:
    part = run.part("explanation.json")
    return explanation_section(part.data) if part.ok else missing(part.note())


def verify_section(run: RunFiles) -> str:
    part = run.part("verification.json")
    return verification_section(part.data) if part.ok else missing(part.note())


def _header(run: RunFiles) -> str:
    settings = _settings(run)
    title = f"{settings.get('task') or 'task'} on {settings.get('model') or 'model'}"
    subtitle = f"method {fmt(settings.get('method'))}, ablation {fmt(settings.get('ablation'))}"
    out = [f"<h1>wildcircuits: {esc(title)}</h1><p class='subtitle'>{esc(subtitle)}</p>"]
    verification = run.result("verification.json")
    if verification is not None:  # the opening sentence states the verdict
        out.append(f'<p class="headline" id="headline"><b>{esc(headline(verification))}</b></p>')
    stopped = run.manifest.stopped
    if stopped is not None:
        text = f"The run stopped at step {stopped.step}: {stopped.reason}"
        out.append(f'<div class="banner">{esc(text)}</div>')
    if run.notice():
        out.append(f'<div class="banner banner-stale">{esc(run.notice())}</div>')
    links = "".join(f'<a href="#{key}">{esc(title)}</a>' for key, title in _sections(run))
    out.append(f'<nav class="toc">{links}</nav>')
    return "".join(out)


def render_report(run: RunFiles) -> str:
    """The whole page as a string."""
    view = _graph(run)
    shown = _sections(run)
    keys = {key for key, _ in shown}
    bodies = {
        "explain": explain_section(run) if "explain" in keys else "",
        "verify": verify_section(run) if "verify" in keys else "",
        "task": task_section(run),
        "behaviour": behaviour_section(run),
        "localise": localise_section(run),
        "circuit": circuit_section(run, view),
        "roles": roles_section(run),
        "faithfulness": faithfulness_section(run),
        "redteam": redteam_section(run),
        "provenance": provenance_section(run),
        "figures": figures_section(run),
    }
    major = {"explain", "verify", "localise", "circuit", "faithfulness"}
    sections = "".join(
        f'<section id="{key}" class="{"major" if key in major else ""}"><h2>{esc(title)}</h2>'
        f"{bodies[key]}</section>"
        for key, title in shown
    )
    data = {"graph": None}
    if view is not None:
        total = _graph_total(run)
        data["graph"] = view.slider_data() | {"labels": [size_label(s, total) for s in view.sizes]}
    head_title = esc(_settings(run).get("task") or "run")
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>wildcircuits report: {head_title}</title><style>{_asset('report.css')}</style>"
        f"</head><body><main>{_header(run)}{sections}</main>"
        '<div id="wc-tooltip" hidden></div>'
        f'<script type="application/json" id="wc-data">{script_json(data)}</script>'
        f"<script>{_asset('report.js')}</script></body></html>\n"
    )


def build_report(run_dir: Path | str, out: Path | str | None = None) -> Path:
    """Write `RUN_DIR/report.html` (or `out`) atomically from the saved files; returns its path."""
    run = read_run(run_dir)
    path = Path(out) if out is not None else run.root / "report.html"
    atomic_write_bytes(path, render_report(run).encode("utf-8"))
    path.chmod(0o644)  # a page to share: readable by others, unlike the temp file's 0600
    return path


__all__ = ["build_report", "render_report", "script_json"]
