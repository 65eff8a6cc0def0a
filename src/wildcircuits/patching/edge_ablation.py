"""What an ablated edge carries: the sender outputs a_u the edge engine substitutes.

An ablated edge u -> v feeds v the value a_u instead of u's output, while u's other out-edges are
untouched (`patching.edges`). The values follow an `AblationSpec` (patching.ablation_spec):
- counterfactual: u's output on the corrupted prompt of the same example;
- mean: u's output averaged over the real tokens of the problem's corrupted (default) or clean
  prompts, per position (positions index the padded batch, so rows must be aligned, as they are
  for one-template tasks) or pooled; with `mean:template`, one such mean per template (the
  problem's `groups`; rows of one template are aligned), each row reading its template's;
- zero: u contributes nothing (embeddings included).
Resample ablation is not offered on edges (a shuffled row carries another row's padding).

`AblationCache` is the one source of these values for the engine's callers (evaluation, EAP,
EAP-IG on activations, ACDC): means are computed once per problem, counterfactual values per
chunk of rows.
"""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from wildcircuits.errors import WildcircuitsError
from wildcircuits.models.tokens import Tokens
from wildcircuits.patching.ablation_spec import (
    EDGE_ABLATIONS,
    AblationKind,
    AblationSpec,
    masked_mean,
    masked_totals,
)
from wildcircuits.patching.edge_prefix import (
    Prefix,
    agreement,
    counterfactual_prefix,
    first_read,
    worth_building,
)
from wildcircuits.patching.edges import EdgeForward
from wildcircuits.patching.problem import PatchingProblem

#: The ablations the edge engine supports.


def mean_outputs(
    engine: EdgeForward, reference: Tokens, batch_size: int, per_position: bool = True
) -> Float[Tensor, "1 pos sender d_model"]:
    """Mean sender outputs over the real tokens of `reference`, computed in chunks of rows.

    Returns (1, pos, sender, d_model) per position (rows without a token at p do not count),
    or (1, 1, sender, d_model) with `per_position=False`.
    """
    total, count = None, None
    for start in range(0, reference.batch, batch_size):
        rows = reference.select(slice(start, start + batch_size))
        outputs = engine.outputs(rows)  # (batch, pos, sender, d_model)
        part, n = masked_totals(outputs, rows.attention_mask, per_position)
        total = part if total is None else total + part
        count = n if count is None else count + n
    if total is None:
        raise WildcircuitsError("the mean-ablation reference batch is empty")
    return masked_mean(total, count)


def group_mean_outputs(
    engine: EdgeForward, reference: Tokens, groups: Tensor, batch_size: int, per_position: bool
) -> Float[Tensor, "group pos sender d_model"]:
    """Mean sender outputs per group: (n_groups, pos or 1, sender, d_model), row g the mean
    over the real tokens of the reference rows whose `groups` id is g (chunks of rows)."""
    n_groups = int(groups.max()) + 1
    total, count = None, None
    for start in range(0, reference.batch, batch_size):
        rows = reference.select(slice(start, start + batch_size))
        ids = groups[start : start + batch_size].to(engine.model.device)
        outputs = engine.outputs(rows)  # (batch, pos, sender, d_model)
        weight = rows.attention_mask.to(outputs.dtype)  # (batch, pos)
        outputs = outputs * weight[:, :, None, None]
        if not per_position:  # one mean over every real token of the group
            outputs, weight = outputs.sum(1, keepdim=True), weight.sum(1, keepdim=True)
        one_hot = torch.nn.functional.one_hot(ids, n_groups).to(outputs.dtype)  # (batch, group)
        part = torch.einsum("bg,bpsd->gpsd", one_hot, outputs)
        n = torch.einsum("bg,bp->gp", one_hot, weight)[:, :, None, None]
        total = part if total is None else total + part
        count = n if count is None else count + n
    if total is None:
        raise WildcircuitsError("the mean-ablation reference batch is empty")
    return masked_mean(total, count)


def edge_alternatives(spec: AblationSpec) -> list[AblationSpec]:
    """The other edge ablations (each with its default options), for sensitivity checks."""
    return [AblationSpec(kind) for kind in EDGE_ABLATIONS if kind is not spec.kind]


