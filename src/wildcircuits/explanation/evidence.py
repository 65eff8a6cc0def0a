"""Evidence for functional classes: numbers measured on a task's prompts for each circuit pair.

For every pair (a head or MLP at a named position, `results.explain.Pair`), on the clean prompts:
- `attention_to_<NAME>` (heads): attention from the pair's position to each named position (and
  `other`), summed over the keys of that name, mean over the pair's query tokens, then over rows.
- `direct_effect` (logits of answer minus distractor): the component's output at the metric
  position through the final norm with its scale frozen from the clean run, dot the
  answer-minus-distractor unembedding direction (as `localise.dla`); for a loss task, the loss
  target's logit at each loss position, averaged over the row's loss positions. A pair at any other
  position has no direct path to the metric's logits: exactly 0. `direct_fraction`: divided by
  the mean clean logit difference.
- `copying` (heads): the head's OV circuit applied to what it would read at the task's name
  tokens: the clean run's residual stream entering its layer at every named-position token
  (END excluded) that is an answer / distractor token (IOI: IO, S1, S2), through the final norm
  (frozen) to the logits of the task's answer / distractor tokens
  (`localise.head_scores.ov_logits_from`). Fraction of those tokens whose own logit is the
  largest minus the fraction whose own logit is the smallest (1 = copies every name, -1 =
  suppresses every name); `copy_fraction` and `suppression_fraction` are the two parts. The IOI
  paper applies the OV circuit to the output of GPT-2's first MLP, a stand-in for what a late
  head reads; the residual stream itself is what it reads. Tasks with no such token (e.g.
  greater-than) use the token embeddings (`ov_logits`).
- `path_to_logits`, `path_to_heads@<R>_<slot>`: position-wise path patching
  (`explain.pair_paths`) from the pair into the logits and into the q / k / v of the member
  heads at position R, together.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float
from torch import Tensor

from wildcircuits.errors import TaskError, UnknownNameError
from wildcircuits.explanation.positions import metric_share, position_index
from wildcircuits.localise.common import at_positions
from wildcircuits.localise.dla import head_parts, logit_diff_direction, position_mean, target_rows
from wildcircuits.localise.head_scores import ov_logits, ov_logits_from, task_token_ids
from wildcircuits.localise.norms import freeze_norm
from wildcircuits.models.adapters import get_module
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.names import Node, NodeKind, Shape, parse_display_node
from wildcircuits.patching.hooks import Intervention
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Component, Site
from wildcircuits.results.explain import Pair

Masks = dict[str, Bool[Tensor, "batch pos"]]


@dataclass(frozen=True)
class Member:
    """A checked pair: its display pair, graph node and the (batch, pos) mask of its tokens."""

    pair: Pair
    node: Node
    mask: Bool[Tensor, "batch pos"]

    @property
    def is_head(self) -> bool:
        return self.node.kind is NodeKind.HEAD


def position_masks(problem: PatchingProblem) -> Masks:
    """Each position name's (batch, pos) token mask, on the problem's device."""
    names, index = position_index(problem)
    return {name: index == i for i, name in enumerate(names)}


def members(
    model: InstrumentedModel, problem: PatchingProblem, pairs: Sequence[Pair]
) -> list[Member]:
    """The pairs checked against the model's shape and the problem's positions."""
    masks = position_masks(problem)
    shape = Shape(model.n_layers, model.n_heads, model.n_kv_heads)
    out, seen = [], set()
    for pair in pairs:
        node = parse_display_node(pair.node, shape)
        if node.kind not in (NodeKind.HEAD, NodeKind.MLP):
            raise UnknownNameError(f"pair {pair.name}: only heads and MLPs sit at positions")
        if pair.position not in masks:
            known = ", ".join(masks)
            raise TaskError(f"pair {pair.name}: no position {pair.position!r} (known: {known})")
        if pair.name in seen:
            raise UnknownNameError(f"pair {pair.name} is listed twice; list each pair once")
        seen.add(pair.name)
        out.append(Member(pair, node, masks[pair.position]))
    return out


def head_evidence(
    model: InstrumentedModel,
    problem: PatchingProblem,
    pairs: Sequence[Pair],
    progress: bool = True,
    *,
    slots: Sequence[str] = ("q", "k", "v"),
    max_rows: int = 256,
) -> dict[str, dict[str, float]]:
    """Evidence numbers per pair (keyed by `Pair.name`), see the module doc.

    slots: the receiver slots path-patched into (fewer slots, fewer forwards; none: only
    `path_to_logits`); max_rows: rows of one batched path-patching forward (sender sets x batch).
    """
    from wildcircuits.explanation.pair_paths import path_evidence

    checked = members(model, problem, pairs)
    out: dict[str, dict[str, float]] = {m.pair.name: {} for m in checked}
    with torch.no_grad():
        _attention_evidence(model, problem, checked, out)
        _direct_evidence(model, problem, checked, out)
        _copying_evidence(model, problem, checked, out)
        paths = path_evidence(model, problem, checked, slots, max_rows, progress)
        for name, values in paths.items():
            out[name].update(values)
    return out


def path_only_evidence(
    model: InstrumentedModel,
    problem: PatchingProblem,
    pairs: Sequence[Pair],
    senders: Sequence[Pair],
    progress: bool = True,
    *,
    slots: Sequence[str] = ("q", "k", "v"),
    max_rows: int = 256,
    extra_groups: Mapping[str, Sequence[Pair]] | None = None,
) -> dict[str, dict[str, float]]:
    """`path_to_<group>_<slot>` of each of `senders` into the member heads at each position
    (`heads@<R>`) and into each of `extra_groups` (name -> head pairs of `pairs`), no logits,
    no other evidence: the second phase of `classes.classify`."""
    from wildcircuits.explanation.pair_paths import path_evidence, position_groups

    checked = members(model, problem, pairs)
    by_name = {m.pair.name: m for m in checked}
    wanted = [p.name for p in senders] + [p.name for g in (extra_groups or {}).values() for p in g]
    if any(name not in by_name for name in wanted):
        raise UnknownNameError("path senders and receivers must be pairs of the circuit itself")
    sending = {p.name for p in senders}
    chosen = [m for m in checked if m.pair.name in sending]
    groups = position_groups(checked)
    for name, group in (extra_groups or {}).items():
        groups[name] = [by_name[p.name] for p in group]
    with torch.no_grad():
        found = path_evidence(model, problem, checked, slots, max_rows, progress, chosen,
                              logits=False, groups=groups)  # fmt: skip
    return {m.pair.name: found[m.pair.name] for m in chosen}


def _attention_evidence(model, problem, checked: Sequence[Member], out) -> None:
    heads = [m for m in checked if m.is_head]
    layers = sorted({m.node.layer for m in heads})
    if not heads:
        return
    run = model.run(problem.clean, capture=[Site(Component.PATTERN, i) for i in layers],
                    return_logits=False)  # fmt: skip
    masks = position_masks(problem)
    for m in heads:
        pattern = run[Site(Component.PATTERN, m.node.layer)][:, m.node.head].float()
        for name, keys in masks.items():  # pattern: (batch, pos, kv_pos)
            to_name = torch.einsum("bqk,bk->bq", pattern, keys.float())  # (batch, pos)
            out[m.pair.name][f"attention_to_{name}"] = _mean_over(to_name, m.mask)


def _mean_over(values: Float[Tensor, "batch pos"], mask: Bool[Tensor, "batch pos"]) -> float:
    """Mean over each row's masked tokens, then over the rows that have any (NaN if none)."""
    count = mask.sum(1)
    rows = count > 0
    if not bool(rows.any()):
        return float("nan")
    per_row = (values * mask).sum(1)[rows] / count[rows]
    return float(per_row.mean())


