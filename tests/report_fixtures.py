"""A synthetic but well-formed run folder (docs/run_folder.md), by default on a tiny Graph(3, 2),
written through the result types (wildcircuits.results), as the pipeline writes it.

Strings that reach the page carry HTML / script injections, so tests can check they arrive as text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from wildcircuits.explanation.algorithm import describe_algorithm
from wildcircuits.graph.circuit import Circuit, EdgeScores, graph_config
from wildcircuits.graph.graph import Graph
from wildcircuits.patching.grid import ScoreGrid, head_labels, layer_labels, position_labels
from wildcircuits.pipeline.config import STEPS
from wildcircuits.results import explain as x
from wildcircuits.results import metrics as m
from wildcircuits.results import save_json
from wildcircuits.results.behaviour import (
    Example,
    Examples,
    ProbeResult,
    Stats,
    VariationResult,
    Verdict,
)
from wildcircuits.results.circuits import CircuitFile, CircuitSizes, Member, SizeEntry
from wildcircuits.results.localise import AttentionPattern, HeadRoleRow, HeadRoleTable, Localise
from wildcircuits.results.manifest import Manifest, StepRecord, StepState
from wildcircuits.results.verdicts import Check, CheckVerdict, NodeRole, RedTeam, Roles
from wildcircuits.tasks.probe_output import write_probe

HOSTILE_PROMPT = 'When <script>alert("prompt")</script> and Mary went to the store, John gave'
HOSTILE_TOKEN = "</script><script>alert('token')</script>"
HOSTILE_EVIDENCE = "<img src=x onerror=alert('evidence')> attends to IO"
HOSTILE_CLASS = "<b>moves S2</b> to END"
FRACTIONS = (0.05, 0.1, 0.2, 0.5, 1.0)
SELECTED = 1
PROVENANCE = {
    "model": "tiny-test-model",
    "quantization": "none (synthetic)",
    "metric": "logit_diff",
    "task": "ioi-hostile",
    "split": "test",
    "seed": 0,
    "method": "eap-ig",
    "ablation": "counterfactual",
}


def _stats(mean: float, normalized: float) -> Stats:
    return Stats(8, mean, 0.5, mean, 0.9 if normalized > 0.5 else 0.1, 0.8, None, None, normalized)


def _behaviour(root: Path) -> None:
    clean, corrupt = _stats(3.2, 1.0), _stats(0.1, 0.0)
    variation = VariationResult(
        "template=BABA", "a <b>bold</b> variation", 4, 2.9, 0.4, 0.9, 0.8, None, 0.9, Verdict.HOLDS
    )
    result = ProbeResult(
        task="ioi-hostile",
        description="IOI with a <script> in its prompt",
        model={"model_id": "tiny-test-model", "quantization": "none (synthetic)"},
        provenance={
            "seed": 0,
            "split": "all",
            "model_id": "tiny-test-model",
            "quantization": "none (synthetic)",
            "metric": "logit_diff",
        },
        n=8,
        metric="logit_diff",
        higher_is_better=True,
        default_corruption="ABC",
        clean=clean,
        corrupted={"ABC": corrupt},
        variations=[variation],
        example=Example(HOSTILE_PROMPT, {"ABC": "When Anna and Bob went"}, (" Mary",), (" John",)),
    )
    write_probe(result, root)


def _grid(name: str, values: torch.Tensor, rows: list[str], cols: list[str], col_axis: str):
    return ScoreGrid(name, name, values, "layer", col_axis, rows, cols, PROVENANCE).saved()


def _localise(root: Path, graph: Graph) -> None:
    g = torch.Generator().manual_seed(1)
    tokens = ["When", " Mary", HOSTILE_TOKEN, " John", " gave"]
    layers, heads = layer_labels(graph.n_layers), head_labels(graph.n_heads)
    head_grid = torch.randn(graph.n_layers, graph.n_heads, generator=g)
    grids = {
        "dla_layer": _grid(
            "dla_layer",
            torch.randn(graph.n_layers, 2, generator=g),
            layers,
            ["attn", "mlp"],
            "part",
        ),
        "dla_head": _grid("dla_head", head_grid, layers, heads, "head"),
        "patch_layer_pos": _grid(
            "patch_layer_pos",
            torch.randn(graph.n_layers, 5, generator=g),
            layers,
            position_labels(tokens),
            "position",
        ),
        "patch_head": _grid("patch_head", head_grid.flip(0), layers, heads, "head"),
    }
    heads_rows = tuple(
        HeadRoleRow(
            head=f"L{layer}.H{h}",
            layer=layer,
            index=h,
            scores={"name_mover": float(head_grid[layer, h]), "induction": 0.1 * h},
            labels=("name mover",) if head_grid[layer, h] > 0.5 else (),
        )
        for layer in range(graph.n_layers)
        for h in range(graph.n_heads)
    )
    pattern = torch.softmax(torch.randn(5, 5, generator=g), -1).tril()
    pattern = pattern / pattern.sum(-1, keepdim=True)
    patterns = (
        AttentionPattern(
            "L2.H1", "top <name> mover", 0, tuple(tokens), tuple(map(tuple, pattern.tolist()))
        ),
        AttentionPattern("L1.H0", "figure only", 0, figure="figures/pattern_L1_H0_p0.png"),
    )
    roles = HeadRoleTable({"name_mover": 0.5}, heads_rows)
    Localise(
        provenance=PROVENANCE, grids=grids, head_roles=roles, attention_patterns=patterns
    ).save(root / "localise.json")


def _figures(root: Path) -> None:
    from wildcircuits.report.figures import save_attention_pattern, save_lines

    save_attention_pattern(
        torch.eye(3).numpy(), ["a", "b", "c"], root / "figures" / "pattern_L1_H0_p0", "L1.H0", {}
    )
    save_lines([0.1, 1.0], {"x": [0.2, 1.0]}, root / "figures" / "extra_curve", "extra", "k", "f")


def _circuits(root: Path, graph: Graph, fractions: tuple[float, ...]) -> dict[str, Any]:
    g = torch.Generator().manual_seed(0)
    scores = EdgeScores(
        graph,
        torch.randn(graph.n_receivers, graph.n_senders, generator=g) ** 3,  # a few large scores
        "eap-ig",
        {"steps": 5},
        PROVENANCE,
    )
    scores.save(root / "scores.pt")
    ranked = [name for name, _ in scores.top(graph.n_edges)]
    sizes, circuits = [], []
    for fraction in fractions:
        n = max(1, round(fraction * graph.n_edges))
        circuits.append(Circuit.from_edges(graph, ranked[:n]))
        faithfulness = round(0.35 + 0.6 * len(sizes) / max(len(fractions) - 1, 1), 3)
        sizes.append(SizeEntry(fraction, n, tuple(ranked[:n]), faithfulness))
    CircuitSizes(PROVENANCE, tuple(sizes), SELECTED).save(root / "circuit_sizes.json")
    chosen = circuits[SELECTED]
    in_nodes = {n.name for n in chosen.nodes()}
    in_edges = {e.name for e in chosen.edge_list()}
    all_nodes = {n.name for n in Circuit.full(graph).nodes()}
    mib = CircuitFile(
        cfg=graph_config(graph) | {"d_model": 8},
        nodes={n: Member(n in in_nodes) for n in sorted(all_nodes)},
        edges={e.name: Member(e.name in in_edges, scores.of(e)) for e in graph.edges},
    )
    mib.save(root / "circuit.json")
    union = set().union(*({n.name for n in c.nodes()} for c in circuits)) | in_nodes
    heads = [n.name for n in chosen.heads()]
    return {
        "circuit_nodes": len(in_nodes),
        "graph_nodes": len(union),
        "sizes": [{"n_edges": s.n_edges, "edges": list(s.edges)} for s in sizes],
        "heads": heads,
    }


def _metrics(sizes: list[dict[str, Any]]) -> m.Metrics:
    fractions = FRACTIONS
    n_edges = tuple(s["n_edges"] for s in sizes)
    method = m.Curve(
        name="eap-ig",
        kind=m.CurveKind.METHOD,
        fractions=fractions,
        n_edges=n_edges,
        faithfulness=(0.3, 0.55, 0.85, 0.95, 1.0),
        cpr=0.9,
        cmd=0.1,
        log_area=0.7,
    )
    random = m.Curve(
        name="random",
        kind=m.CurveKind.RANDOM,
        fractions=fractions,
        n_edges=n_edges,
        faithfulness=(0.0, 0.05, 0.1, 0.4, 1.0),
        faithfulness_std=(0.02, 0.05, 0.05, 0.1, 0.0),
    )
    return m.Metrics(
        provenance=PROVENANCE,
        method="eap-ig",
        metric="logit_diff",
        ablation="counterfactual",
        split="test",
        curves=(method, random),
        smallest_80=m.Smallest(fraction=0.2, n_edges=3, faithfulness=0.85),
        selected=m.Selected(fraction=0.2, n_edges=3, faithfulness=0.85),
        ablation_sensitivity=(m.SensitivityPoint(ablation="mean", n_edges=3, faithfulness=0.7),),
        held_out=(m.HeldOutPoint(split="test", n=8, n_edges=3, faithfulness=0.8),),
    )


def _results(root: Path, facts: dict[str, Any]) -> None:
    _metrics(facts["sizes"]).save(root / "metrics.json")
    checks = (
        Check(
            "random_circuit",
            "Does a random circuit of the same size do as well?",
            CheckVerdict.PASS,
            "circuit 0.85, random 0.10",
            {"random": 0.1},
        ),
        Check(
            "single_component",
            "Does one head carry most of the effect?",
            CheckVerdict.WARN,
            HOSTILE_EVIDENCE,
            {"top_share": 0.6},
        ),
    )
    RedTeam(PROVENANCE, checks).save(root / "redteam.json")
    nodes = _more_roles(facts["heads"]) | {
        "a2.h1": NodeRole("name mover", HOSTILE_EVIDENCE),
        "a0.h0": NodeRole("previous token", "attends to pos-1 (0.9)"),
        "m1": NodeRole("MLP", "large DLA"),
    }
    Roles(PROVENANCE, ("L2.H1 moves the answer name <b>not bold</b>.",), nodes).save(
        root / "roles.json"
    )
    examples = (
        Example(HOSTILE_PROMPT, {"ABC": "When Anna and Bob went"}, (" Mary",), (" John",)),
        Example(
            "When John and Mary went to the park, Mary gave a ball to",
            {"ABC": "When Ann and Sue went to the park, Tom gave a ball to"},
            (" John",),
            (" Mary",),
        ),
    )
    Examples(PROVENANCE, examples).save(root / "examples.json")


def _pairs(*names: str) -> tuple[x.Pair, ...]:
    return tuple(x.Pair(*n.split("@")) for n in names)


def synthetic_explanation() -> x.Explanation:
    """Four classes on Graph(3, 2) (three IOI-paper classes, one descriptive with a hostile
    name), eight measured paths (two below the arrow threshold), a backup measurement."""
    classes = (
        x.HeadClass("duplicate token", "duplicate token", _pairs("L0.H0@S2", "L0.H1@S2"),
                    "attend from S2 to S1 (0.8)", {"attention_to_S1": 0.8, "direct_effect": 0.01}),
        x.HeadClass("S-inhibition", "S-inhibition", _pairs("L1.H0@END"),
                    "attend from END to S2 (0.6)", {"attention_to_S2": 0.6}),
        x.HeadClass(HOSTILE_CLASS, None, _pairs("L1.H1@END"), HOSTILE_EVIDENCE, {"copying": -0.2}),
        x.HeadClass("name mover", "name mover", _pairs("L2.H0@END", "L2.H1@END"),
                    "copy IO (0.9) into the logits", {"direct_effect": 0.7, "copying": 0.9}),
    )  # fmt: skip
    paths = (
        x.ClassPath("duplicate token", "S-inhibition", "k", "END", 0.3, (0.2, 0.4)),
        x.ClassPath("duplicate token", "S-inhibition", "v", "END", 0.2, (0.1, 0.3)),
        x.ClassPath("duplicate token", "name mover", "q", "END", 0.01, (-0.02, 0.04)),
        x.ClassPath("S-inhibition", "name mover", "q", "END", 0.4, (0.3, 0.5)),
        x.ClassPath(HOSTILE_CLASS, "name mover", "q", "END", -0.1, (-0.2, 0.0)),
        x.ClassPath("name mover", "logits", "logits", "END", 0.6, (0.5, 0.7)),
        x.ClassPath("S-inhibition", "logits", "logits", "END", 0.02, None),
        x.ClassPath(HOSTILE_CLASS, "logits", "logits", "END", -0.08, (-0.1, -0.05)),
    )
    pairs = tuple(p for c in classes for p in c.members) + _pairs("L0.mlp@END")
    faith = x.AblationFaithfulness("counterfactual", 0.84, 2.1, 2.5, 0.1, "test", 8, (0.8, 0.9))
    circuit = x.PositionCircuit(pairs, 0.8, True, (faith,), n_heads=6, n_mlps=1)
    backup = x.Backup("name mover", (x.BackupHead("L2.H1", 0.1, 0.3),), 0.25, 0.8)
    return x.Explanation(
        PROVENANCE, circuit, classes, _pairs("L0.mlp@END"), paths, backup,
        describe_algorithm(classes, paths),
    )  # fmt: skip


def _more_roles(heads: list[str]) -> dict[str, NodeRole]:
    """Roles for the circuit's heads in larger synthetic graphs (for pictures)."""
    names = ("name mover", "S-inhibition", "induction", "duplicate token", "previous token")
    return {h: NodeRole(names[i % len(names)], "synthetic") for i, h in enumerate(heads)}


