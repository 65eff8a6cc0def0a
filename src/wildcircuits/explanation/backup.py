"""Backup behaviour (the IOI paper's backup name movers): knock out the main writer class and
measure which heads' direct effect rises.

Knock-out: every member of the writer class has its output at its own position replaced, on
the clean prompts, by its value on the corrupted prompts (`counterfactual`) or by the mean of
that value over the corrupted prompts (`mean`; for IOI's ABC corruption, the mean over the ABC
distribution). Then every head's direct effect at the metric position (`evidence.direct_effects`,
the final norm frozen from the knocked-out run itself) is compared with the clean run's.

A backup head is any head outside the writer class whose direct effect rises by at least
`ClassThresholds.backup` times the knocked-out class's own direct effect (its members' summed
clean direct effect). `restored` = the backup heads' summed rise / that effect: the fraction of
the knocked-out effect they take over (1 = full compensation).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from wildcircuits.errors import InputError, TaskError
from wildcircuits.explanation.classes import NAME_MOVER, THRESHOLDS, ClassThresholds
from wildcircuits.explanation.evidence import Member, direct_effects, members
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.names import head_node
from wildcircuits.patching.hooks import Intervention, Mode
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Component, Site
from wildcircuits.results.explain import Backup, BackupHead, HeadClass

ABLATIONS = ("counterfactual", "mean")


def writer_class(classes: Sequence[HeadClass], writer: str | None = None) -> HeadClass | None:
    """The class to knock out: `writer` by name; else the name movers; else the class with the
    largest positive summed direct effect (None when no class writes the answer)."""
    if writer is not None:
        for c in classes:
            if c.name == writer:
                return c
        known = ", ".join(c.name for c in classes) or "none"
        raise TaskError(f"no class named {writer!r} to knock out (classes: {known})")
    for c in classes:
        if c.paper_class == NAME_MOVER:
            return c
    writers = [c for c in classes if c.evidence.get("direct_effect", 0.0) > 0]
    return max(writers, key=lambda c: c.evidence["direct_effect"], default=None)


def knockout(
    model: InstrumentedModel,
    problem: PatchingProblem,
    knocked: Sequence[Member],
    ablation: str = "counterfactual",
) -> list[Intervention]:
    """Interventions replacing each member's output at its positions (see module doc)."""
    if ablation not in ABLATIONS:
        raise InputError(f"ablation {ablation!r}: choose one of {', '.join(ABLATIONS)}")
    layers = sorted({m.node.layer for m in knocked})
    sites = [Site(c, i) for i in layers for c in (Component.Z, Component.MLP_OUT)]
    with torch.no_grad():
        corrupted = model.run(problem.corrupted, capture=sites, return_logits=False)
    out = []
    for m in knocked:
        site = Site(Component.Z if m.is_head else Component.MLP_OUT, m.node.layer)
        value = corrupted[site]  # (batch, pos, head, d_head) or (batch, pos, d_model)
        if m.is_head:
            value = value[:, :, m.node.head]
        if ablation == "mean":
            mask = m.mask.to(value.device)
            value = value[mask].mean(0).expand_as(value)  # mean over rows' tokens at the position
        head = m.node.head if m.is_head else None
        out.append(Intervention(Site(site.component, m.node.layer, head), Mode.REPLACE,
                                _where(m.mask, value)))  # fmt: skip
    return out


def _where(mask: Tensor, value: Tensor):
    def patch(current: Tensor) -> Tensor:
        shaped = mask.to(current.device).view(*mask.shape, *([1] * (current.ndim - 2)))
        return torch.where(shaped, value.to(current.dtype), current)

    return patch


def find_backup(
    model: InstrumentedModel,
    problem: PatchingProblem,
    classes: Sequence[HeadClass],
    writer: str | None = None,
    *,
    ablation: str = "counterfactual",
    thresholds: ClassThresholds = THRESHOLDS,
) -> Backup | None:
    """Knock out the writer class (`writer_class`) and report the heads that take over; None
    when there is no writer class or its direct effect is zero."""
    chosen = writer_class(classes, writer)
    if chosen is None:
        return None
    knocked = members(model, problem, chosen.members)
    with torch.no_grad():
        before = direct_effects(model, problem).heads.mean(0)  # (layer, head)
        after = direct_effects(model, problem, knockout(model, problem, knocked, ablation))
    after = after.heads.mean(0)
    removed = sum(float(before[m.node.layer, m.node.head]) for m in knocked if m.is_head and
                  _at_metric(m, problem))  # fmt: skip
    if removed == 0:
        return None
    rise = after - before
    for m in knocked:
        if m.is_head and _at_metric(m, problem):
            rise[m.node.layer, m.node.head] = float("-inf")  # the knocked-out heads themselves
    hits = (rise >= thresholds.backup * abs(removed)).nonzero().tolist()
    hits.sort(key=lambda lh: -float(rise[lh[0], lh[1]]))
    heads = tuple(
        BackupHead(
            head_node(layer, head).display, float(before[layer, head]), float(after[layer, head])
        )  # fmt: skip
        for layer, head in hits
    )
    restored = sum(h.direct_after - h.direct_before for h in heads) / removed
    return Backup(knocked_out=chosen.name, heads=heads, restored=restored,
                  knocked_out_effect=removed)  # fmt: skip


def _at_metric(member: Member, problem: PatchingProblem) -> bool:
    """Whether the member sits at the metric position (only there has it a direct effect)."""
    return bool((member.mask & problem.metric_tokens().to(member.mask.device)).any())
