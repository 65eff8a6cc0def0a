"""Held-out check: edge scores found on one split, circuits evaluated on another.

A circuit that is only faithful on the prompts it was found on has overfit them. Scores come from
the train problem (given, or computed by `discover(model, train)`); the same top-k circuits are
then evaluated on the train and on the test problem, and CPR / CMD / smallest-80% compared.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from wildcircuits.errors import WildcircuitsError
from wildcircuits.evaluation.curves import (
    ALL_FRACTIONS,
    FaithfulnessCurve,
    Ranking,
    cmd,
    cpr,
    faithfulness_curves,
    if_defined,
    log_area,
    smallest_faithful,
)
from wildcircuits.graph.circuit import EdgeScores
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.patching.ablation_spec import AblationSpec
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.patching.problem import PatchingProblem

Discover = Callable[[InstrumentedModel, PatchingProblem], EdgeScores]


def curve_summary(curves: dict[Ranking, FaithfulnessCurve]) -> dict[str, Any]:
    """CPR, CMD, log areas and smallest-80% circuits of a signed + absolute curve pair."""
    signed, absolute = curves[Ranking.SIGNED], curves[Ranking.ABSOLUTE]
    small = {o.value: smallest_faithful(c) for o, c in curves.items()}
    return {
        "cpr": if_defined(cpr, signed),
        "cmd": if_defined(cmd, absolute),
        "log_area_signed": if_defined(log_area, signed),
        "log_area_abs": if_defined(log_area, absolute),
        "smallest_80": {k: None if v is None else v.to_dict() for k, v in small.items()},
        "m_full": signed.m_full,
        "m_empty": signed.m_empty,
        "m_corrupted": signed.m_corrupted,
        "n_examples": signed.provenance.get("n_examples"),
    }


@dataclass(frozen=True)
class HeldOutResult:
    """The same score-ranked circuits on the split they were found on and on a held-out one."""

    train: dict[Ranking, FaithfulnessCurve]
    test: dict[Ranking, FaithfulnessCurve]
    shared_prompts: int

    def summary(self) -> dict[str, Any]:
        train, test = curve_summary(self.train), curve_summary(self.test)
        return {
            "train": train,
            "test": test,
            "cpr_drop": _difference(train["cpr"], test["cpr"]),
            "cmd_rise": _difference(test["cmd"], train["cmd"]),
            "shared_clean_prompts": self.shared_prompts,
            "train_split": self.train[Ranking.SIGNED].provenance.get("split"),
            "test_split": self.test[Ranking.SIGNED].provenance.get("split"),
        }


def _difference(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def shared_prompts(first: PatchingProblem, second: PatchingProblem) -> int:
    """How many clean prompts (token rows, padding removed) the two problems share."""

    def rows(problem: PatchingProblem) -> set[tuple[int, ...]]:
        ids, mask = problem.clean.input_ids.cpu(), problem.clean.attention_mask.cpu().bool()
        return {tuple(ids[i][mask[i]].tolist()) for i in range(problem.batch)}

    return len(rows(first) & rows(second))


def heldout_check(
    model: InstrumentedModel,
    train: PatchingProblem,
    test: PatchingProblem,
    scores: EdgeScores | Discover,
    spec: AblationSpec | str | None = None,
    fractions=ALL_FRACTIONS,
    batch_size: int = 16,
    progress: bool = False,
) -> HeldOutResult:
    """Evaluate train-split circuits on both splits.

    `scores`: EdgeScores already found on `train`, or a function (model, problem) -> EdgeScores
    that is run on `train`. Problems from the same split are refused when their provenance says
    so; prompts shared by the two problems are counted and reported.
    """
    split_train, split_test = train.provenance.get("split"), test.provenance.get("split")
    if split_train is not None and split_train == split_test and split_train != "all":
        raise WildcircuitsError(
            f"held-out check needs two different splits; both problems are {split_train!r}"
        )
    if callable(scores):
        scores = scores(model, train)
    engine = EdgeForward(model)
    args = ((Ranking.SIGNED, Ranking.ABSOLUTE), fractions, spec, batch_size, engine, progress)
    on_train = faithfulness_curves(model, train, scores, *args)
    on_test = faithfulness_curves(model, test, scores, *args)
    return HeldOutResult(on_train, on_test, shared_prompts(train, test))
