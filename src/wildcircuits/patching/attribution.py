"""Attribution patching: a first-order (gradient) estimate of activation patching.

For an activation a with value a_base on the run being patched and a_source on the other run,
    m(patched) - m(base) ~= (a_source - a_base) . d m / d a, evaluated on the base run.
Noising (direction="noise"): base = clean, source = corrupted (estimates patching corrupted values
into the clean run). Denoising: base = corrupted, source = clean. One forward + one backward on
the base run and one forward on the source run give every site of every layer at once.

Targets (`AttributionTarget`):
- heads: z of each head, summed over positions and d_head -> layer x head (estimates patching
  one head's z at every position);
- mlp: each MLP's output at each position -> layer x position;
- resid: resid_pre of each layer at each position -> layer x position.
With `per_position=False`, mlp / resid sum over positions -> layer x one column ("all").

Normalization, as for activation patching (metric means over the batch; 1 = full effect):
denoising (m_patched - m_corrupted) / (m_clean - m_corrupted) with m_patched - m_corrupted
estimated; noising (m_clean - m_patched) / (m_clean - m_corrupted), i.e. minus the estimate.
Positions are absolute indices; with prompts of different lengths their labels are those of the
first example.
"""

from __future__ import annotations

import sys
from enum import StrEnum
from typing import Any

import torch
from torch import Tensor

from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.patching.activation_plan import Direction
from wildcircuits.patching.grid import ScoreGrid, head_labels, layer_labels, position_labels
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Component, Site


class AttributionTarget(StrEnum):
    """Which activations attribution patching scores."""

    HEADS = "heads"
    MLP = "mlp"
    RESID = "resid"


_COMPONENT = {
    AttributionTarget.HEADS: Component.Z,
    AttributionTarget.MLP: Component.MLP_OUT,
    AttributionTarget.RESID: Component.RESID_PRE,
}


_NORMALIZATION = {
    Direction.DENOISE: "estimate of (m_patched - m_corrupted) / (m_clean - m_corrupted)",
    Direction.NOISE: "estimate of (m_clean - m_patched) / (m_clean - m_corrupted)",
}


def _reduce(target: AttributionTarget, product: Tensor, per_position: bool) -> Tensor:
    """Per-row scores of one layer from (source - base) * grad.

    heads: (batch, pos, head, d_head) -> (batch, head); mlp / resid: (batch, pos, d_model) ->
    (batch, pos), or (batch, 1) summed over positions.
    """
    if target is AttributionTarget.HEADS:
        return product.sum(dim=(1, 3))
    per_pos = product.sum(-1)  # (batch, pos)
    return per_pos if per_position else per_pos.sum(1, keepdim=True)


def _chunk_scores(
    model: InstrumentedModel,
    problem: PatchingProblem,
    target: AttributionTarget,
    direction: Direction,
    per_position: bool,
) -> tuple[Tensor, Tensor, Tensor]:
    """Summed over this chunk's rows: (layer, cols) estimates, clean and corrupted metrics."""
    sites = [Site(_COMPONENT[target], layer) for layer in range(model.n_layers)]
    base, source = (
        (problem.clean, problem.corrupted)
        if direction is Direction.NOISE
        else (problem.corrupted, problem.clean)
    )
    with torch.no_grad():
        source_run = model.run(source, capture=sites, positions=problem.positions)
    base_run = model.run(base, capture=sites, positions=problem.positions, grad=True)
    base_metric = problem.score(base_run.logits)  # (batch,)
    grads = torch.autograd.grad(base_metric.sum(), [base_run[s] for s in sites])
    layers = []
    for site, grad in zip(sites, grads, strict=True):
        delta = source_run[site] - base_run[site].detach()
        layers.append(_reduce(target, delta * grad, per_position).sum(0))
    source_metric = problem.score(source_run.logits).detach()
    metrics = (source_metric, base_metric.detach())
    clean, corrupted = metrics if direction is Direction.DENOISE else metrics[::-1]
    return torch.stack(layers), clean.sum(), corrupted.sum()


def attribution_patch(
    model: InstrumentedModel,
    problem: PatchingProblem,
    target: AttributionTarget | str,
    direction: Direction | str = Direction.DENOISE,
    per_position: bool = True,
    batch_size: int = 16,
    progress: bool = False,
    normalize: bool = True,
) -> ScoreGrid:
    """Gradient estimate of activation patching for every head / MLP / residual site.

    Returns a layer x head (heads) or layer x position (mlp, resid) `ScoreGrid` normalized by
    m_clean - m_corrupted (see the module doc), or in metric units with `normalize=False`.
    Cost per chunk of `batch_size` rows: one forward with backward on the base run and one
    forward on the source run.
    """
    target, direction = AttributionTarget(target), Direction(direction)
    total = clean = corrupted = 0.0
    chunks = problem.chunks(batch_size)
    if progress:
        from tqdm import tqdm

        chunks = tqdm(chunks, desc="attribution patching", file=sys.stderr, leave=False)
    for _, chunk in chunks:
        scores, m_clean, m_corr = _chunk_scores(model, chunk, target, direction, per_position)
        total, clean, corrupted = total + scores, clean + m_clean, corrupted + m_corr
    n = problem.batch
    gap = float(clean - corrupted) / n if normalize else 1.0
    sign = -1.0 if normalize and direction is Direction.NOISE else 1.0
    values = (sign * total / n / gap).detach().cpu()
    grid = (values, clean / n, corrupted / n, normalize)
    return _grid(model, problem, target, direction, per_position, grid)


def _str_tokens(model: InstrumentedModel, ids: Tensor) -> list[str]:
    """Token strings, or the ids themselves for a model without a tokenizer."""
    if model.tokenizer is None:
        return [str(i) for i in ids.tolist()]
    return model.to_str_tokens(ids)


def _grid(model, problem, target, direction, per_position, result) -> ScoreGrid:
    values, clean, corrupted, normalized = result
    if target is AttributionTarget.HEADS:
        cols, col_axis = head_labels(model.n_heads), "head"
    elif per_position:
        length = int(problem.clean.attention_mask[0].sum())
        ids = problem.clean.input_ids[0]
        labels = position_labels(_str_tokens(model, ids[:length]))
        cols = labels + [f"{i}:<pad>" for i in range(length, problem.clean.seq_len)]
        col_axis = "position"
    else:
        cols, col_axis = ["all"], "positions"
    provenance: dict[str, Any] = {
        **problem.provenance,
        "method": "attribution_patching",
        "direction": direction.value,
        "target": target.value,
        "site": _COMPONENT[target].value,
        "normalization": _NORMALIZATION[direction] if normalized else "none (m_patched - m_base)",
        "gradient_at": "clean run" if direction is Direction.NOISE else "corrupted run",
        "clean_metric": float(clean),
        "corrupted_metric": float(corrupted),
    }
    return ScoreGrid(
        name=f"attribution_{target.value}_{direction.value}",
        title=f"Attribution patching ({direction.value}): {target.value}",
        values=values,
        row_axis="layer",
        col_axis=col_axis,
        row_labels=layer_labels(model.n_layers),
        col_labels=cols,
        provenance=provenance,
        value_label="normalized estimated effect" if normalized else "estimated metric change",
    )