class AblationCache:
    """Ablation values for the rows of one problem (means computed once for all of them).

    spec: the ablation (a spec or its string); batch_size: rows per forward when computing means
    (it fixes the float summation order, so a caller keeps it to keep its numbers).
    """

    def __init__(
        self,
        engine: EdgeForward,
        problem: PatchingProblem,
        spec: AblationSpec | str | None,
        batch_size: int,
    ):
        self.engine = engine
        self.spec = AblationSpec.coerce(spec).require(EDGE_ABLATIONS, "the edge engine")
        self._fixed: Tensor | None = None  # (1, pos | 1, sender, d_model)
        self._grouped: Tensor | None = None  # (group, pos | 1, sender, d_model)
        # per-position means: group (None: every row) -> leading columns on which the
        # reference and clean prompts all agree (their mean there is the clean output)
        self._agree: dict[int | None, int] = {}
        model = engine.model
        if self.spec.kind is AblationKind.ZERO:
            shape = (1, 1, engine.graph.n_senders, model.d_model)
            self._fixed = torch.zeros(shape, dtype=model.dtype, device=model.device)
        elif self.spec.kind is AblationKind.MEAN and self.spec.per_template:
            if problem.groups is None:
                raise WildcircuitsError(
                    f"{self.spec.format()!r} ablation needs the problem's per-row template ids "
                    "(`groups`); build the problem from a task dataset or pass groups="
                )
            reference = self.spec.reference(problem)
            self._grouped = group_mean_outputs(
                engine, reference, problem.groups, batch_size, self.spec.per_position
            )
            if self.spec.per_position:
                for group in problem.groups.unique().tolist():
                    rows = (problem.groups == group).nonzero().flatten()
                    parts = [reference.select(rows), problem.clean.select(rows)]
                    self._agree[int(group)] = agreement(parts)
        elif self.spec.kind is AblationKind.MEAN:
            reference = self.spec.reference(problem)
            self._fixed = mean_outputs(engine, reference, batch_size, self.spec.per_position)
            if self.spec.per_position:
                self._agree[None] = agreement([reference, problem.clean])

    def values(
        self, part: PatchingProblem, start: int = 0
    ) -> Float[Tensor, "batch_or_1 pos_or_1 sender d_model"]:
        """The ablation values of `part`: rows of the problem whose columns begin at `start`
        (a padding group of `PatchingProblem.by_length`; 0 for a chunk of whole rows).

        Counterfactual: (rows, pos, sender, d_model), one forward on the part's corrupted
        prompts; mean / zero: the problem's values cut to the part's columns; per-template
        mean: (rows, pos | 1, sender, d_model), each row its template's mean.
        """
        if self._grouped is not None:
            values = self._grouped[part.groups.to(self._grouped.device)]
            if values.shape[1] == 1:
                return values
            return values[:, start : start + part.clean.seq_len]
        if self._fixed is None:
            return self.engine.outputs(part.corrupted)
        if self._fixed.shape[1] == 1:
            return self._fixed
        return self._fixed[:, start : start + part.clean.seq_len]

    def prefix(self, chunk: PatchingProblem) -> Prefix | None:
        """The clean prefix every edge forward over `chunk` (rows of this cache's problem) may
        share (`edge_prefix`): under counterfactual ablation, whose values (`for_chunk`) come
        from the chunk's own corrupted prompts, the columns they share with the clean ones;
        under a per-position mean, the columns on which the reference and clean prompts (of
        each row's template, for `mean:template`) all agree; None otherwise, or when too little
        is shared."""
        model = self.engine.model
        if self._fixed is None and self._grouped is None:
            return counterfactual_prefix(
                model, chunk.clean, chunk.corrupted, chunk.positions, chunk.position_mask
            )
        if not self._agree:
            return None
        if None in self._agree:
            length = self._agree[None]
        else:
            length = min(self._agree[int(g)] for g in chunk.groups.unique().tolist())
        reads = first_read(chunk.positions, chunk.position_mask)
        return worth_building(model, chunk.clean, min(length, reads))

    def for_chunk(self, chunk: PatchingProblem) -> tuple[Tensor, Tensor | None]:
        """(ablation values (batch | 1, pos | 1, sender, d_model), corrupted logits or None).

        Counterfactual values cost one forward on the chunk's corrupted prompts, whose logits
        (batch, vocab) at the metric positions come back too.
        """
        if self._fixed is not None or self._grouped is not None:
            return self.values(chunk), None
        run = self.engine.run(chunk.corrupted, chunk.positions, keep_outputs=True)
        return run.outputs, run.logits
