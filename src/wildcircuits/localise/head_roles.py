"""Head roles: every role score per head (see `head_scores`), thresholds, labels and figures.

A head gets a role's label when its score reaches that role's threshold (`RoleThresholds`);
a head may have several labels. Thresholds are saved with the table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from wildcircuits.errors import SiteError
from wildcircuits.localise.common import provenance
from wildcircuits.localise.head_scores import (
    head_patterns,
    name_mover_scores,
    ov_scores,
    pattern_scores,
    task_token_ids,
)
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.models.tokens import Tokens
from wildcircuits.names import head_node
from wildcircuits.patching.grid import ScoreGrid, head_labels, layer_labels
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.results.codec import encode
from wildcircuits.results.localise import HeadRoleRow, HeadRoleTable

ROLES = (
    "previous_token",
    "induction",
    "duplicate_token",
    "copying",
    "copy_suppression",
    "name_mover",
    "distractor_suppression",
)
UNITS = {
    "previous_token": "mean attention",
    "induction": "mean attention",
    "duplicate_token": "mean attention",
    "copying": "fraction of task tokens",
    "copy_suppression": "fraction of task tokens",
    "name_mover": "attention x answer logit",
    "distractor_suppression": "attention x -distractor logit",
}


@dataclass(frozen=True)
class RoleThresholds:
    """A head is labelled with a role when its score reaches the role's threshold.

    Attention scores are mean attention weights (0..1). OV scores are fractions of the task's
    tokens (chance is 1 / their number). name_mover is in logits (attention-weighted direct
    effect on the answer's logit): labelled "name mover" at >= name_mover and "negative name
    mover" at <= -name_mover. distractor_suppression is in logits too.
    """

    previous_token: float = 0.4
    induction: float = 0.4
    duplicate_token: float = 0.4
    copying: float = 0.9
    copy_suppression: float = 0.9
    name_mover: float = 0.5
    distractor_suppression: float = 0.5


@dataclass(frozen=True)
class RandomSequences:
    """The random repeated sequences the attention-pattern scores are read on."""

    batch: int = 8
    length: int = 20
    seed: int = 0


@dataclass(frozen=True)
class HeadRoles:
    """Role scores, each (layer, head), with the thresholds used and provenance."""

    scores: Mapping[str, Tensor]
    thresholds: RoleThresholds = RoleThresholds()
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def labels(self, layer: int, head: int) -> list[str]:
        """The roles whose threshold this head's score passes."""
        out = []
        for role, values in self.scores.items():
            value = float(values[layer, head])
            limit = getattr(self.thresholds, role)
            if value >= limit:
                out.append(role.replace("_", " ") + (" head" if role in _PATTERN_ROLES else ""))
            if role == "name_mover" and value <= -limit:
                out.append("negative name mover")
        return out

    def heads_with(self, role: str, negative: bool = False) -> list[tuple[int, int]]:
        """Heads labelled with `role` (name_mover with `negative`: the negative ones)."""
        values, limit = self.scores[role], getattr(self.thresholds, role)
        hits = values <= -limit if negative else values >= limit
        return [tuple(pair) for pair in hits.nonzero().tolist()]

    def table(self) -> list[dict[str, Any]]:
        """One row per head: name, every score, labels."""
        n_layers, n_heads = next(iter(self.scores.values())).shape
        return [
            {
                "head": head_node(layer, head).display,
                "layer": layer,
                "index": head,
                **{role: float(v[layer, head]) for role, v in self.scores.items()},
                "labels": self.labels(layer, head),
            }
            for layer in range(n_layers)
            for head in range(n_heads)
        ]

    def top(self, role: str, k: int = 5, negative: bool = False) -> list[tuple[str, float]]:
        """The k heads with the highest score (lowest, with `negative`)."""
        values = self.scores[role].flatten()
        key = torch.nan_to_num(-values if negative else values, nan=-float("inf"))
        n_heads = self.scores[role].shape[1]
        order = key.argsort(descending=True)[:k].tolist()
        return [(head_node(i // n_heads, i % n_heads).display, float(values[i])) for i in order]

    def grid(self, role: str) -> ScoreGrid:
        values = self.scores[role]
        return ScoreGrid(
            name=f"role_{role}",
            title=f"Head role score: {role.replace('_', ' ')}",
            values=values,
            row_axis="layer",
            col_axis="head",
            row_labels=layer_labels(values.shape[0]),
            col_labels=head_labels(values.shape[1]),
            provenance={**self.provenance, "role": role},
            value_label=UNITS[role],
        )

    def saved(self) -> HeadRoleTable:
        """The table as saved (head_roles.json, localise.json's `head_roles`)."""
        return HeadRoleTable(
            thresholds=asdict(self.thresholds),
            heads=tuple(HeadRoleRow.from_row(row) for row in self.table()),
            provenance=dict(self.provenance),
            units={role: UNITS[role] for role in self.scores},
        )

    def save(self, folder: Path | str) -> Path:
        """head_roles.json (table, thresholds, provenance) and a heatmap per role."""
        from wildcircuits.results import save_json

        folder = Path(folder)
        for role in self.scores:
            self.grid(role).save(folder)
        return save_json(folder / "head_roles.json", encode(self.saved()))


_PATTERN_ROLES = ("previous_token", "induction", "duplicate_token")


def head_roles(
    model: InstrumentedModel,
    problem: PatchingProblem | None = None,
    sequences: RandomSequences = RandomSequences(),
    thresholds: RoleThresholds = RoleThresholds(),
    answer_position: str | None = None,
    batch_size: int = 16,
) -> HeadRoles:
    """Every role score; the OV and name-mover scores need a task problem. A loss task (metric
    read at many positions) has no answer at one position, so it gets no name-mover scores; its
    OV scores use its loss targets (`task_token_ids`)."""
    scores = pattern_scores(model, sequences.batch, sequences.length, sequences.seed)
    if problem is not None:
        scores.update(ov_scores(model, task_token_ids(problem)))
    if problem is not None and not problem.multi_position:
        scores["name_mover"] = name_mover_scores(model, problem, answer_position, batch_size)
        suppression = name_mover_scores(model, problem, None, batch_size, distractors=True)
        scores["distractor_suppression"] = -suppression
    scores = {role: scores[role].detach().cpu() for role in ROLES if role in scores}
    base = problem.provenance if problem is not None else {}
    info = provenance(
        model,
        base,
        metric=base.get("metric") or "head role scores",
        method="head roles",
        random_sequences=asdict(sequences),
        answer_position=answer_position or "last answer-token occurrence before END",
    )
    return HeadRoles(scores, thresholds, info)


def save_patterns(
    model: InstrumentedModel,
    tokens: Tokens,
    heads: Sequence[tuple[int, int]],
    folder: Path | str,
    row: int = 0,
    info: Mapping[str, Any] | None = None,
) -> list[Path]:
    """One attention-pattern figure per head on prompt `row`, labelled with its tokens."""
    from wildcircuits.report.figures import save_attention_pattern

    if not 0 <= row < tokens.batch:
        raise SiteError(f"prompt index {row} out of range 0..{tokens.batch - 1}")
    real = tokens.attention_mask[row].bool().cpu()
    ids = tokens.input_ids[row].cpu()[real]
    words = (
        model.to_str_tokens(ids) if model.tokenizer is not None else [str(i) for i in ids.tolist()]
    )
    paths = []
    for (layer, head), pattern in head_patterns(model, tokens, heads, row).items():
        name = head_node(layer, head).display
        png, _ = save_attention_pattern(
            pattern.numpy(),
            words,
            Path(folder) / f"pattern_{name.replace('.', '_')}_p{row}",
            f"Attention pattern of {name}, prompt {row}",
            {**(info or {}), "prompt_index": row},
        )
        paths.append(png)
    return paths
