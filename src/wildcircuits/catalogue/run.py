"""The catalogue driver: plan, run the cells through an executor, write catalogue.json and
index.html from the cell folders after every cell, and say how far along it is.

catalogue.json and index.html are written only here, from disk (`rebuild`): the same folders
always give the same catalogue.json, so rebuilding it after any crash is safe.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from wildcircuits.catalogue.cells import cell_folder, read_cell
from wildcircuits.catalogue.executors import Job, make_executor
from wildcircuits.catalogue.plan import PLAN_FILE, Plan, load_plan, make_plan
from wildcircuits.errors import InputError
from wildcircuits.pipeline.config import DiscoverConfig
from wildcircuits.results.catalogue import Catalogue, CellState, VerifiedCriteria

CATALOGUE_FILE = "catalogue.json"
INDEX_FILE = "index.html"
#: Cells run again on --resume (the others are finished).
UNFINISHED = (CellState.PENDING, CellState.FAILED)


def _provenance() -> dict[str, object]:
    from wildcircuits import __version__
    from wildcircuits.pipeline.run_folder import _git_commit

    return {"package_version": __version__, "git_commit": _git_commit()}


def build_catalogue(root: Path, plan: Plan) -> Catalogue:
    """The catalogue of `plan` as its cell folders under `root` say now."""
    cells = tuple(read_cell(root, spec, plan) for spec in plan.cells)
    return Catalogue(
        provenance=_provenance(),
        tasks=plan.tasks,
        models=plan.models,
        settings=plan.settings(),
        criteria=plan.criteria,
        cells=cells,
    )


def write_catalogue(root: Path, plan: Plan, compare: bool = False) -> Catalogue:
    """Write catalogue.json and index.html (and, with `compare`, the comparison pages)."""
    from wildcircuits.report.catalogue_index import write_index
    from wildcircuits.report.catalogue_markdown import write_markdown

    result = build_catalogue(root, plan)
    result.save(root / CATALOGUE_FILE)
    notes = write_compare(root, result) if compare else None
    write_index(root, result, notes)
    write_markdown(root, result)
    return result


def write_compare(root: Path, result: Catalogue) -> list[str]:
    """universality.html / reuse.html through `wildcircuits.catalogue.compare` where that
    module exists; returns notes for the index (empty when the pages were written)."""
    try:
        from wildcircuits.catalogue.compare import write_compare_pages
    except ModuleNotFoundError as error:
        if error.name != "wildcircuits.catalogue.compare":
            raise
        return [
            "the comparison pages (universality.html, reuse.html) are not built: "
            "wildcircuits.catalogue.compare is not installed"
        ]
    cells = {
        c.key: root / c.folder
        for c in result.cells
        if c.state in (CellState.VERIFIED, CellState.NOT_VERIFIED)
    }
    try:
        write_compare_pages(root, cells)
    except Exception as error:  # the cells and catalogue.json stand; the index says why
        return [f"the comparison pages failed: {type(error).__name__}: {error}"]
    return []


def rebuild(out: Path | str) -> Catalogue:
    """Rewrite DIR/catalogue.json and DIR/index.html from DIR/plan.json and the cell folders."""
    root = Path(out)
    return write_catalogue(root, load_plan(root), compare=True)


class Progress:
    """Cells done / left, time so far and an estimate, as lines on stderr."""

    def __init__(self, total: int, done: int, show: bool = True):
        self.total, self.done, self.show = total, done, show
        self.start, self.run = time.perf_counter(), 0

    def say(self, text: str) -> None:
        if self.show:
            print(f"[wildcircuits] catalogue: {text}", file=sys.stderr, flush=True)

    def finished(self, name: str, state: str, error: str | None) -> None:
        self.done, self.run = self.done + 1, self.run + 1
        elapsed = time.perf_counter() - self.start
        left = self.total - self.done
        estimate = f", about {_clock(elapsed / self.run * left)} left" if left else ""
        note = f" ({' '.join(error.split())})" if error else ""
        self.say(
            f"{name}: {state}{note}; {self.done}/{self.total} cells done, {left} left, "
            f"{_clock(elapsed)} so far{estimate}"
        )


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def catalogue(
    tasks: str | list[str] | tuple[str, ...],
    models: str | list[str] | tuple[str, ...],
    out: Path | str,
    config: DiscoverConfig | None = None,
    criteria: VerifiedCriteria | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    resume: bool = False,
    progress: bool = True,
    verbose: bool = False,
) -> Catalogue:
    """Run one `discover` cell per (task, model) into OUT/cells/TASK--MODEL/ and write
    OUT/catalogue.json and OUT/index.html; returns the catalogue.

    `config` holds the settings every cell shares (its task and model are replaced); every
    name is checked before any cell runs. Without `resume` a folder that already holds a
    catalogue is refused; with it, finished cells are kept and the others continue where
    they stopped (the pipeline's own resume reuses their finished steps)."""
    plan = make_plan(tasks, models, config, criteria)
    runner = make_executor(executor, ray_address, verbose)
    root = Path(out)
    if (root / PLAN_FILE).exists() and not resume:
        raise InputError(
            f"{root} already holds a catalogue; rerun with --resume to continue it, or give a "
            "new --out folder"
        )
    root.mkdir(parents=True, exist_ok=True)
    plan.save(root)
    current = write_catalogue(root, plan)
    todo = [
        spec
        for spec, cell in zip(plan.cells, current.cells, strict=True)
        if cell.state in UNFINISHED
    ]
    meter = Progress(len(plan.cells), len(plan.cells) - len(todo), progress)
    meter.say(f"{len(plan.cells)} cells, {len(todo)} to run ({executor} executor)")
    jobs = [Job(s, cell_folder(root, s), s.config(plan.base)) for s in todo]
    for job, error in runner.run(jobs):
        cell = read_cell(root, job.spec, plan)
        meter.finished(job.spec.folder, cell.state.value, error)
        write_catalogue(root, plan)
    result = write_catalogue(root, plan, compare=True)
    meter.say(", ".join(f"{n} {s}" for s, n in result.counts().items() if n))
    return result
