"""A synthetic explanation.json on Graph(3, 2) for the hypothesis file's tests: what the draft
rules turn into claims is known. (The report's tests use `report_fixtures.synthetic_explanation`,
built for the diagram; both share that module's provenance and hostile strings.)"""

from __future__ import annotations

from tests.report_fixtures import HOSTILE_EVIDENCE, PROVENANCE
from wildcircuits.results.explain import (
    AblationFaithfulness,
    Backup,
    BackupHead,
    ClassPath,
    Explanation,
    HeadClass,
    Pair,
    PairScore,
    PositionCircuit,
    SearchStep,
)


def hypothesis_explanation() -> Explanation:
    """An explanation.json on Graph(3, 2): four classes (one of MLPs), an unexplained pair, five
    measured paths (one below the draft's 0.05 threshold) and a backup head; one sentence
    carries an HTML injection."""
    pairs = {
        "dup": (Pair("L0.H1", "S2"),),
        "sin": (Pair("L1.H0", "END"),),
        "nm": (Pair("L2.H1", "END"), Pair("L2.H0", "END")),
        "mlp": (Pair("L1.mlp", "END"),),
    }
    lost = Pair("L0.H0", "other")
    every = (*(p for group in pairs.values() for p in group), lost)
    faithful = (
        AblationFaithfulness("counterfactual", 0.86, 2.8, 3.2, 0.1, "test", 8),
        AblationFaithfulness("mean:template", 0.74, 2.4, 3.2, 0.3, "test", 8, (0.6, 0.9)),
    )
    circuit = PositionCircuit(
        pairs=every, target=0.8, reached=True, faithfulness=faithful, n_heads=5, n_mlps=1,
        search=(SearchStep(1, 0.4, "add L2.H1@END"), SearchStep(6, 0.86, "add L0.H0@other")),
        candidates=tuple(PairScore(p, 0.5 - 0.05 * i, None) for i, p in enumerate(every)),
        forwards=40, naive_forwards=180, seconds=1.5,
    )  # fmt: skip
    classes = (
        HeadClass("duplicate token", "duplicate token", pairs["dup"],
                  "L0.H1 at S2 attends to S1 (0.62).", {"attention_to_S1": 0.62}),
        HeadClass("S-inhibition", "S-inhibition", pairs["sin"],
                  "L1.H0 at END attends to S2 (0.51).", {"attention_to_S2": 0.51}),
        HeadClass("name mover", "name mover", pairs["nm"], HOSTILE_EVIDENCE,
                  {"attention_to_IO": 0.71, "attention_to_S2": 0.1, "direct_effect": 0.8}),
        HeadClass("MLPs at END", None, pairs["mlp"], "L1.mlp writes at END.",
                  {"direct_effect": 0.05}),
    )  # fmt: skip
    paths = (
        ClassPath("duplicate token", "S-inhibition", "k", "END", 0.3),
        ClassPath("duplicate token", "S-inhibition", "v", "END", 0.02),
        ClassPath("S-inhibition", "name mover", "q", "END", 0.4, (0.3, 0.5)),
        ClassPath("MLPs at END", "name mover", "q", "END", -0.1),
        ClassPath("name mover", "logits", "logits", "END", 0.8),
    )
    backup = Backup("name mover", (BackupHead("L2.H0", 0.1, 0.3),), 0.25, 0.8)
    return Explanation(
        provenance=dict(PROVENANCE, split="test"), circuit=circuit, classes=classes,
        unexplained=(lost,), paths=paths, backup=backup,
        algorithm=("Duplicate-token heads at S2 detect that S is repeated.",
                   "Name movers at END copy the name S-inhibition did not suppress."),
    )  # fmt: skip
