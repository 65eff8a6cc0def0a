"""Step: verify the drafted hypothesis (verification.json), and `wildcircuits verify FILE`.

The step reads RUN_DIR/hypothesis.yaml as the explain step wrote it (through the same checks a
person's edit meets) and tests it on the run's held-out split (`n_heldout` prompts to start;
`wildcircuits.verification.run.verify` grows them where an interval is too wide, within its
budget of forward passes). A person who edits the hypothesis verifies the edited copy with
`wildcircuits verify HYPOTHESIS.yaml --task T --model M --out DIR` (`verify_file`): the run
folder's own hypothesis.yaml is an output of the explain step, so editing it in place makes a
`--resume` redo the explain step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wildcircuits.pipeline.context import Context

OUTPUTS = ["verification.json"]


def verify_step(ctx: Context) -> list[str]:
    """Verify RUN_DIR/hypothesis.yaml on the run's test split; write verification.json."""
    from dataclasses import replace

    from wildcircuits.explanation.hypothesis import load_hypothesis
    from wildcircuits.names import Shape
    from wildcircuits.verification.run import verify

    model, config = ctx.model, ctx.config
    path = ctx.folder.path("hypothesis.yaml")
    if not path.is_file():
        from wildcircuits.errors import InputError

        raise InputError(
            f"verify: {path} does not exist; the hypothesis step drafts it (add `hypothesis` "
            "to --steps, after explain)"
        )
    hypothesis = load_hypothesis(path, Shape(model.n_layers, model.n_heads))
    if not hypothesis.pairs():
        ctx.say("verify: the drafted hypothesis claims no components; nothing to verify")
        return []
    settings = pipeline_settings(config)
    ctx.say(
        f"verify: the {len(hypothesis.classes)} classes and {len(hypothesis.paths)} paths of "
        f"hypothesis.yaml on {settings.n} held-out prompts (growing to at most {settings.max_n})"
    )
    result = verify(model, ctx.task, hypothesis, settings, corruption=config.corruption,
                    source=path, progress=ctx.progress)  # fmt: skip
    provenance = {**ctx.provenance(ctx.test, split="test"), **result.provenance}
    result = replace(result, provenance=provenance)
    result.save(ctx.folder.path("verification.json"))
    ctx.say(f"verify: {result.verdict}")
    return list(OUTPUTS)


def pipeline_settings(config):
    """The verify step's `VerifySettings`: the run's held-out size and seed, the pipeline's
    effort (`PIPELINE_VERIFY`) and the run's own `verify_settings` over both."""
    from wildcircuits.pipeline.config import PIPELINE_VERIFY

    chosen = {"n": config.n_heldout, "max_n": max(64, config.n_heldout), "seed": config.seed,
              **PIPELINE_VERIFY, **config.verify_settings}  # fmt: skip
    return _settings(chosen)


def verify_file(
    hypothesis_path: Path | str,
    task_name: str,
    model_name: str,
    out: Path | str,
    settings: Mapping[str, Any] | None = None,
    device: str = "cpu",
    corruption: str | None = None,
    progress: bool = True,
) -> Path:
    """Verify a hypothesis file for a task and model; write OUT/verification.json and return
    its path. The file is checked (shape, positions) before any long work. settings: the
    `VerifySettings` fields to change from their defaults (e.g. {"n": 32, "max_n": 32}).

    OUT may be a run folder only for that folder's own hypothesis.yaml and the run's task,
    model and corruption: the verify step is then run as `discover` runs it (under the folder's
    lock, recorded in its manifest with a fingerprint) and report.html is rebuilt; `settings`
    are stored in the run's config.json `verify_settings` (so the fingerprint and a later
    `discover --resume` see them). An edited copy of a hypothesis goes to another folder (made
    if missing): it is not the run's explanation."""
    from wildcircuits.explanation.hypothesis import load_hypothesis
    from wildcircuits.models import load_model
    from wildcircuits.names import Shape
    from wildcircuits.tasks import load_task
    from wildcircuits.verification.run import verify

    root = Path(out)
    if (root / "manifest.json").exists() and (root / "config.json").exists():
        request = RunRequest(Path(hypothesis_path), task_name, model_name, corruption)
        return _verify_run_folder(root, request, dict(settings or {}), device, progress)
    task = load_task(task_name)
    model = load_model(model_name, device=device)
    hypothesis = load_hypothesis(hypothesis_path, Shape(model.n_layers, model.n_heads))
    chosen = _settings(settings or {})
    result = verify(model, task, hypothesis, chosen, corruption=corruption,
                    source=hypothesis_path, progress=progress)  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    return result.save(root / "verification.json")


@dataclass(frozen=True)
class RunRequest:
    """What `wildcircuits verify` was asked to verify, checked against a run folder's own."""

    hypothesis: Path
    task: str
    model: str
    corruption: str | None


def _settings(settings: Mapping[str, Any]):
    from wildcircuits.verification.run import VerifySettings

    try:
        return VerifySettings(**settings)
    except TypeError as error:
        from wildcircuits.errors import InputError

        raise InputError(f"verify settings: {error}; see docs/verify.md") from None


def _verify_run_folder(root: Path, request: RunRequest, settings: dict[str, Any], device: str,
                       progress: bool) -> Path:  # fmt: skip
    """The verify step of run folder `root` (its own hypothesis, task, model and corruption
    only), with `settings` stored in its config."""
    from wildcircuits.errors import InputError
    from wildcircuits.pipeline.runner import rerun_steps
    from wildcircuits.pipeline.steps_explain import check_explainable

    config = check_explainable(root)
    own = root / "hypothesis.yaml"
    if not own.exists() or request.hypothesis.resolve() != own.resolve():
        raise InputError(
            f"--out {root} is a run folder: its verification.json verifies its own "
            f"hypothesis.yaml, not {request.hypothesis}; give another --out folder for an "
            "edited copy"
        )
    if (request.task, request.model) != (config.task, config.model):
        raise InputError(
            f"--task {request.task} --model {request.model} disagree with the run folder's "
            f"{config.task} / {config.model}; give the run's task and model"
        )
    if request.corruption not in (None, config.corruption):
        raise InputError(
            f"--corruption {request.corruption}: the run folder's circuit was found with "
            f"{config.corruption or 'the task default'}; leave --corruption out, or give "
            "another --out folder"
        )
    fixed = {"n": config.n_heldout, "seed": config.seed}
    clash = [f"{k} {settings[k]}" for k in fixed if settings.get(k, fixed[k]) != fixed[k]]
    if clash:
        raise InputError(
            f"{', '.join(clash)}: a run folder's verify step starts from the run's own held-out "
            f"prompts (n {config.n_heldout}, seed {config.seed}); leave them out (--max-n and "
            "--budget may change), rerun `discover` with other sizes, or give another --out"
        )
    settings = {k: v for k, v in settings.items() if k not in fixed}
    config = config.with_(device=device, verify_settings={**config.verify_settings, **settings})
    pipeline_settings(config)  # bad settings fail here, before the folder is touched
    rerun_steps(root, config, ("verify",), progress)
    return root / "verification.json"
