"""Fast activation patching: forwards start at the patched layer, many patches per forward.

Patching copies one activation of a *source* run into a *target* run and reads the metric:

- denoising: clean activations patched into the corrupted run (source clean, target corrupted);
  effect = (m_patched - m_corrupted) / (m_clean - m_corrupted);
- noising: corrupted activations patched into the clean run (source corrupted, target clean);
  effect = (m_clean - m_patched) / (m_clean - m_corrupted).

Both are 1 for a full effect and 0 for none. Every m is the metric averaged over the batch, and the
normalisation uses those batch means (not a mean of per-row ratios). The raw patched metric grid is
returned too.

How it is fast (and exact: tests/test_activation_patching.py compares it with the one-forward-per-
patch loop in `activation_reference`): the source activations and the target run's `resid_pre` of
every layer are cached once. A patch at layer l cannot change anything before l, so its forward
starts at l from the cached `resid_pre`; the target batch is replicated k times (k patches at once,
at most `max_rows` rows per forward) and one intervention patches a different head / position in
each replica; logits are computed only at the metric positions. Patches whose entries are identical
in both runs (e.g. positions before the first token where clean and corrupted differ) are not run:
their patched run *is* the target run.

Positions (`PositionMode`): rows of a padded batch may differ in length, so every column of a
position-resolved grid names one position *per row*:
- ABSOLUTE: the i-th real token of each row (counted from each row's first real token, so left and
  right padding both work), for i below the shortest row's length; labels are row 0's tokens.
- NAMED: the problem's named positions (e.g. IO, S1, S2, END), each at its own index in each row.
- ALL: one column patching every position at once.
- AUTO: ABSOLUTE when every row has the same length, else NAMED when the problem names at least two
  positions, else ABSOLUTE (truncated to the shortest row).
Head kinds other than heads_by_pos (heads, q, k, v, pattern) patch every position.

GQA: k and v are patched per KV head (the value the model computes); patching KV head g changes the
keys / values of every query head sharing it (heads g*group .. (g+1)*group - 1); their grids have
KV-head columns (KV0, KV1, ...). q, z and pattern are per query head.

    from wildcircuits.patching.activation import activation_patching
    result = activation_patching(model, problem, kind="heads", direction="denoise")
    result.effect.top(10)          # [(row, column, effect), ...]
    result.save("runs/ioi")        # JSON + heatmaps of the effect and the raw metric
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from tqdm.auto import tqdm

from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.models.tokens import Tokens
from wildcircuits.patching.activation_plan import (
    BY_POSITION,
    COMPONENT,
    Columns,
    Direction,
    PatchingResult,
    PatchItem,
    PatchKind,
    PositionMode,
    batch_mean,
    build_result,
    empty_values,
    grid_cell,
    patch_mask,
    plan,
    position_columns,
)
from wildcircuits.patching.edge_prefix import Prefix, counterfactual_prefix
from wildcircuits.patching.hooks import Intervention, Mode
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Component, Site

__all__ = [
    "Direction",
    "PatchKind",
    "PatchingResult",
    "PositionMode",
    "activation_patching",
    "columns_for",
]


@dataclass(frozen=True)
class _Runs:
    """The two unpatched runs, cached once."""

    target_tokens: Tokens
    source: dict[int, torch.Tensor]  # layer -> source activation of the kind's component
    target: dict[int, torch.Tensor]  # layer -> target activation (to skip no-op patches)
    target_resid: dict[int, torch.Tensor]  # layer -> target resid_pre (batch, pos, d_model)
    clean_metric: float
    corrupted_metric: float
    target_metric: float
    prefix: Prefix | None = None  # the target run's shared first columns (`edge_prefix`)


def activation_patching(
    model: InstrumentedModel,
    problem: PatchingProblem,
    kind: PatchKind | str = PatchKind.HEADS,
    direction: Direction | str = Direction.DENOISE,
    positions: PositionMode | str = PositionMode.AUTO,
    layers: Sequence[int] | None = None,
    max_rows: int = 320,
    progress: bool = True,
    share_prefix: bool = True,
) -> PatchingResult:
    """Patch every site of `kind` one at a time; return the effect and raw metric grids.

    Grids: resid / attn_out / mlp_out (layer, position); heads, q, pattern (layer, head);
    k, v (layer, kv_head); heads_by_pos (layer.head, position). Up to `max_rows` rows
    (patches x batch) run in one forward. `layers`: patch only these (other grid rows are NaN).
    share_prefix: where every clean and corrupted prompt agree on their first columns, no patch
    changes them: the patched forwards then run the later columns only, attention reading the
    target run's cached keys and values (`patching.edge_prefix`; not for `pattern`, whose
    values span every column). False runs every column.
    """
    from wildcircuits.inputs import check_choice, check_layers, check_size

    kind, direction = (
        check_choice("kind", kind, PatchKind),
        check_choice("direction", direction, Direction),
    )
    check_choice("positions", positions, PositionMode)
    check_size("max_rows", max_rows)
    if layers is not None:
        layers = check_layers("layers", layers, model.n_layers)
    component = COMPONENT[kind]
    columns = columns_for(model, problem, kind, positions)
    runs = _cache_runs(model, problem, component, direction, share_prefix)
    layers = plan(model, kind, columns, layers)
    replicas = max(1, max_rows // problem.batch)
    values = empty_values(model, kind, columns)
    with tqdm(total=sum(map(len, layers)), desc=f"patch {kind.value}", disable=not progress) as bar:
        for items in layers:
            todo = []
            for item in items:
                if _is_noop(runs, component, item, columns, problem.batch):
                    values[grid_cell(model, kind, item)] = runs.target_metric
                else:
                    todo.append(item)
            for start in range(0, len(todo), replicas):
                chunk = todo[start : start + replicas]
                means = _patched_means(model, problem, component, runs, chunk, columns)
                for item, mean in zip(chunk, means, strict=True):
                    values[grid_cell(model, kind, item)] = mean
            bar.update(len(items))
    return build_result(
        model, problem, kind, direction, columns, values,
        runs.clean_metric, runs.corrupted_metric, method="fast",
    )  # fmt: skip


def columns_for(
    model: InstrumentedModel, problem: PatchingProblem, kind: PatchKind, positions
) -> Columns:
    """Position columns of a kind: head kinds other than heads_by_pos patch every position."""
    if kind in BY_POSITION or kind is PatchKind.HEADS_BY_POS:
        return position_columns(model, problem, positions)
    return position_columns(model, problem, PositionMode.ALL)


def _cache_runs(
    model, problem: PatchingProblem, component: Component, direction, share_prefix: bool
) -> _Runs:
    layers = range(model.n_layers)
    sites = [Site(component, layer) for layer in layers]
    resid = [Site(Component.RESID_PRE, layer) for layer in layers]
    capture = sites if component is Component.RESID_PRE else sites + resid
    clean = model.run(problem.clean, capture=capture, positions=problem.positions)
    corrupted = model.run(problem.corrupted, capture=capture, positions=problem.positions)
    denoise = direction is Direction.DENOISE
    source, target = (clean, corrupted) if denoise else (corrupted, clean)
    clean_metric = batch_mean(problem, clean.logits)
    corrupted_metric = batch_mean(problem, corrupted.logits)
    prefix = None
    if share_prefix and component is not Component.PATTERN:
        prefix = counterfactual_prefix(
            model, problem.clean, problem.corrupted, problem.positions, problem.position_mask
        )
    return _Runs(
        target_tokens=problem.corrupted if denoise else problem.clean,
        source={layer: source[s] for layer, s in zip(layers, sites, strict=True)},
        target={layer: target[s] for layer, s in zip(layers, sites, strict=True)},
        target_resid={layer: target[s] for layer, s in zip(layers, resid, strict=True)},
        clean_metric=clean_metric,
        corrupted_metric=corrupted_metric,
        target_metric=corrupted_metric if denoise else clean_metric,
        prefix=prefix,
    )


def _is_noop(runs: _Runs, component, item: PatchItem, columns: Columns, batch: int) -> bool:
    """True when the patched entries are identical in source and target (nothing to run)."""
    source, target = runs.source[item.layer], runs.target[item.layer]
    mask = patch_mask(component, source.shape, [item], columns, batch).to(source.device)
    return bool(torch.equal(torch.where(mask, source, target), target))


def patch_intervention(
    site: Site, source: torch.Tensor, mask: torch.Tensor, replicas: int
) -> Intervention:
    """REPLACE the masked entries of `site`'s value (replicas * batch, ...) by the source's."""
    if replicas > 1:
        source = source.repeat(replicas, *([1] * (source.ndim - 1)))  # (replicas * batch, ...)
    mask = mask.to(source.device)

    def patch(current: torch.Tensor) -> torch.Tensor:
        return torch.where(mask, source, current)

    return Intervention(site, Mode.REPLACE, patch)


def _patched_means(model, problem, component, runs: _Runs, chunk, columns) -> list[float]:
    """Batch-mean metric of each patch in `chunk` (one layer), from one forward of k replicas."""
    layer, batch, k = chunk[0].layer, problem.batch, len(chunk)
    rows = torch.arange(batch, device=problem.positions.device).repeat(k)  # (k * batch,)
    source, prefix = runs.source[layer], runs.prefix
    mask = patch_mask(component, (k * batch, *source.shape[1:]), chunk, columns, batch)
    resid = runs.target_resid.get(layer) if layer > 0 else None
    tokens, positions = runs.target_tokens, problem.positions
    if prefix is not None:  # every tensor at the later columns only
        tokens = tokens.columns(prefix.length, tokens.seq_len)  # the target's own tokens
        positions = prefix.shift(positions)
        source, mask = prefix.cut(source), prefix.cut(mask)
        resid = prefix.cut(resid)
    result = model.run(
        tokens.select(rows),
        interventions=[patch_intervention(Site(component, layer), source, mask, k)],
        positions=positions[rows],
        start_layer=layer,
        start_resid=None if resid is None else resid.repeat(k, 1, 1),
        prefix=prefix,
    )
    scores = problem.score(result.logits, rows=rows).reshape(k, batch)  # (k, batch)
    return scores.double().mean(-1).tolist()
