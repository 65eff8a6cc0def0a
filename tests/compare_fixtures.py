"""Run folders for the comparison pages: hand-written explanations with known overlaps.

Model `alpha` (3 layers) and `beta` (6 layers) both explain ioi with duplicate token -> S-inhibition
-> name mover (the same algorithm); `alpha` also explains induction and greater-than. Heads of the
compact circuits (MLPs never count):
    alpha ioi:          L0.H1, L1.H0, L2.H0, L2.H1  (+ L0.mlp)
    alpha induction:    L0.H1, L1.H1, L2.H0
    alpha greater-than: L1.H1
so Jaccard(ioi, induction) = 2 / 5, Jaccard(induction, greater-than) = 1 / 3 and
Jaccard(ioi, greater-than) = 0.
"""

from __future__ import annotations

from pathlib import Path

from wildcircuits.results import explain as x
from wildcircuits.results import save_json
from wildcircuits.results.manifest import Manifest, StepRecord, StepState, Stop

HOSTILE_CLASS = "<script>alert('class')</script> writes"
PROVENANCE = {"model": "m", "quantization": "none", "metric": "logit_diff"}


def pairs(*names: str) -> tuple[x.Pair, ...]:
    return tuple(x.Pair(*n.split("@")) for n in names)


def head_class(name: str, paper: str | None, *members: str, **evidence: float) -> x.HeadClass:
    return x.HeadClass(name, paper, pairs(*members), f"{name} sentence", dict(evidence))


def explanation(classes, paths=(), extra: tuple[str, ...] = ()) -> x.Explanation:
    members = tuple(p for c in classes for p in c.members) + pairs(*extra)
    faith = x.AblationFaithfulness("counterfactual", 0.9, 2.0, 2.2, 0.1, "test", 8)
    heads = len({p.node for p in members if ".H" in p.node})
    circuit = x.PositionCircuit(members, 0.8, True, (faith,), heads, len(members) - heads)
    return x.Explanation(PROVENANCE, circuit, tuple(classes), pairs(*extra), tuple(paths),
                         None, ("algorithm",))  # fmt: skip


def ioi_alpha() -> x.Explanation:
    classes = (
        head_class("duplicate token", "duplicate token", "L0.H1@S2", direct_effect=0.0),
        head_class("S-inhibition", "S-inhibition", "L1.H0@END"),
        head_class("name mover", "name mover", "L2.H0@END", "L2.H1@END"),
    )
    paths = (
        x.ClassPath("duplicate token", "S-inhibition", "k", "END", 0.3),
        x.ClassPath("S-inhibition", "name mover", "q", "END", 0.4),
        x.ClassPath("name mover", "logits", "logits", "END", 0.6),
        x.ClassPath("S-inhibition", "logits", "logits", "END", -0.2),
    )
    return explanation(classes, paths, extra=("L0.mlp@END",))


def ioi_beta(reordered: bool = False, negative: bool = True) -> x.Explanation:
    """beta's IOI circuit: alpha's classes at other layers, plus (`negative`) a negative name
    mover; `reordered` puts the name movers before S-inhibition."""
    mover, inhibition = ("L1.H0@END", "L4.H1@END") if reordered else ("L5.H2@END", "L3.H0@END")
    classes = (
        head_class("duplicate token", "duplicate token", "L0.H3@S2", "L1.H3@S2"),
        head_class("S-inhibition", "S-inhibition", inhibition),
        head_class("name mover", "name mover", mover, "L5.H0@END", "L5.H1@END"),
        head_class("negative name mover", "negative name mover", "L5.H3@END"),
    )[: 4 if negative else 3]
    paths = (
        x.ClassPath("S-inhibition", "name mover", "q", "END", 0.25),
        x.ClassPath("name mover", "logits", "logits", "END", 0.5),
        x.ClassPath("negative name mover", "logits", "logits", "END", -0.5),
    )
    return explanation(classes, paths)


def induction_alpha() -> x.Explanation:
    classes = (
        head_class("duplicate token", "duplicate token", "L0.H1@S2"),
        head_class("induction", "induction", "L1.H1@S2", "L2.H0@S2"),
    )
    return explanation(classes)


def greater_than_alpha(name: str = "writes the answer at END") -> x.Explanation:
    return explanation((head_class(name, None, "L1.H1@END", direct_effect=0.8),))


def write_cell(root: Path, model: str, n_layers: int | None, e: x.Explanation | None,
               stopped: str | None = None) -> Path:  # fmt: skip
    """A run folder: config.json, manifest.json (model info with `n_layers`) and, unless None,
    explanation.json."""
    root.mkdir(parents=True, exist_ok=True)
    save_json(root / "config.json", {"task": "t", "model": model}, require_provenance=False)
    info = {"model_id": model, "quantization": "none"}
    if n_layers is not None:
        info["n_layers"] = n_layers
    Manifest(
        model=info,
        steps={"explain": StepRecord(StepState.DONE if e else StepState.SKIPPED, 1.0)},
        stopped=Stop("behaviour", stopped) if stopped else None,
    ).save(root / "manifest.json")
    if e is not None:
        e.save(root / "explanation.json")
    return root


def write_catalogue(root: Path) -> dict[tuple[str, str], Path]:
    """Five usable cells, one hostile class name and three cells that must be skipped."""
    cells = {
        ("ioi", "alpha"): write_cell(root / "ioi-alpha", "alpha", 3, ioi_alpha()),
        ("ioi", "beta"): write_cell(root / "ioi-beta", "beta", 6, ioi_beta()),
        ("induction", "alpha"): write_cell(root / "ind-alpha", "alpha", 3, induction_alpha()),
        ("greater-than", "alpha"): write_cell(
            root / "gt-alpha", "alpha", 3, greater_than_alpha(HOSTILE_CLASS)
        ),
        ("greater-than", "beta"): write_cell(root / "gt-beta", "beta", 6, greater_than_alpha()),
        ("induction", "beta"): write_cell(
            root / "ind-beta", "beta", 6, None, stopped="the model does not do the task"
        ),
        ("docstring", "beta"): write_cell(root / "doc-beta", "beta", None, induction_alpha()),
        ("successor", "beta"): root / "does-not-exist",
    }
    (root / "gt-beta" / "metrics.json").write_text("{not json")
    return cells
