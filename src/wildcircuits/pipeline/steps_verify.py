"""Step: verify the drafted hypothesis (verification.json), and `wildcircuits verify FILE`.

The step reads RUN_DIR/hypothesis.yaml as the explain step wrote it (through the same checks a
person's edit meets) and tests it on the run's held-out split (`n_heldout` prompts to start;
`wildcircuits.verification.run.verify` grows them where an interval is too wide, within its
time budget). A person who edits the hypothesis verifies the edited copy with
`wildcircuits verify HYPOTHESIS.yaml --task T --model M --out DIR` (`verify_file`): the run
folder's own hypothesis.yaml is an output of the explain step, so editing it in place makes a
`--resume` redo the explain step.
"""

from __future__ import annotations

from pathlib import Path

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
    from wildcircuits.verification.run import VerifySettings

    chosen = {"n": config.n_heldout, "max_n": max(64, config.n_heldout), "seed": config.seed,
              **PIPELINE_VERIFY, **config.verify_settings}  # fmt: skip
    try:
        return VerifySettings(**chosen)
    except TypeError as error:
        from wildcircuits.errors import InputError

        raise InputError(f"verify_settings: {error}; see docs/verify.md") from None


def verify_file(
    hypothesis_path: Path | str,
    task_name: str,
    model_name: str,
    out: Path | str,
    settings=None,
    device: str = "cpu",
    corruption: str | None = None,
    progress: bool = True,
) -> Path:
    """Verify a hypothesis file for a task and model; write OUT/verification.json and return
    its path. The file is checked (shape, positions) before any long work.

    OUT may be a run folder only for that folder's own hypothesis.yaml and the run's task and
    model: the verify step is then run as `discover` runs it (under the folder's lock, recorded
    in its manifest with a fingerprint) and report.html is rebuilt. An edited copy of a
    hypothesis goes to another folder (made if missing): it is not the run's explanation."""
    from wildcircuits.explanation.hypothesis import load_hypothesis
    from wildcircuits.models import load_model
    from wildcircuits.names import Shape
    from wildcircuits.tasks import load_task
    from wildcircuits.verification.run import verify

    root = Path(out)
    if (root / "manifest.json").exists() and (root / "config.json").exists():
        return _verify_run_folder(root, Path(hypothesis_path), task_name, model_name, device,
                                  progress)  # fmt: skip
    task = load_task(task_name)
    model = load_model(model_name, device=device)
    hypothesis = load_hypothesis(hypothesis_path, Shape(model.n_layers, model.n_heads))
    result = verify(model, task, hypothesis, settings, corruption=corruption,
                    source=hypothesis_path, progress=progress)  # fmt: skip
    root.mkdir(parents=True, exist_ok=True)
    return result.save(root / "verification.json")


def _verify_run_folder(root: Path, hypothesis: Path, task: str, model: str, device: str,
                       progress: bool) -> Path:  # fmt: skip
    """The verify step of run folder `root` (its own hypothesis, task and model only)."""
    from wildcircuits.errors import InputError
    from wildcircuits.pipeline.runner import rerun_step
    from wildcircuits.pipeline.steps_explain import check_explainable

    config = check_explainable(root)
    own = root / "hypothesis.yaml"
    if not own.exists() or hypothesis.resolve() != own.resolve():
        raise InputError(
            f"--out {root} is a run folder: its verification.json verifies its own "
            f"hypothesis.yaml, not {hypothesis}; give another --out folder for an edited copy"
        )
    if (task, model) != (config.task, config.model):
        raise InputError(
            f"--task {task} --model {model} disagree with the run folder's {config.task} / "
            f"{config.model}; give the run's task and model"
        )
    rerun_step(root, config.with_(device=device), "verify", progress)
    return root / "verification.json"
