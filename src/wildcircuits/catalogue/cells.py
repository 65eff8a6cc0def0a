"""One cell: run it (the worker side) and read its state back from its folder (the driver side).

`run_cell` is what an executor calls, in-process or in a Ray task: the whole `discover`
pipeline into the cell folder with `resume=True`, so a killed cell continues at the step in
progress. A cell that raises is recorded in CELL/error.json (atomic) and the call returns its
message; the catalogue goes on. `read_cell` builds the catalogue row from the folder's files
alone, so catalogue.json can be rebuilt from disk at any time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wildcircuits.catalogue.criteria import CellFiles, failed_criteria
from wildcircuits.catalogue.plan import CELLS, CellSpec, Plan
from wildcircuits.errors import WildcircuitsError
from wildcircuits.pipeline.config import DiscoverConfig
from wildcircuits.results.catalogue import (
    Behaviour,
    Cell,
    CellState,
    Faithfulness,
    StepSeconds,
)
from wildcircuits.results.io import load_json, save_json
from wildcircuits.results.manifest import Manifest, StepState
from wildcircuits.results.verify import ClaimStatus

ERROR_FILE = "error.json"
#: The files the catalogue reads from a cell (its row and the comparison pages). A cell folder
#: reduced to these (docs/catalogue/ commits only them: the arrays, figures and report are
#: large) still counts as finished; its other files come back by running the cell again.
KEPT = (
    "config.json",
    "manifest.json",
    "behaviour.json",
    "metrics.json",
    "redteam.json",
    "verification.json",
    "explanation.json",
    "hypothesis.yaml",
    ERROR_FILE,
)


#: Steps that read only KEPT files (besides the model and the task): hypothesis reads
#: explanation.json, verify reads hypothesis.yaml. When a new method version makes only these
#: disagree, a cell reruns just them (`steps_to_rerun`), not the steps whose arrays a reduced cell
#: lacks (recomputing those would redo the whole cell: their float noise changes every hash
#: downstream).
KEPT_INPUT_STEPS = ("hypothesis", "verify")


def cell_folder(root: Path, spec: CellSpec) -> Path:
    return Path(root) / CELLS / spec.folder


def finished(folder: Path, config: DiscoverConfig) -> str | None:
    """ "done" when every step of `config` is done and agrees with it, "stopped" when the run
    stopped on purpose after a done step (the behaviour gate), else None (run it)."""
    return _state(_run_folder(folder), config)[0]


def steps_to_rerun(folder: Path, config: DiscoverConfig) -> tuple[str, ...] | None:
    """The steps to rerun when every step but some of KEPT_INPUT_STEPS agrees with `config`
    (a finished cell under an older hypothesis or verify method): the first such step that
    disagrees and every KEPT_INPUT_STEPS step after it. None when the cell needs the whole
    pipeline's resume (a step outside them disagrees, the run stopped, or nothing is stale)."""
    return _state(_run_folder(folder), config)[1]


def _state(run: Any, config: DiscoverConfig) -> tuple[str | None, tuple[str, ...] | None]:
    """(`finished`, `steps_to_rerun`) from one reading of the folder: each step's outputs are
    hashed once."""
    if run is None:
        return None, None
    stop = run.manifest.stopped
    if stop is not None and _agrees(run, stop.step, config):
        return "stopped", None
    disagree = _disagreeing(run, config)
    if disagree == []:
        return "done", None
    if stop is not None or not disagree or not set(disagree) <= set(KEPT_INPUT_STEPS):
        return None, None
    first = config.steps.index(disagree[0])
    return None, tuple(s for s in config.steps[first:] if s in KEPT_INPUT_STEPS)


def _run_folder(folder: Path) -> Any:
    """The cell's RunFolder with its manifest loaded, or None where it has none (not run)."""
    from wildcircuits.pipeline.run_folder import RunFolder

    run = RunFolder(folder)
    if not (run.path("manifest.json").exists() and run.path("config.json").exists()):
        return None
    try:
        run.manifest = Manifest.load(run.path("manifest.json"))
    except WildcircuitsError:
        return None
    return run


def _disagreeing(run: Any, config: DiscoverConfig) -> list[str] | None:
    """The steps of `config` that do not agree with it, in order; None when the report step
    never finished (the run did not get to its end)."""
    disagree = []
    for step in config.steps:
        record = run.manifest.steps.get(step)
        if step == "report":
            if record is None or record.state is not StepState.DONE:
                return None
        elif not _agrees(run, step, config):
            disagree.append(step)
    return disagree


def _agrees(run: Any, step: str, config: DiscoverConfig) -> bool:
    """`step` is done under `config`: every output is there as written, or (a cell reduced to
    KEPT) every output that is missing is one the catalogue does not read."""
    from wildcircuits.pipeline.fingerprint import STEP_FIELDS, disagreement

    if run.is_done(step, config):
        return True
    record = run.manifest.steps.get(step)
    if record is None or step not in STEP_FIELDS:
        return False
    unread = [name for name in record.outputs if name not in KEPT]
    return disagreement(step, config.to_dict(), run.manifest, run.root, unread) is None


