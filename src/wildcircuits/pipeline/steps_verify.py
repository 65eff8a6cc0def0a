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
    from wildcircuits.verification.run import VerifySettings, verify

    model, config = ctx.model, ctx.config
    path = ctx.folder.path("hypothesis.yaml")
    hypothesis = load_hypothesis(path, Shape(model.n_layers, model.n_heads))
    settings = VerifySettings(n=config.n_heldout, max_n=max(64, config.n_heldout),
                              seed=config.seed)  # fmt: skip
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
    """Verify a hypothesis file for a task and model; write OUT/verification.json (the folder is
    made if missing) and rebuild OUT/report.html when OUT is a run folder. Returns the JSON's
    path. The file is checked (shape, positions) before any long work."""
    from wildcircuits.explanation.hypothesis import load_hypothesis
    from wildcircuits.models import load_model
    from wildcircuits.names import Shape
    from wildcircuits.tasks import load_task
    from wildcircuits.verification.run import verify

    task = load_task(task_name)
    model = load_model(model_name, device=device)
    hypothesis = load_hypothesis(hypothesis_path, Shape(model.n_layers, model.n_heads))
    result = verify(model, task, hypothesis, settings, corruption=corruption,
                    source=hypothesis_path, progress=progress)  # fmt: skip
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    target = root / "verification.json"
    result.save(target)
    if (root / "manifest.json").exists() and (root / "config.json").exists():
        from wildcircuits.report.html import build_report

        build_report(root)
    return target