@dataclass(frozen=True)
class DirectEffects:
    """Direct effects at the metric position, in logits of answer minus distractor.

    heads: (batch, layer, head); mlps: (batch, layer); total: (batch,) the logit difference."""

    heads: Float[Tensor, "batch layer head"]
    mlps: Float[Tensor, "batch layer"]
    total: Float[Tensor, " batch"]


def direct_effects(
    model: InstrumentedModel,
    problem: PatchingProblem,
    interventions: Sequence[Intervention] = (),
) -> DirectEffects:
    """Every head's and MLP's direct effect on the clean prompts (under `interventions`, e.g.
    a knock-out), with the final norm frozen from that same run (one forward)."""
    layers = range(model.n_layers)
    sites = [Site(Component.FINAL_RESID)]
    sites += [Site(c, i) for i in layers for c in (Component.Z, Component.MLP_OUT)]
    run = model.run(problem.clean, capture=sites, interventions=interventions,
                    return_logits=False)  # fmt: skip
    end = problem.positions.to(model.device)
    targets = problem.targets.to(model.device)
    if problem.multi_position:  # one row per (row, loss position), the target's logit

        def read(value: Tensor) -> Tensor:
            return at_positions(value, end).flatten(0, 1)  # (batch * k, ...)

        targets = target_rows(targets)
    else:

        def read(value: Tensor) -> Tensor:
            return at_positions(value, end)  # (batch, ...)

    final_resid = read(run[Site(Component.FINAL_RESID)]).float()
    frozen = freeze_norm(get_module(model.hf_model, model.adapter.final_norm), final_resid)
    direction, offset = logit_diff_direction(model, targets)

    def project(part: Tensor) -> Tensor:  # (rows, *any, d_model) -> (batch, *any)
        shaped = direction.view(direction.shape[0], *([1] * (part.ndim - 2)), -1)
        value = (frozen.linear(part.float()) * shaped).sum(-1)
        if not problem.multi_position:
            return value
        return position_mean(value, problem.targets.loss_mask)

    heads, mlps = [], []
    for layer in layers:
        results, _ = head_parts(model, layer, read(run[Site(Component.Z, layer)]))
        heads.append(project(results))  # (batch, head)
        mlps.append(project(read(run[Site(Component.MLP_OUT, layer)])))
    constant = (frozen.constant()[None] * direction).sum(-1) + offset  # (rows,)
    if problem.multi_position:
        constant = position_mean(constant, problem.targets.loss_mask)
    total = project(final_resid) + constant
    return DirectEffects(torch.stack(heads, 1).cpu(), torch.stack(mlps, 1).cpu(), total.cpu())


