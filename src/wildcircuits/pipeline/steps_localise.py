"""Steps 1-2: the behaviour probe (with the does-the-model-do-it gate) and localisation."""

from __future__ import annotations

from wildcircuits.names import head_node, parse_head
from wildcircuits.pipeline.context import Context, StopRun
from wildcircuits.results.behaviour import Example, Examples, ProbeResult
from wildcircuits.results.localise import AttentionPattern, Localise
from wildcircuits.tasks.spec import MetricKind


def behaviour(ctx: Context) -> list[str]:
    """Probe the task; stop the run when the model does not do it (see `_gate`)."""
    from wildcircuits.tasks import Split
    from wildcircuits.tasks.probe import run_probe
    from wildcircuits.tasks.probe_output import write_probe

    config = ctx.config
    ctx.say(f"behaviour: probing {config.task} on {config.n_examples} train examples")
    result = run_probe(ctx.model, ctx.task, n=config.n_examples, seed=config.seed,
                       split=Split.TRAIN, progress=ctx.progress)  # fmt: skip
    write_probe(result, ctx.folder.root)
    _examples(ctx).save(ctx.folder.path("examples.json"))
    outputs = ["behaviour.json", "behaviour.png", "examples.json"]
    reason = _gate(result, config.min_accuracy, config.min_loss_gap)
    if reason:
        raise StopRun(reason, outputs)
    return outputs


def saved_gate(ctx: Context) -> str | None:
    """The gate of a finished behaviour step, from its behaviour.json (a resumed run that the
    gate stopped stays stopped)."""
    result = ProbeResult.load(ctx.folder.path("behaviour.json"))
    return _gate(result, ctx.config.min_accuracy, ctx.config.min_loss_gap)


def _gate(result: ProbeResult, min_accuracy: float, min_loss_gap: float = 1.0) -> str | None:
    """Why the model does not do the task, or None when it does.

    It does when the clean metric beats the default corruption's in the metric's own direction
    and, for a metric read at one position, clean top-1 accuracy >= `min_accuracy`; for the loss
    (read over many positions, e.g. induction's repeated half, where top-1 accuracy on random
    tokens is not the bar) the clean loss is at least `min_loss_gap` nats below the corrupted
    (`config.MIN_LOSS_GAP` by default).
    """
    clean, corrupted = result.clean, result.baseline
    better = clean.mean > corrupted.mean
    if not result.higher_is_better:
        better = clean.mean < corrupted.mean
    where = f"clean {result.metric} {clean.mean:.3f} vs {corrupted.mean:.3f} on the "
    where += f"{result.default_corruption} corruption"
    if result.metric == MetricKind.LOSS.value:
        if corrupted.mean - clean.mean >= min_loss_gap and better:
            return None
        return (
            f"the model does not do the task: {where}, a gap below {min_loss_gap:.1f} nats "
            f"(clean top-1 accuracy {clean.accuracy:.2f}); there is no behaviour to find a "
            "circuit for"
        )
    if clean.accuracy < min_accuracy or not better:
        return (
            f"the model does not do the task: clean accuracy {clean.accuracy:.2f} "
            f"(threshold {min_accuracy:.2f}), {where}; there is no behaviour to find a "
            "circuit for"
        )
    return None


def _examples(ctx: Context) -> Examples:
    rows = [
        Example(
            clean=example.clean.text,
            corrupted={name: p.text for name, p in example.corrupted.items()},
            answers=tuple(example.answer_texts),
            distractors=tuple(example.distractor_texts),
            template=example.template,
        )
        for example in ctx.train_data.examples[:5]
    ]
    return Examples(provenance=ctx.provenance(), examples=tuple(rows))


def localise(ctx: Context) -> list[str]:
    """DLA by layer and head, activation patching (layer x position, heads), head roles."""
    from wildcircuits.localise.dla import direct_logit_attribution
    from wildcircuits.localise.head_roles import head_roles
    from wildcircuits.patching.activation import activation_patching

    model, problem = ctx.model, ctx.train
    ctx.say("localise: direct logit attribution")
    dla = direct_logit_attribution(model, problem, progress=ctx.progress)
    ctx.say("localise: activation patching (residual stream x position, then every head)")
    resid = activation_patching(model, problem, "resid", "denoise", progress=ctx.progress)
    heads = activation_patching(model, problem, "heads", "denoise", progress=ctx.progress)
    ctx.say("localise: head roles")
    roles = head_roles(model, problem)
    grids = {
        "dla_layer": dla.layer_grid(),
        "dla_head": dla.head_grid(),
        "patch_layer_pos": resid.effect,
        "patch_head": heads.effect,
    }
    key_heads = _key_heads(grids["dla_head"], grids["patch_head"])
    result = Localise(
        provenance=ctx.provenance(),
        grids={name: grid.saved() for name, grid in grids.items()},
        head_roles=roles.saved(),
        attention_patterns=_patterns(ctx, key_heads),
        clean_metric=resid.clean_metric,
        corrupted_metric=resid.corrupted_metric,
    )
    result.save(ctx.folder.path("localise.json"))
    return ["localise.json"]


def _key_heads(dla, patch, k: int = 4) -> list[tuple[int, int, str]]:
    """The heads with the largest |DLA| and |patching effect| (layer, head, why)."""
    chosen: dict[tuple[int, int], str] = {}
    for grid, why in ((patch, "largest patching effect"), (dla, "largest direct logit effect")):
        for row, col, value in grid.top(k):
            head = parse_head(f"{row}.{col}")  # a layer row label, '.', a head column label
            key = (head.layer, head.head)
            chosen.setdefault(key, f"{why} ({value:+.2f})")
    return [(layer, head, why) for (layer, head), why in list(chosen.items())[:k]]


def _patterns(ctx: Context, heads: list[tuple[int, int, str]]) -> tuple[AttentionPattern, ...]:
    from wildcircuits.localise.head_scores import head_patterns

    model, tokens = ctx.model, ctx.train.clean
    real = tokens.attention_mask[0].bool().cpu()
    words = model.to_str_tokens(tokens.input_ids[0].cpu()[real])
    patterns = head_patterns(model, tokens, [(layer, head) for layer, head, _ in heads], 0)
    return tuple(
        AttentionPattern(
            head=head_node(layer, head).display,
            why=why,
            prompt_index=0,
            tokens=tuple(words),
            pattern=tuple(map(tuple, patterns[(layer, head)].tolist())),
        )
        for layer, head, why in heads
    )
