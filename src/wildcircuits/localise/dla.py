"""Direct logit attribution (DLA): how much each component writes the metric's direction.

Convention
- The attributed quantity is the logit difference at the metric position of the clean run:
  mean logit of the answer set minus mean logit of the distractor set (the plain logit difference
  for single tokens), whatever metric the task declares. Its direction in the residual stream is
  d = mean_a W_U[a] - mean_d W_U[d]  (batch, d_model).
- The final residual at that position is a sum of parts: embeddings (+ positional embeddings),
  every layer's attention output and every layer's MLP output. The final norm is linearised with
  its scale frozen from the clean run (RMSNorm: divide by the run's own RMS at that position;
  LayerNorm: also centre), see `localise.norms`. Then part p contributes L(p) . d, and
  embed + sum attn + sum mlp + constant = the logit difference exactly (up to float rounding);
  `constant` holds the final norm's bias and the unembedding's bias, when the model has them.
- Per head: attn_out = sum_h result_h + b_O, so head h contributes L(result_h) . d and the output
  bias adds L(b_O) . d once (`attn_bias`): heads + attn_bias = the layer's attention part exactly.
- Gemma3 applies an RMSNorm to each attention / MLP output before the residual. Layer-level parts
  are the post-norm outputs, so they still sum exactly. For heads the post-norm is frozen too:
  post_norm(sum_h r_h + b) = sum_h r_h * s * (1 + w) + b * s * (1 + w), with s its scale on that
  layer's own attention output.
- Final logit softcapping (Gemma-2 style tanh cap): DLA is on the pre-softcap logits.
- Loss tasks (the metric read at k positions per row): the attributed quantity is the loss
  target's logit (no distractor) at each loss position, averaged over the row's positions; the
  parts still sum to it, since every part is linear in the positions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm import tqdm

from wildcircuits.localise.common import at_positions, provenance
from wildcircuits.localise.norms import freeze_norm
from wildcircuits.models.adapters import get_module
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.models.tokens import Tokens
from wildcircuits.names import head_node, layer_label, mlp_node
from wildcircuits.patching.grid import ScoreGrid, head_labels, layer_labels
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Component, Site
from wildcircuits.tasks.metrics import Targets


@dataclass(frozen=True)
class LogitAttribution:
    """Per-example DLA of the logit difference. All values in logits.

    embed: (batch,) embeddings (+ positional embeddings); attn, mlp: (batch, layer) each layer's
    attention / MLP output; heads: (batch, layer, head); attn_bias: (batch, layer) the attention
    output bias (through the post-norm when there is one); constant: (batch,) final norm bias and
    unembedding bias; total: (batch,) the logit difference computed by the model's own final norm
    and unembedding (pre-softcap).
    """

    embed: Float[Tensor, " batch"]
    attn: Float[Tensor, "batch layer"]
    mlp: Float[Tensor, "batch layer"]
    heads: Float[Tensor, "batch layer head"]
    attn_bias: Float[Tensor, "batch layer"]
    constant: Float[Tensor, " batch"]
    total: Float[Tensor, " batch"]
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def parts_sum(self) -> Float[Tensor, " batch"]:
        """embed + all attention + all MLP parts + constant; equals `total` up to rounding."""
        return self.embed + self.attn.sum(-1) + self.mlp.sum(-1) + self.constant

    def layer_grid(self) -> ScoreGrid:
        """Batch-mean DLA, layer x {attn, mlp}."""
        values = torch.stack([self.attn.mean(0), self.mlp.mean(0)], dim=1)  # (layer, 2)
        return ScoreGrid(
            name="dla_layers",
            title="Direct logit attribution per layer (logit diff)",
            values=values,
            row_axis="layer",
            col_axis="component",
            row_labels=layer_labels(values.shape[0]),
            col_labels=["attn", "mlp"],
            provenance=self.provenance,
            value_label="logit diff",
        )

    def head_grid(self) -> ScoreGrid:
        """Batch-mean DLA, layer x head."""
        values = self.heads.mean(0)  # (layer, head)
        return ScoreGrid(
            name="dla_heads",
            title="Direct logit attribution per head (logit diff)",
            values=values,
            row_axis="layer",
            col_axis="head",
            row_labels=layer_labels(values.shape[0]),
            col_labels=head_labels(values.shape[1]),
            provenance=self.provenance,
            value_label="logit diff",
        )

    def components(self) -> dict[str, float]:
        """Batch-mean DLA of every component by name: embed, L3.attn, L3.mlp, L3.H1, bias."""
        out = {"embed": float(self.embed.mean())}
        for name, value, _ in self._layer_parts():
            out[name] = value
        out["bias"] = float(self.constant.mean())
        return out

    def _layer_parts(self) -> list[tuple[str, float, bool]]:
        """(display name, batch-mean DLA, is a head) of each layer's attn, mlp and heads."""
        n_layers, n_heads = self.attn.shape[1], self.heads.shape[2]
        parts = []
        for layer in range(n_layers):
            parts.append((f"{layer_label(layer)}.attn", float(self.attn[:, layer].mean()), False))
            parts.append((mlp_node(layer).display, float(self.mlp[:, layer].mean()), False))
            for head in range(n_heads):
                value = float(self.heads[:, layer, head].mean())
                parts.append((head_node(layer, head).display, value, True))
        return parts

    def top_components(self, k: int = 20, heads: bool = True) -> list[tuple[str, float]]:
        """The k components with the largest |mean DLA|: embed, layers' attn / mlp, or heads."""
        items = [(name, value) for name, value, is_head in self._layer_parts() if is_head == heads]
        if not heads:
            items.insert(0, ("embed", float(self.embed.mean())))
        return sorted(items, key=lambda item: -abs(item[1]))[:k]

    def summary(self) -> dict[str, Any]:
        """JSON-ready batch means, the top components and the sum check."""
        return {
            "total_logit_diff": float(self.total.mean()),
            "parts_sum": float(self.parts_sum().mean()),
            "max_abs_sum_error": float((self.parts_sum() - self.total).abs().max()),
            "embed": float(self.embed.mean()),
            "constant": float(self.constant.mean()),
            "top_heads": self.top_components(20, heads=True),
            "top_layer_components": self.top_components(20, heads=False),
            "components": self.components(),
            "provenance": dict(self.provenance),
        }

    def save(self, folder: Path | str, top: int = 20) -> list[Path]:
        """Write dla_layers / dla_heads grids (+ heatmaps), dla_summary.json, dla_top bar chart."""
        from wildcircuits.report.figures import save_bars
        from wildcircuits.results import save_json

        folder = Path(folder)
        paths = [self.layer_grid().save(folder), self.head_grid().save(folder)]
        paths.append(save_json(folder / "dla_summary.json", self.summary()))
        ranked = sorted(
            (item for item in self.components().items() if item[0] != "bias"),
            key=lambda item: -abs(item[1]),
        )[:top]
        save_bars(
            [v for _, v in ranked],
            [n for n, _ in ranked],
            folder / "dla_top",
            f"Top {len(ranked)} components by |DLA| (logit diff)",
            "logit diff",
            self.provenance,
        )
        return paths