def _direct_evidence(model, problem, checked: Sequence[Member], out) -> None:
    effects = direct_effects(model, problem)
    clean = float(effects.total.mean())
    for m in checked:
        at_end = metric_share(problem, m.mask).cpu()  # (batch,)
        per_row = (
            effects.heads[:, m.node.layer, m.node.head]
            if m.is_head
            else effects.mlps[:, m.node.layer]
        )
        value = float((per_row * at_end).mean())
        out[m.pair.name]["direct_effect"] = value
        out[m.pair.name]["direct_fraction"] = value / clean if clean else float("nan")


def _copying_evidence(model, problem, checked: Sequence[Member], out) -> None:
    heads = [m for m in checked if m.is_head]
    ids = task_token_ids(problem).to(model.device)
    if not heads or len(ids) < 2:
        for m in heads:  # one token only: copying is undefined
            out[m.pair.name].update(copying=float("nan"))
        return
    layers = sorted({m.node.layer for m in heads})
    context = _name_tokens(problem, ids)
    reads = _layer_inputs(model, problem, layers, context) if context is not None else {}
    for layer in layers:
        if context is None:  # the token embeddings themselves, as the OV read them
            own = torch.arange(len(ids), device=model.device)
            logits = ov_logits(model, layer, ids.cpu())  # (head, ids, ids)
        else:  # the residual stream the head reads at the name tokens of the prompts
            own = context[2]
            logits = ov_logits_from(model, layer, reads[layer], ids)  # (head, n, ids)
        top = (logits.argmax(-1) == own).float().mean(-1).cpu()  # (head,)
        bottom = (logits.argmin(-1) == own).float().mean(-1).cpu()
        for m in heads:
            if m.node.layer == layer:
                h = m.node.head
                values = {"copy_fraction": float(top[h]), "suppression_fraction": float(bottom[h])}
                values["copying"] = values["copy_fraction"] - values["suppression_fraction"]
                out[m.pair.name].update(values)


def _name_tokens(problem, ids: Tensor) -> tuple[Tensor, Tensor, Tensor] | None:
    """(rows, positions, index into ids) of every named-position token (END excluded) that is
    one of the task's answer / distractor tokens (IOI: the IO and S tokens); None if none."""
    tokens = problem.clean.input_ids.to(ids.device)
    rows, positions = [], []
    for name, at in problem.named_positions.items():
        if name == "END":
            continue
        at = at.to(ids.device).long()
        batch = torch.arange(problem.batch, device=ids.device)
        hit = torch.isin(tokens[batch, at], ids)
        rows.append(batch[hit])
        positions.append(at[hit])
    if not rows or sum(len(r) for r in rows) == 0:
        return None
    rows, positions = torch.cat(rows), torch.cat(positions)
    own = (tokens[rows, positions][:, None] == ids[None, :]).float().argmax(-1)
    return rows, positions, own


def _layer_inputs(model, problem, layers, context) -> dict[int, Tensor]:
    """Each layer's input (resid_pre, clean run) at the name tokens: layer -> (n, d_model)."""
    rows, positions, _ = context
    sites = [Site(Component.RESID_PRE, layer) for layer in layers]
    with torch.no_grad():
        run = model.run(problem.clean, capture=sites, return_logits=False)
    return {s.layer: run[s][rows, positions] for s in sites}
