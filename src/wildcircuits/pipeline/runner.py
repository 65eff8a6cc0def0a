"""Run the steps in order under the run folder's lock, skipping on resume the finished ones whose
fingerprints agree, recording each (with its fingerprint and output hashes) in the manifest."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path

from wildcircuits.pipeline.config import DiscoverConfig
from wildcircuits.pipeline.context import Context, StopRun
from wildcircuits.pipeline.fingerprint import STEP_UPSTREAM
from wildcircuits.pipeline.lock import RunLock
from wildcircuits.pipeline.run_folder import RunFolder
from wildcircuits.pipeline.steps_discover import discover_step, evaluate_step
from wildcircuits.pipeline.steps_explain import explain_step, hypothesis_step
from wildcircuits.pipeline.steps_localise import behaviour, localise, saved_gate
from wildcircuits.pipeline.steps_redteam import redteam
from wildcircuits.pipeline.steps_verify import verify_step
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
    "explain": explain_step,
    "hypothesis": hypothesis_step,
    "verify": verify_step,
    "redteam": redteam,
    "summarise": summarise,
    "report": report,
}


def discover(
    config: DiscoverConfig,
    out: Path | str,
    resume: bool = False,
    progress: bool = True,
    fresh: bool = False,
) -> Path:
    """Run the pipeline into `out`; returns the run folder.

    The folder is locked for the run (`RunLock`: a second run into it is refused, naming the
    holder). Without `resume` or `fresh`, a folder holding another config's results is refused.
    With `resume`, a step is skipped when its outputs parse and its fingerprint agrees with
    `config` and no step it reads was recomputed in this run (the report is always rebuilt).
    `fresh` deletes the previous run's files first. A step that fails is recorded as failed and
    the error re-raised; a deliberate stop (the model does not do the task) records its reason
    and still writes the report.
    """
    folder = RunFolder(out)
    with RunLock(folder.root):
        folder.start(config, resume, fresh=fresh)
        ctx = Context(config, folder, progress)
        _run_steps(ctx, resume)
    return folder.root


def _run_steps(ctx: Context, resume: bool) -> None:
    config, folder = ctx.config, ctx.folder
    redone: set[str] = set()
    for step in config.steps:
        upstream_redone = [u for u in STEP_UPSTREAM.get(step, ()) if u in redone]
        if resume and step != "report" and not upstream_redone and folder.is_done(step, config):
            ctx.say(f"{step}: done in an earlier run, skipped")
            if step == "behaviour" and (reason := saved_gate(ctx)):
                _stop(ctx, step, reason)  # the gate holds on resume too
                return
            continue
        if resume and step != "report":
            why = folder.why_not_done(step, config)
            if upstream_redone:
                why = f"{', '.join(upstream_redone)} was recomputed"
            if why:
                ctx.say(f"{step}: recomputed ({why})")
        redone.add(step)
        if run_step(ctx, step):
            return


def _stop(ctx: Context, step: str, reason: str) -> None:
    """Record a deliberate stop after `step` and still write the report."""
    ctx.folder.stop(step, reason)
    ctx.say(f"stopped after {step}: {reason}")
    if "report" in ctx.config.steps:
        report(ctx)


def run_step(ctx: Context, step: str) -> bool:
    """Run one step and record it; True when the run stopped on purpose."""
    config, folder = ctx.config, ctx.folder
    folder.mark(step, "running")
    start, forwards = time.perf_counter(), ctx.token_forwards
    try:
        outputs = STEP_FUNCTIONS[step](ctx)
    except StopRun as stop:
        reason, outputs = stop.args
        folder.finish(step, config, round(time.perf_counter() - start, 2), outputs,
                      ctx.token_forwards - forwards)  # fmt: skip
        _stop(ctx, step, reason)
        return True
    except BaseException as error:
        folder.mark(step, "failed", seconds=round(time.perf_counter() - start, 2),
                    error=f"{type(error).__name__}: {error}")  # fmt: skip
        raise
    seconds, forwards = round(time.perf_counter() - start, 2), ctx.token_forwards - forwards
    folder.finish(step, config, seconds, outputs, forwards)
    ctx.say(f"{step}: done in {seconds:.1f} s, {forwards:,} token-forwards")
    return False


def rerun_steps(
    run_dir: Path | str, config: DiscoverConfig, steps: Sequence[str], progress: bool = True
) -> bool:
    """Recompute `steps`, in order, of a finished run folder (under its lock, each recorded in
    its manifest with a fingerprint, like `discover`), then rebuild report.html if the run has
    one; True when the report was rebuilt."""
    folder = RunFolder(run_dir)
    with RunLock(folder.root):
        folder.start(config, resume=True)
        ctx = Context(config, folder, progress)
        for step in steps:
            run_step(ctx, step)
        if not folder.path("report.html").exists():
            return False
        report(ctx)
    return True