def write_verification(root: Path):
    """verification.json of the synthetic run (tests/verify_fixtures.py)."""
    from tests.verify_fixtures import write_verification as write

    return write(root)


def write_synthetic_run(
    root: Path,
    n_layers: int = 3,
    n_heads: int = 2,
    fractions: tuple[float, ...] = FRACTIONS,
    explanation: bool = True,
    verification: bool = True,
) -> dict[str, Any]:
    """Every file of the schema; returns facts the tests check the page against."""
    root.mkdir(parents=True, exist_ok=True)
    graph = Graph(n_layers, n_heads)
    config = {
        "task": "ioi-hostile",
        "model": "tiny-test-model",
        "method": "eap-ig",
        "n_examples": 8,
        "seed": 0,
        "device": "cpu",
        "ablation": "counterfactual",
        "steps": [s for s in STEPS if s != "report"],
    }
    save_json(root / "config.json", config, require_provenance=False)
    Manifest(
        package_version="0.1.0",
        git_commit="deadbeef",
        created="2026-01-01T00:00:00Z",
        model={"model_id": "tiny-test-model", "quantization": "none (synthetic)"},
        seeds={"dataset": 0},
        steps={s: StepRecord(StepState.DONE, 1.5) for s in config["steps"]},
    ).save(root / "manifest.json")
    _behaviour(root)
    _localise(root, graph)
    _figures(root)
    facts = _circuits(root, graph, fractions)
    _results(root, facts)
    if explanation:
        facts["explanation"] = synthetic_explanation()
        facts["explanation"].save(root / "explanation.json")
    if verification:
        facts["verification"] = write_verification(root)
    return facts | {"graph": graph}
