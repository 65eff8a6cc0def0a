"""Steps: explain the selected circuit (explanation.json), then draft its hypothesis
(hypothesis.yaml).

The candidates are the heads and MLPs of the evaluate step's selected circuit (circuit.json,
the headline circuit of metrics.json); the compact circuit of components at positions is
searched on the train split and reported on the held-out test split
(`wildcircuits.explanation.run.explain`). The hypothesis step drafts the hypothesis file from
explanation.json (`hypothesis_from_explanation`), writes it, then reads it back through the
same checks a person's edit will meet (`load_hypothesis` with the model's shape and the task's
positions), so a draft the loader would refuse is never left in the folder. Drafting is its own
step so that a change to the drafting rules redrafts and reverifies without re-explaining.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from wildcircuits.pipeline.context import Context

OUTPUTS = ["explanation.json"]
HYPOTHESIS_OUTPUTS = ["hypothesis.yaml"]


def circuit_nodes(ctx: Context) -> list[str]:
    """Display names of the selected circuit's heads and MLPs (circuit.json)."""
    from wildcircuits.graph.mib import load_mib_json
    from wildcircuits.names import NodeKind

    circuit = load_mib_json(ctx.folder.path("circuit.json"), ctx.engine.graph).circuit
    return [n.display for n in circuit.nodes() if n.kind in (NodeKind.HEAD, NodeKind.MLP)]


def explain_step(ctx: Context) -> list[str]:
    """Explain the selected circuit on train / test; write explanation.json."""
    from wildcircuits.explanation.run import explain

    nodes = circuit_nodes(ctx)
    ctx.say(
        f"explain: components at positions among the selected circuit's {len(nodes)} heads "
        f"and MLPs, {ctx.train.batch} search / {ctx.test.batch} held-out prompts"
    )
    result = explain(ctx.model, ctx.train, ctx.test, nodes=nodes, progress=ctx.progress)
    provenance = {
        **ctx.provenance(ctx.test, split="test", search_split="train"),
        **result.provenance,
        "candidates": f"the {len(nodes)} heads and MLPs of circuit.json",
    }
    result = replace(result, provenance=provenance)
    result.save(ctx.folder.path("explanation.json"))
    return list(OUTPUTS)


def hypothesis_step(ctx: Context) -> list[str]:
    """Draft hypothesis.yaml from explanation.json."""
    from wildcircuits.results.explain import Explanation

    draft_hypothesis(ctx, Explanation.load(ctx.folder.path("explanation.json")))
    return list(HYPOTHESIS_OUTPUTS)


def draft_hypothesis(ctx: Context, result) -> Path:
    """Write hypothesis.yaml from `result` and check it loads as written."""
    from wildcircuits.explanation.hypothesis import (
        hypothesis_from_explanation,
        load_hypothesis,
        write_hypothesis,
    )
    from wildcircuits.explanation.positions import position_index
    from wildcircuits.names import Shape

    positions = tuple(position_index(ctx.test)[0])
    model = ctx.model
    hypothesis = hypothesis_from_explanation(result, ctx.config.task, ctx.config.model)
    path = write_hypothesis(ctx.folder.path("hypothesis.yaml"), hypothesis, positions)
    load_hypothesis(path, Shape(model.n_layers, model.n_heads), positions)
    return path


# a finished run folder (`wildcircuits explain RUN_DIR`) ----------------------------------------
def check_explainable(run_dir: Path | str):
    """The run's `DiscoverConfig` when RUN_DIR holds an evaluate step that finished and agrees
    with its config.json (the selected circuit to explain); else an InputError saying how to
    get one. Reads files only: no model is loaded."""
    from wildcircuits.errors import InputError, WildcircuitsError
    from wildcircuits.pipeline.config import DiscoverConfig
    from wildcircuits.pipeline.fingerprint import disagreement
    from wildcircuits.results import load_json
    from wildcircuits.results.manifest import Manifest

    root = Path(run_dir)
    if not root.is_dir():
        why = "is not a folder" if root.exists() else "does not exist"
        raise InputError(f"RUN_DIR {str(root)!r} {why}; give a `wildcircuits discover` run folder")
    try:
        config = DiscoverConfig.from_dict(load_json(root / "config.json"))
        manifest = Manifest.load(root / "manifest.json")
    except (WildcircuitsError, TypeError, ValueError) as error:
        raise InputError(
            f"{root} is not a readable run folder ({error}); give a folder written by "
            "`wildcircuits discover`"
        ) from None
    why = disagreement("evaluate", config.to_dict(), manifest, root)
    if why is not None:
        raise InputError(
            f"{root} has no selected circuit to explain ({why}); run `wildcircuits discover "
            f"{config.task} --out {root} --resume` first"
        )
    return config


def explain_run_folder(
    run_dir: Path | str, device: str | None = None, progress: bool = True
) -> list[str]:
    """Recompute the explain and hypothesis steps of a finished run folder (under its lock,
    recorded in its manifest with fingerprints, like `discover`), then rebuild report.html if
    the run has one. `device`: where to load the model (default: the run's). Returns the files
    written."""
    from wildcircuits.pipeline.runner import rerun_steps

    config = check_explainable(run_dir)
    if device is not None:
        config = config.with_(device=device)
    reported = rerun_steps(run_dir, config, ("explain", "hypothesis"), progress)
    written = [*OUTPUTS, *HYPOTHESIS_OUTPUTS]
    return [*written, "report.html"] if reported else written
