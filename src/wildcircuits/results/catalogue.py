"""catalogue.json: one row per (task, model) cell of a circuit catalogue, and the criteria.

Written only by the catalogue driver (`wildcircuits.catalogue`), from the cell folders' own
files (`cells/TASK--MODEL/`); rebuilding it from disk after any crash gives the same bytes, so
it holds no clock time. It is not a run-folder file, so it is not in `RESULT_KINDS` (the run
folder's schema page and `--fresh` list only those); it is a `Result` for the same typed,
versioned, atomic `save` / `load`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar

from wildcircuits.results.base import Result


class CellState(StrEnum):
    VERIFIED = "verified"
    NOT_VERIFIED = "not verified"
    NO_BEHAVIOUR = "model does not do the task"
    FAILED = "failed"
    PENDING = "pending"


@dataclass(frozen=True)
class VerifiedCriteria:
    """What a cell must show to be **verified**; one value for the whole catalogue, stored in
    catalogue.json, never changed per cell (docs/catalogue_guide.md explains each).

    - faithful: the compact circuit's F(C) / F(M) on held-out prompts (verification.json,
      mean ablation per template) in [faithful_low, faithful_high], with the 95% bootstrap
      interval's low end >= interval_low (an interval must exist);
    - compact: the explain step's compact circuit reached its target (explanation.json);
    - edge_faithful: the selected edge circuit's held-out faithfulness >= edge_faithful_min;
    - random_far_below: at that circuit's edge count, random circuits (mean + 2 std) stay at
      least random_margin below it (redteam.json random_circuit);
    - claims: none of `claims_not_falsified` is falsified (verification.json);
    - red team: every check in redteam.json and verification.json passes (`warn` fails it),
      those in `required_checks` must be present, `exempt_checks` are not required to pass.
    """

    faithful_low: float = 0.8
    faithful_high: float = 1.2
    interval_low: float = 0.6
    edge_faithful_min: float = 0.8
    random_margin: float = 0.4
    claims_not_falsified: tuple[str, ...] = (
        "the circuit is faithful",
        "the circuit is complete",
        "the whole hypothesis",
    )
    required_checks: tuple[str, ...] = ("random_circuit", "other_seed", "other_corruption")
    exempt_checks: tuple[str, ...] = ()


@dataclass(frozen=True)
class FailedCriterion:
    """One criterion a cell did not meet, and the numbers that say why."""

    name: str
    reason: str


@dataclass(frozen=True)
class Behaviour:
    """The behaviour step's numbers (behaviour.json), kept for every cell that has them."""

    metric: str
    clean_mean: float | None
    corrupted_mean: float | None
    accuracy: float | None
    corruption: str


@dataclass(frozen=True)
class Faithfulness:
    """A faithfulness value with its (low, high) interval where one was computed."""

    value: float | None
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class StepSeconds:
    """One step's state and cost: seconds (machine and load dependent) and token-forwards
    (`models.counting`; None where the run predates the count)."""

    step: str
    state: str
    seconds: float | None = None
    token_forwards: int | None = None


@dataclass(frozen=True)
class Cell:
    """One (task, model) cell: its state and the headline numbers of its run folder."""

    task: str
    model: str
    folder: str  # relative to the catalogue folder
    state: CellState
    behaviour: Behaviour | None = None
    n_heads: int | None = None
    n_mlps: int | None = None
    n_edges: int | None = None
    faithfulness: Faithfulness | None = None  # compact circuit, F(C) / F(M), held-out
    edge_faithfulness: float | None = None  # selected edge circuit, held-out
    random_faithfulness: float | None = None  # random circuits of that size (mean)
    cpr: float | None = None
    cmd: float | None = None
    claims: dict[str, int] = field(default_factory=dict)  # status -> count
    verdict: str | None = None
    classes: tuple[str, ...] = ()
    failed_criteria: tuple[FailedCriterion, ...] = ()
    steps: tuple[StepSeconds, ...] = ()
    error: str | None = None
    stop_reason: str | None = None

    @property
    def key(self) -> tuple[str, str]:
        return (self.task, self.model)


@dataclass(frozen=True)
class Catalogue(Result):
    """catalogue.json: the plan (tasks, models, settings), the criteria and one row per cell."""

    FILE: ClassVar[str] = "catalogue.json"
    STEP: ClassVar[str] = "catalogue"
    PROVENANCE: ClassVar[tuple[str, ...]] = ("package_version",)

    provenance: dict[str, Any]
    tasks: tuple[str, ...]
    models: tuple[str, ...]
    settings: dict[str, Any]
    criteria: VerifiedCriteria
    cells: tuple[Cell, ...]

    @classmethod
    def rebuild_hint(cls) -> str:
        return "rebuild it with `wildcircuits catalogue ... --resume` (it rereads the cells)"

    def counts(self) -> dict[str, int]:
        """state -> number of cells, in the order of `CellState`."""
        return {s.value: sum(c.state is s for c in self.cells) for s in CellState}

    def failures(self) -> list[tuple[str, int, int]]:
        """(criterion, finished cells it fails, cells it alone fails), most failing first
        (ties in the order the criteria first appear)."""
        order: dict[str, list[int]] = {}
        for cell in self.cells:
            names = {f.name for f in cell.failed_criteria}
            for name in dict.fromkeys(f.name for f in cell.failed_criteria):
                tally = order.setdefault(name, [0, 0])
                tally[0] += 1
                tally[1] += len(names) == 1
        ranked = sorted(order.items(), key=lambda item: -item[1][0])
        return [(name, n, alone) for name, (n, alone) in ranked]

    def cell(self, task: str, model: str) -> Cell:
        for cell in self.cells:
            if cell.key == (task, model):
                return cell
        raise KeyError((task, model))
