"""Run the steps in order, skipping finished ones on resume, recording each in the manifest."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from wildcircuits.pipeline.config import DiscoverConfig
from wildcircuits.pipeline.context import Context, StopRun
from wildcircuits.pipeline.run_folder import RunFolder
from wildcircuits.pipeline.steps_discover import discover_step, evaluate_step
from wildcircuits.pipeline.steps_localise import behaviour, localise
from wildcircuits.pipeline.steps_redteam import redteam
from wildcircuits.pipeline.summarise import summarise
from wildcircuits.results.manifest import StepState


def report(ctx: Context) -> list[str]:
    """report.html; the step is marked done first so that the page's Steps table, written
    during this step, does not show it as running (a failure is then recorded as failed)."""
    from wildcircuits.report.html import build_report

    ctx.folder.mark("report", StepState.DONE, outputs=("report.html",))
    build_report(ctx.folder.root)
    return ["report.html"]


STEP_FUNCTIONS: dict[str, Callable[[Context], list[str]]] = {
    "behaviour": behaviour,
    "localise": localise,
    "discover": discover_step,
    "evaluate": evaluate_step,
    "redteam": redteam,
    "summarise": summarise,
    "report": report,
}


def discover(
    config: DiscoverConfig, out: Path | str, resume: bool = False, progress: bool = True
) -> Path:
    """Run the pipeline into `out`; returns the run folder.

    With `resume`, steps whose outputs exist and parse are skipped (the report is always
    rebuilt). A step that fails is recorded as failed and the error re-raised; a deliberate stop
    (the model does not do the task) records its reason and still writes the report.
    """
    folder = RunFolder(out)
    folder.start(config, resume)
    ctx = Context(config, folder, progress)
    for step in config.steps:
        if resume and step != "report" and folder.is_done(step):
            ctx.say(f"{step}: done in an earlier run, skipped")
            continue
        folder.mark(step, "running")
        start = time.perf_counter()
        try:
            outputs = STEP_FUNCTIONS[step](ctx)
        except StopRun as stop:
            reason, outputs = stop.args
            seconds = round(time.perf_counter() - start, 2)
            folder.mark(step, "done", seconds=seconds, outputs=outputs)
            folder.stop(step, reason)
            ctx.say(f"stopped after {step}: {reason}")
            if "report" in config.steps:
                report(ctx)
            return folder.root
        except BaseException as error:
            folder.mark(step, "failed", seconds=round(time.perf_counter() - start, 2),
                        error=f"{type(error).__name__}: {error}")  # fmt: skip
            raise
        seconds = round(time.perf_counter() - start, 2)
        folder.mark(step, "done", seconds=seconds, outputs=outputs)
        ctx.say(f"{step}: done in {seconds:.1f} s")
    return folder.root