def run_cell(folder: Path | str, config: DiscoverConfig, progress: bool = False) -> str | None:
    """Run (or continue) one cell; returns None, or the error message it recorded.

    Only this call writes into the cell folder (the pipeline's files, atomically, and
    error.json); a finished cell is left as it is, a stopped one is not run past its stop, and
    one where only KEPT_INPUT_STEPS are stale reruns just those (`steps_to_rerun`)."""
    from wildcircuits.pipeline.runner import discover, rerun_steps

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / ERROR_FILE).unlink(missing_ok=True)
    state, stale = _state(_run_folder(folder), config)
    if state is not None:
        return None
    try:
        if stale is not None:
            rerun_steps(folder, config, stale, progress)
        else:
            discover(config, folder, resume=True, progress=progress)
    except Exception as error:  # recorded; the catalogue goes on with the other cells
        message = f"{type(error).__name__}: {error}"
        save_json(
            folder / ERROR_FILE,
            {"task": config.task, "model": config.model, "error": message},
            require_provenance=False,
        )
        return message
    return None


def _load(folder: Path, name: str) -> Any:
    from wildcircuits.results import RESULT_KINDS

    path = folder / name
    if not path.exists():
        return None
    try:
        return RESULT_KINDS[name].load(path)
    except WildcircuitsError:
        return None


def _behaviour(folder: Path) -> Behaviour | None:
    probe = _load(folder, "behaviour.json")
    if probe is None:
        return None
    corrupted = probe.corrupted.get(probe.default_corruption)
    return Behaviour(
        probe.metric,
        probe.clean.mean,
        corrupted.mean if corrupted else None,
        probe.clean.accuracy,
        probe.default_corruption,
    )


def _steps(manifest: Manifest | None) -> tuple[StepSeconds, ...]:
    if manifest is None:
        return ()
    return tuple(
        StepSeconds(s, r.state.value, r.seconds, r.token_forwards)
        for s, r in manifest.steps.items()
    )


def _error(folder: Path, manifest: Manifest | None) -> str | None:
    if (folder / ERROR_FILE).exists():
        try:
            return str(load_json(folder / ERROR_FILE)["error"])
        except (WildcircuitsError, KeyError, TypeError):
            return "the cell failed (error.json cannot be read)"
    failed = [
        (s, r)
        for s, r in (manifest.steps.items() if manifest else ())
        if r.state is StepState.FAILED
    ]
    return f"step {failed[0][0]}: {failed[0][1].error}" if failed else None


def read_cell(root: Path, spec: CellSpec, plan: Plan) -> Cell:
    """The catalogue row of one cell, from its folder alone."""
    folder = cell_folder(root, spec)
    manifest = _load(folder, "manifest.json")
    base = Cell(
        spec.task,
        spec.model,
        f"{CELLS}/{spec.folder}",
        CellState.PENDING,
        behaviour=_behaviour(folder),
        steps=_steps(manifest),
    )
    error = _error(folder, manifest)
    if error is not None:
        return _with(base, state=CellState.FAILED, error=error)
    state = finished(folder, spec.config(plan.base))
    if state == "stopped":
        return _with(base, state=CellState.NO_BEHAVIOUR, stop_reason=manifest.stopped.reason)
    if state is None:
        return base
    return _finished_cell(folder, base, plan)


def _with(cell: Cell, **changes: Any) -> Cell:
    from dataclasses import replace

    return replace(cell, **changes)


def _finished_cell(folder: Path, base: Cell, plan: Plan) -> Cell:
    files = CellFiles(
        _load(folder, "metrics.json"),
        _load(folder, "redteam.json"),
        _load(folder, "verification.json"),
        _load(folder, "explanation.json"),
    )
    failed = failed_criteria(files, plan.criteria)
    state = CellState.NOT_VERIFIED if failed else CellState.VERIFIED
    changes: dict[str, Any] = {"state": state, "failed_criteria": failed}
    if files.metrics is not None:
        m = files.metrics
        changes |= {
            "n_edges": m.selected.n_edges,
            "edge_faithfulness": m.selected.faithfulness,
            "cpr": m.cpr,
            "cmd": m.cmd,
        }
    random = (
        next((k for k in files.redteam.checks if k.name == "random_circuit"), None)
        if (files.redteam)
        else None
    )
    if random is not None and "random_mean" in random.numbers:
        changes["random_faithfulness"] = float(random.numbers["random_mean"])
    if files.explanation is not None:
        e = files.explanation
        changes |= {
            "n_heads": e.circuit.n_heads,
            "n_mlps": e.circuit.n_mlps,
            "classes": tuple(c.name for c in e.classes),
        }
    if files.verification is not None:
        v = files.verification
        rel = v.criteria.relative_faithfulness
        iv = rel.interval
        changes["faithfulness"] = Faithfulness(
            rel.value, iv.low if iv else None, iv.high if iv else None
        )
        changes["claims"] = {s.value: sum(c.status is s for c in v.claims) for s in ClaimStatus}
        changes["verdict"] = v.verdict
    return _with(base, **changes)