def unembed_matrix(model: InstrumentedModel) -> tuple[Tensor, Tensor | None]:
    """W_U (vocab, d_model) and the unembedding bias (vocab,) or None."""
    unembed = get_module(model.hf_model, model.adapter.unembed)
    return unembed.weight, unembed.bias


def _set_mean_rows(matrix: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
    """Mean of matrix rows over each example's id set: (batch, k) ids -> (batch, ...)."""
    rows = matrix[ids.to(matrix.device)]  # (batch, k, ...)
    weights = mask.to(matrix.device, matrix.dtype)
    weights = weights / weights.sum(1, keepdim=True).clamp(min=1)  # an empty set gives 0
    return torch.einsum("bk...,bk->b...", rows, weights)


def _set_mean_of(logits: Tensor, ids: Tensor, mask: Tensor) -> Tensor:
    """Mean logit over each example's id set: (batch, vocab) -> (batch,); an empty set gives 0."""
    weights = mask.to(logits.device, logits.dtype)
    picked = logits.gather(1, ids.to(logits.device))  # (batch, k)
    return (picked * weights).sum(1) / weights.sum(1).clamp(min=1)


def logit_diff_direction(
    model: InstrumentedModel, targets: Targets
) -> tuple[Float[Tensor, "batch d_model"], Float[Tensor, " batch"]]:
    """The logit difference's direction d (batch, d_model) and its unembedding-bias offset."""
    weight, bias = unembed_matrix(model)
    direction = _set_mean_rows(weight, targets.answers, targets.answer_mask) - _set_mean_rows(
        weight, targets.distractors, targets.distractor_mask
    )
    offset = torch.zeros(direction.shape[0], device=direction.device)
    if bias is not None:
        offset = _set_mean_rows(bias, targets.answers, targets.answer_mask) - _set_mean_rows(
            bias, targets.distractors, targets.distractor_mask
        )
    return direction.float(), offset.float()


def _project(part: Tensor, direction: Tensor) -> Tensor:
    """Dot each row's parts (batch, *any, d_model) with its direction (batch, d_model)."""
    shaped = direction.view(direction.shape[0], *([1] * (part.ndim - 2)), -1)
    return (part * shaped).sum(-1)


def _dla_sites(model: InstrumentedModel) -> list[Site]:
    sites = [Site(Component.EMBED), Site(Component.FINAL_RESID)]
    if model.adapter.pos_embed:
        sites.append(Site(Component.POS_EMBED))
    for layer in range(model.n_layers):
        sites += [Site(c, layer) for c in (Component.ATTN_OUT, Component.MLP_OUT, Component.Z)]
    return sites


def head_parts(
    model: InstrumentedModel, layer: int, z: Float[Tensor, "batch head d_head"]
) -> tuple[Float[Tensor, "batch head d_model"], Float[Tensor, "batch d_model"]]:
    """Each head's output and the output bias, as they enter the residual stream.

    With a post-attention norm (Gemma3), both pass through it with its scale frozen on this
    layer's attention output; their sum is then the layer's attn_out exactly.
    """
    results = torch.einsum("bhd,hdm->bhm", z, model.out_weight(layer)).float()
    attn = get_module(model.layer_module(layer), model.adapter.attention)
    bias = get_module(attn, model.adapter.out_proj).bias
    bias = (
        torch.zeros_like(results[:, 0]) if bias is None else bias.float().expand_as(results[:, 0])
    )
    if not model.adapter.post_attn_norm:
        return results, bias
    post_norm = get_module(model.layer_module(layer), model.adapter.post_attn_norm)
    frozen = freeze_norm(post_norm, results.sum(1) + bias)
    return frozen.linear(results), frozen.linear(bias) + frozen.constant()


def attribute_batch(
    model: InstrumentedModel,
    tokens: Tokens,
    positions: Int[Tensor, " batch"],
    targets: Targets,
) -> LogitAttribution:
    """DLA of the logit difference for one batch (one clean forward, no LM head). With
    positions (batch, k) (a loss task): DLA of the loss target's logit at each valid loss
    position, averaged over the row's positions (`_target_logit_dla`)."""
    run = model.run(tokens, capture=_dla_sites(model), return_logits=False)
    if positions.ndim == 2:
        return _target_logit_dla(model, run, positions, targets)
    return _attribute_run(model, run, lambda value: at_positions(value, positions), targets)


def _target_logit_dla(model, run, positions: Tensor, targets: Targets) -> LogitAttribution:
    """DLA of the target token's logit (no distractor) at every (row, loss position), each
    read as its own row, then the mean over each row's valid positions (every part is linear in
    the rows, so the parts still sum to `total`)."""

    def read(value: Tensor) -> Tensor:
        return at_positions(value, positions).flatten(0, 1)  # (batch * k, ...)

    rows = _attribute_run(model, run, read, target_rows(targets))
    parts = {
        f.name: position_mean(getattr(rows, f.name), targets.loss_mask)
        for f in fields(rows)
        if f.name != "provenance"
    }
    return LogitAttribution(**parts)


def target_rows(targets: Targets) -> Targets:
    """A loss task's targets as one row per (row, loss position), flattened row-major: the answer
    is that position's loss target, no distractor (so the logit difference is its logit)."""
    n = targets.loss_targets.numel()
    device = targets.loss_targets.device
    return Targets(
        answers=targets.loss_targets.reshape(n, 1),
        answer_mask=torch.ones(n, 1, dtype=torch.bool, device=device),
        distractors=torch.zeros(n, 1, dtype=torch.long, device=device),
        distractor_mask=torch.zeros(n, 1, dtype=torch.bool, device=device),
    )


def position_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Values of flattened (row, position) rows (batch * k, ...) -> the mean over each row's
    valid positions (`mask` (batch, k)), (batch, ...)."""
    batch, k = mask.shape
    weights = mask.to(values.device, values.dtype)
    weights = weights / weights.sum(1, keepdim=True).clamp(min=1)  # (batch, k)
    shaped = values.reshape(batch, k, *values.shape[1:])  # (batch, k, ...)
    return torch.einsum("bk...,bk->b...", shaped, weights)


def _attribute_run(model, run, read, targets: Targets) -> LogitAttribution:
    """DLA from a clean run's captures; `read` picks each row's metric position(s)."""
    final_resid = read(run[Site(Component.FINAL_RESID)]).float()  # (batch, d_model)
    final_norm = get_module(model.hf_model, model.adapter.final_norm)
    frozen = freeze_norm(final_norm, final_resid)
    direction, offset = logit_diff_direction(model, targets)

    def dla(part: Tensor) -> Tensor:
        return _project(frozen.linear(part.float()), direction)

    embed = read(run[Site(Component.EMBED)])
    if model.adapter.pos_embed:
        embed = embed + read(run[Site(Component.POS_EMBED)])
    layers = range(model.n_layers)
    attn = torch.stack([read(run[Site(Component.ATTN_OUT, i)]) for i in layers], 1)
    mlp = torch.stack([read(run[Site(Component.MLP_OUT, i)]) for i in layers], 1)
    head_dla, bias_dla = [], []
    for layer in layers:
        results, bias = head_parts(model, layer, read(run[Site(Component.Z, layer)]))
        head_dla.append(dla(results))  # (batch, head)
        bias_dla.append(dla(bias))  # (batch,)
    unembed = get_module(model.hf_model, model.adapter.unembed)
    logits = unembed(final_norm(final_resid.to(model.dtype))).float()  # (batch, vocab)
    total = _set_mean_of(logits, targets.answers, targets.answer_mask) - _set_mean_of(
        logits, targets.distractors, targets.distractor_mask
    )
    return LogitAttribution(
        embed=dla(embed),
        attn=dla(attn),
        mlp=dla(mlp),
        heads=torch.stack(head_dla, 1),
        attn_bias=torch.stack(bias_dla, 1),
        constant=_project(frozen.constant().expand_as(final_resid), direction) + offset,
        total=total,
    )


def direct_logit_attribution(
    model: InstrumentedModel,
    problem: PatchingProblem,
    batch_size: int = 16,
    progress: bool = True,
) -> LogitAttribution:
    """DLA of the logit difference on the problem's clean prompts, at its metric positions."""
    parts = []
    chunks = problem.chunks(batch_size)
    for _, chunk in tqdm(chunks, desc="DLA", disable=not progress or len(chunks) < 2):
        targets = chunk.targets.to(model.device)
        parts.append(attribute_batch(model, chunk.clean, chunk.positions, targets))
    merged = {
        f.name: torch.cat([getattr(p, f.name).detach().cpu() for p in parts])
        for f in fields(LogitAttribution)
        if f.name != "provenance"
    }
    return LogitAttribution(**merged, provenance=dla_provenance(model, problem))


def dla_provenance(model: InstrumentedModel, problem: PatchingProblem) -> dict[str, Any]:
    """The problem's provenance, with what DLA attributes and how norms are treated."""
    softcap = model.final_logit_softcap
    return provenance(
        model,
        problem.provenance,
        task_metric=problem.metric.value,
        metric="target_logit (mean over the loss positions)"
        if problem.multi_position
        else "logit_diff",
        method="direct logit attribution",
        run="clean",
        final_norm="scale frozen from the clean run at the metric position",
        post_norms="scale frozen from the clean run" if model.adapter.post_attn_norm else None,
        logits="pre-softcap" if softcap is not None else "logits",
        n=problem.batch,
    )
