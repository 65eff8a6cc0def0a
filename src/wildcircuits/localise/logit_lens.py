"""Logit lens: read the answer out of each layer's residual stream.

At the metric position, the residual stream entering each layer (resid_pre of layers 0..L-1) and
the final residual stream are each passed through the model's own final norm, unembedding and
logit softcap (`InstrumentedModel.unembed`; the norm's scale is that of the lensed vector itself,
not frozen). From those logits we read the task metric (`problem.score`), the answer's rank
(0 = top-1; for an answer set, the best-ranked answer) and the answer probability (summed over the
answer set). The last stage is the model's actual output, so it equals the model's logits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float, Int
from torch import Tensor
from tqdm import tqdm

from wildcircuits.errors import MetricError
from wildcircuits.localise.common import at_positions, provenance
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.models.tokens import Tokens
from wildcircuits.patching.grid import ScoreGrid
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.patching.sites import Component, Site, format_site
from wildcircuits.tasks.metrics import Targets, answer_prob

COLUMNS = ("metric", "answer rank", "answer prob")


def lens_sites(model: InstrumentedModel) -> list[Site]:
    """resid_pre of every layer, then final_resid: the stages the lens reads."""
    layers = [Site(Component.RESID_PRE, layer) for layer in range(model.n_layers)]
    return [*layers, Site(Component.FINAL_RESID)]


def lens_logits(
    model: InstrumentedModel, tokens: Tokens, positions: Int[Tensor, " batch"]
) -> Float[Tensor, "batch stage vocab"]:
    """Logits read from every stage's residual stream at each row's position."""
    sites = lens_sites(model)
    run = model.run(tokens, capture=sites, return_logits=False)
    resid = torch.stack([at_positions(run[s], positions) for s in sites], 1)  # (batch, stage, d)
    return model.unembed(resid)


def answer_rank(logits: Float[Tensor, "batch vocab"], targets: Targets) -> Float[Tensor, " batch"]:
    """Rank of the best-ranked answer: the number of tokens with a strictly larger logit."""
    answers = logits.gather(1, targets.answers.to(logits.device))  # (batch, k)
    answers = answers.masked_fill(~targets.answer_mask.to(logits.device), float("-inf"))
    best = answers.max(1, keepdim=True).values  # (batch, 1)
    return (logits > best).sum(1).float()


@dataclass(frozen=True)
class LogitLens:
    """Per-example lens readings, each (batch, stage); stages are resid_pre.L0 .. final_resid."""

    metric: Float[Tensor, "batch stage"]
    answer_rank: Float[Tensor, "batch stage"]
    answer_prob: Float[Tensor, "batch stage"]
    stages: Sequence[str]
    provenance: Mapping[str, Any] = field(default_factory=dict)

    def grid(self) -> ScoreGrid:
        """Batch means, stage x [metric, answer rank, answer prob]."""
        values = torch.stack(
            [self.metric.mean(0), self.answer_rank.mean(0), self.answer_prob.mean(0)], 1
        )  # (stage, 3)
        return ScoreGrid(
            name="logit_lens",
            title=f"Logit lens ({self.provenance.get('metric', 'metric')}, rank, probability)",
            values=values,
            row_axis="residual stream",
            col_axis="reading",
            row_labels=list(self.stages),
            col_labels=list(COLUMNS),
            provenance=self.provenance,
            value_label="batch mean",
        )

    def save(self, folder: Path | str) -> Path:
        """Write logit_lens.json and line figures logit_lens_metric / logit_lens_rank."""
        from wildcircuits.report.figures import save_lines

        folder = Path(folder)
        path = self.grid().save(folder, figure=False)
        x = list(range(len(self.stages)))
        metric = str(self.provenance.get("metric", "metric"))
        series = {
            metric: self.metric.mean(0).tolist(),
            "answer prob": self.answer_prob.mean(0).tolist(),
        }
        axis = "stage (0..L-1 = resid_pre of that layer, L = final)"
        save_lines(x, series, folder / "logit_lens_metric", "Logit lens", axis, "value",
                   self.provenance)  # fmt: skip
        ranks = {"mean answer rank + 1": (self.answer_rank.mean(0) + 1).tolist()}
        save_lines(x, ranks, folder / "logit_lens_rank", "Logit lens: answer rank", axis,
                   "rank + 1 (1 = top)", self.provenance)  # fmt: skip
        return path


def logit_lens(
    model: InstrumentedModel,
    problem: PatchingProblem,
    batch_size: int = 16,
    progress: bool = True,
) -> LogitLens:
    """The logit lens on the problem's clean prompts at its metric positions."""
    if problem.multi_position:
        raise MetricError(
            "the logit lens reads the answer's rank at one position per row; this task's loss "
            "metric reads many positions and has no answer set: use a one-position task (or "
            "`wildcircuits discover`, whose steps support the loss)"
        )
    metric, rank, prob = [], [], []
    chunks = problem.chunks(batch_size)
    for _, chunk in tqdm(chunks, desc="logit lens", disable=not progress or len(chunks) < 2):
        logits = lens_logits(model, chunk.clean, chunk.positions).float()  # (batch, stage, vocab)
        targets = chunk.targets.to(logits.device)
        stages = range(logits.shape[1])
        metric.append(torch.stack([chunk.score(logits[:, s]) for s in stages], 1))
        rank.append(torch.stack([answer_rank(logits[:, s], targets) for s in stages], 1))
        prob.append(torch.stack([answer_prob(logits[:, s], targets) for s in stages], 1))
    return LogitLens(
        metric=torch.cat(metric).detach().cpu(),
        answer_rank=torch.cat(rank).cpu(),
        answer_prob=torch.cat(prob).detach().cpu(),
        stages=[format_site(s) for s in lens_sites(model)],
        provenance=provenance(
            model,
            problem.provenance,
            metric=problem.metric.value,
            method="logit lens",
            run="clean",
            final_norm="applied to each stage as is (own scale, not frozen)",
            n=problem.batch,
        ),
    )
