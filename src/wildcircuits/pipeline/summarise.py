"""Step 6: the circuit as node roles, each with the evidence for it (roles.json).

A head's role is its first head-role label (localise.json, thresholds stated there); evidence
lists that score, the head's direct logit effect and its patching effect. MLPs are described by
their direct logit effect. Heads with no label are "unlabelled": the report says so rather than
inventing a role.
"""

from __future__ import annotations

from typing import Any

from wildcircuits.names import NodeKind, parse_node
from wildcircuits.pipeline.context import Context
from wildcircuits.results import load_json, save_json

PHRASES = {
    "name mover": "move the answer name to the output",
    "negative name mover": "push the answer down (negative name movers)",
    "distractor suppression": "suppress the distractor",
    "induction head": "are induction-like heads",
    "previous token head": "attend to the previous token",
    "duplicate token head": "attend to earlier copies of the current token",
    "copying": "copy the token they attend to (OV circuit)",
    "copy suppression": "suppress the token they attend to (OV circuit)",
}


def _grid_lookup(grid: dict[str, Any]) -> dict[str, float]:
    out = {}
    for row, values in zip(grid["row_labels"], grid["values"], strict=True):
        for col, value in zip(grid["col_labels"], values, strict=True):
            out[f"{row}.{col}"] = value
    return out


def summarise(ctx: Context) -> list[str]:
    from wildcircuits.graph.mib import load_mib_json

    localise = load_json(ctx.folder.path("localise.json"))
    metrics = load_json(ctx.folder.path("metrics.json"))
    circuit = load_mib_json(ctx.folder.path("circuit.json"), ctx.engine.graph).circuit
    dla = _grid_lookup(localise["grids"]["dla_head"])
    patch = _grid_lookup(localise["grids"]["patch_head"])
    dla_layer = _grid_lookup(localise["grids"]["dla_layer"])
    rows = {row["head"]: row for row in localise["head_roles"]["heads"]}
    nodes: dict[str, dict[str, Any]] = {}
    for node in circuit.nodes():
        if node.kind is NodeKind.HEAD:
            nodes[node.name] = _head_entry(node.display, rows, dla, patch)
        elif node.kind is NodeKind.MLP:
            value = dla_layer.get(node.display)  # grid keys are row.col: L3.mlp
            nodes[node.name] = {"role": "MLP", "evidence": "direct logit effect "
                                + ("n/a" if value is None else f"{value:+.2f}"),
                                "scores": {"dla": value}}  # fmt: skip
    data = {
        "provenance": ctx.provenance(ctx.test, split="test"),
        "summary": _sentences(nodes, circuit, metrics),
        "nodes": nodes,
    }
    save_json(ctx.folder.path("roles.json"), data)
    return ["roles.json"]


def _head_entry(name: str, rows, dla, patch) -> dict[str, Any]:
    row = rows.get(name, {})
    labels = row.get("labels", [])
    role = labels[0] if labels else "unlabelled"
    score_key = role.replace(" head", "").replace(" ", "_").replace("negative_", "")
    parts = []
    if role != "unlabelled" and score_key in row:
        parts.append(f"{role} score {row[score_key]:.2f}")
    if dla.get(name) is not None:
        parts.append(f"direct logit effect {dla[name]:+.2f}")
    if patch.get(name) is not None:
        parts.append(f"patching effect {patch[name]:.2f}")
    return {"role": role, "labels": labels, "evidence": "; ".join(parts),
            "scores": {"dla": dla.get(name), "patching": patch.get(name),
                       **{k: v for k, v in row.items() if isinstance(v, float)}}}  # fmt: skip


def _sentences(nodes: dict[str, dict[str, Any]], circuit, metrics) -> list[str]:
    by_role: dict[str, list[str]] = {}
    for name, entry in nodes.items():
        by_role.setdefault(entry["role"], []).append(name)
    selected = metrics["selected"]
    heads = [n for n in nodes if nodes[n]["role"] != "MLP"]
    lines = [
        f"The selected circuit has {circuit.n_edges} edges ({selected['fraction']:.3%} of the "
        f"graph) among {len(heads)} heads and {len(by_role.get('MLP', []))} MLPs; it keeps "
        f"{selected['faithfulness']:.2f} of the effect on the held-out test split."
    ]
    for role, phrase in PHRASES.items():
        names = by_role.get(role, [])
        if not names:
            continue
        shown = ", ".join(_display(n) for n in names[:6])
        evidence = "; ".join(f"{_display(n)}: {nodes[n]['evidence']}" for n in names[:3])
        lines.append(f"{shown} {phrase} ({evidence}).")
    unlabelled = by_role.get("unlabelled", [])
    if unlabelled:
        lines.append(f"{len(unlabelled)} heads in the circuit match no role pattern: "
                     + ", ".join(_display(n) for n in unlabelled[:8]) + ".")  # fmt: skip
    return lines


def _display(node_name: str) -> str:
    """a14.h3 -> L14.H3; m5 -> L5.mlp."""
    return parse_node(node_name).display
