"""The report's first section, "How the model does it", from explanation.json alone.

`explanation_section(explanation)`: a summary line (the compact circuit's size and
faithfulness), the class diagram (`class_diagram_svg`), one sentence per class with its
evidence, the algorithm in words, the backup heads, the unexplained pairs, and the measured
arrows as a table. `explanation_html(explanation)` is the same as a notebook fragment
(`Explanation._repr_html_`). No script, every string escaped (`esc`), numbers through `fmt`.
"""

from __future__ import annotations

from collections.abc import Sequence

from wildcircuits.explanation.algorithm import ARROW_THRESHOLD
from wildcircuits.report.class_diagram import class_diagram_svg
from wildcircuits.report.svg import esc, fmt
from wildcircuits.results.explain import Backup, ClassPath, Explanation, HeadClass, PositionCircuit

#: Evidence numbers shown per class (the rest are in explanation.json).
EVIDENCE_SHOWN = 6


def _table(header: Sequence[str], rows: Sequence[Sequence[object]], numeric=frozenset()) -> str:
    head = "".join(f"<th>{esc(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f'<td class="num">{esc(fmt(c))}</td>' if i in numeric else f"<td>{esc(fmt(c))}</td>"
            for i, c in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _summary(circuit: PositionCircuit, classes: Sequence[HeadClass], paths) -> str:
    faith = "; ".join(
        f"{f.ablation}: {fmt(f.faithfulness)} ({f.split}, {f.n_prompts} prompts)"
        for f in circuit.faithfulness
    )
    heads = len({p.node for c in classes for p in c.members})
    reached = "reaches" if circuit.reached else "does not reach"
    searched = ""
    if circuit.search_target is not None:
        under = ", ".join(circuit.searched_under or ()) or "no ablation: every candidate kept"
        searched = f" (searched at {fmt(circuit.search_target, 2)}; reached there under {under})"
    return (
        f"<p>{len(classes)} classes of {heads} components; {len(paths)} measured paths. "
        f"The compact circuit has {circuit.n_heads} heads and {circuit.n_mlps} MLPs "
        f"({len(circuit.pairs)} component-position pairs) and {esc(reached)} the held-out "
        f"target faithfulness {fmt(circuit.target, 2)}{esc(searched)}: "
        f"{esc(faith) or 'n/a'}.</p>"
    )


def _evidence(c: HeadClass) -> str:
    items = list(c.evidence.items())[:EVIDENCE_SHOWN]
    more = len(c.evidence) - len(items)
    text = ", ".join(f"{k} {fmt(v)}" for k, v in items) + (f", {more} more" if more > 0 else "")
    return f'<br><span class="note">{esc(text)}</span>' if text else ""


def _classes(classes: Sequence[HeadClass]) -> str:
    items = "".join(
        f"<li><b>{esc(c.name)}</b>"
        + (f" ({esc(c.paper_class)})" if c.paper_class and c.paper_class != c.name else "")
        + f": {esc(', '.join(p.name for p in c.members))}. {esc(c.sentence)}{_evidence(c)}</li>"
        for c in classes
    )
    return f'<ul class="class-list">{items}</ul>'


def _backup(backup: Backup | None) -> str:
    if backup is None:
        return '<p class="missing">No backup measurement.</p>'
    rows = [[h.node, h.direct_before, h.direct_after] for h in backup.heads]
    text = (
        f"Knocking out {backup.knocked_out} (direct effect {fmt(backup.knocked_out_effect)}): "
        f"{len(backup.heads)} heads' direct effect rises, restoring {fmt(backup.restored)} of it."
    )
    table = _table(["head", "direct effect before", "after"], rows, {1, 2}) if rows else ""
    return f"<p>{esc(text)}</p>{table}"


def _paths(paths: Sequence[ClassPath]) -> str:
    if not paths:
        return '<p class="missing">No paths measured.</p>'
    rows = [
        [
            p.sender,
            p.receiver,
            p.slot,
            p.position,
            p.effect,
            "" if p.interval is None else f"{fmt(p.interval[0])} .. {fmt(p.interval[1])}",
        ]
        for p in sorted(paths, key=lambda p: -abs(p.effect))
    ]
    table = _table(["sender", "receiver", "slot", "at", "effect", "95% interval"], rows, {4})
    return f"<details><summary>All {len(paths)} measured paths</summary>{table}</details>"


def explanation_section(explanation: Explanation) -> str:
    """The "How the model does it" section body (HTML fragment)."""
    e = explanation
    names = ", ".join(p.name for p in e.unexplained)
    unexplained = f"<p>Unexplained (in the circuit, no class): {esc(names)}.</p>" if names else ""
    algorithm = "".join(f"<li>{esc(s)}</li>" for s in e.algorithm)
    return (
        _summary(e.circuit, e.classes, e.paths)
        + f'<div class="figure-box">{class_diagram_svg(e)}</div>'
        + '<p class="caption">Boxes: functional classes with their members at positions, by '
        "median layer, top to bottom. Arrows: path patching from every member of one class into "
        "the next class's q / k / v (at its members' positions) or into the logits; width: "
        "|effect|; blue supports the answer, red opposes it; solid q / logits, dashed k, dotted "
        f"v; grey: |effect| below {fmt(ARROW_THRESHOLD, 2)}. The edge graph (Circuit) is the "
        "detail view.</p>"
        + "<h3>The algorithm</h3>"
        + (f"<ol>{algorithm}</ol>" if algorithm else '<p class="missing">Not stated.</p>')
        + "<h3>What each class does</h3>"
        + _classes(e.classes)
        + unexplained
        + "<h3>Backup heads</h3>"
        + _backup(e.backup)
        + _paths(e.paths)
    )


def explanation_html(explanation: Explanation) -> str:
    """A notebook fragment: the section with its own scoped font, no script or stylesheet."""
    style = "font-family:sans-serif;font-size:12px;max-width:100%;overflow-x:auto"
    return (
        f'<div class="wildcircuits" style="{style}"><b>How the model does it</b>'
        f"{explanation_section(explanation)}</div>"
    )


__all__ = ["explanation_html", "explanation_section"]
