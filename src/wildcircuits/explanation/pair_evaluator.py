"""Exact metrics of sets of (component, position) pairs (`positions.PairSpace`): every other
pair's output replaced by its ablation value at its tokens.

`PairEvaluator` keeps one problem's ablation values and reference circuits (full, empty) and
evaluates circuits stacked as copies of each chunk; `traced` runs one circuit keeping the
residual stream entering every layer (a `Trace`), from which circuits that differ from it only
at later layers resume (the compact-circuit search, the criteria). `pair_metrics` is the
one-call form.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from wildcircuits.errors import WildcircuitsError
from wildcircuits.evaluation.faithfulness import CircuitMetrics, normalized_faithfulness
from wildcircuits.explanation.positions import pair_space
from wildcircuits.models.instrumented import InstrumentedModel
from wildcircuits.patching.ablation_spec import AblationKind, AblationSpec
from wildcircuits.patching.edge_ablation import AblationCache
from wildcircuits.patching.edges import EdgeForward, Resume
from wildcircuits.patching.problem import PatchingProblem
from wildcircuits.results.explain import Pair

#: Rows of one stacked forward when several circuits are evaluated at once (copies of a chunk).
MAX_ROWS = 64


class PairEvaluator:
    """Exact batch-mean metrics of sets of kept pairs on one problem and ablation: every other
    (component, position) pair's output is replaced by its ablation value at its tokens
    (`input` and `logits` always kept). Ablation values are computed once per chunk of rows and
    kept; m(full) (every pair kept: the clean run) and m(empty) (no pair kept) once.

    forwards: circuit evaluations run so far, one per circuit per chunk (a stacked forward of
    k circuits counts k: its cost is k chunks' rows)."""

    def __init__(
        self,
        engine: EdgeForward,
        problem: PatchingProblem,
        spec: AblationSpec | str = "counterfactual",
        batch_size: int = 16,
        share_prefix: bool = True,
    ):
        self.engine, self.problem = engine, problem
        self.space = pair_space(engine.graph, problem)
        cache = AblationCache(engine, problem, spec, batch_size)
        self.spec = cache.spec
        self.chunks = problem.chunks(batch_size)
        self.values, self.prefixes, corrupted = [], [], 0.0
        for rows, chunk in self.chunks:
            values, logits = cache.for_chunk(chunk)
            self.values.append(values)
            self.prefixes.append(cache.prefix(chunk) if share_prefix else None)
            if logits is not None:
                corrupted += float(problem.score(logits, rows).double().sum())
        counterfactual = self.spec.kind is AblationKind.COUNTERFACTUAL
        self.m_corrupted = corrupted / problem.batch if counterfactual else None
        self.forwards = 0
        self.m_full, self.m_empty = self.metrics([None, ()])

    def metrics(self, circuits: Sequence[Iterable[Pair] | None]) -> list[float]:
        """Batch-mean metric of each circuit (None: every pair kept)."""
        return self.row_metrics(circuits).mean(1).tolist()

    def row_metrics(
        self, circuits: Sequence[Iterable[Pair] | None], bases: Sequence[Trace] = ()
    ) -> torch.Tensor:
        """(n_circuits, batch) float64: the metric of every row under each circuit (None: every
        pair kept), circuits stacked as copies of each chunk (at most MAX_ROWS rows a forward).
        bases: traces of circuits on this evaluator (`traced`); each circuit resumes the base it
        agrees with longest, from the first layer where they differ (circuits are stacked in
        that order, each forward from its group's lowest layer). The values are the full runs'."""
        kept = [self.space.kept(c) for c in circuits]
        starts = [self._closest(k, bases) for k in kept]  # (base index | None, layer)
        order = sorted(range(len(kept)), key=lambda j: (starts[j][0] is not None, starts[j]))
        rows_out = torch.zeros(len(kept), self.problem.batch, dtype=torch.float64)
        for i, (rows, chunk) in enumerate(self.chunks):
            step = max(1, MAX_ROWS // chunk.batch)
            for group in _groups(order, starts, step):
                base, layer = min(starts[j] for j in group)
                start = None if base is None else bases[base].resume(i, layer)
                run = self._run(i, [kept[j] for j in group], start)
                logits = run.logits.unflatten(0, (len(group), chunk.batch))
                for j, copy in zip(group, logits, strict=True):
                    rows_out[j, rows] = self.problem.score(copy, rows).double().cpu()
        return rows_out

    def _run(self, chunk: int, kept: Sequence[torch.Tensor], start: Resume | None, record=False):
        """One engine forward of chunk `chunk` with the (slot, sender) masks `kept` stacked as
        copies, resumed from `start`; counted in `forwards`."""
        rows, part = self.chunks[chunk]
        mask = torch.cat([self.space.mask(k, rows) for k in kept])
        self.forwards += len(kept)
        return self.engine.run(
            part.clean, part.positions, ablation=self.values[chunk], node_ablated=mask,
            copies=len(kept), prefix=self.prefixes[chunk], start=start, record=record,
        )  # fmt: skip

    def _closest(self, kept: torch.Tensor, bases: Sequence[Trace]) -> tuple[int | None, int]:
        """(the base agreeing with `kept` up to the latest layer, that layer); (None, 0) when
        there is no base or none agrees on a single layer."""
        best: tuple[int | None, int] = (None, 0)
        for index, base in enumerate(bases):
            layer = self._first_difference(base.kept, kept)
            if layer > best[1]:
                best = (index, layer)
        return best

    def faithfulness(self, circuits: Sequence[Iterable[Pair] | None]) -> list[float]:
        """Normalized faithfulness of each circuit: (m - m_empty) / (m_full - m_empty)."""
        m_full, m_empty = self.m_full, self.m_empty
        return [normalized_faithfulness(m, m_full, m_empty) for m in self.metrics(circuits)]

    def traced(self, pairs: Iterable[Pair], base: Trace | None = None) -> tuple[float, Trace]:
        """(normalized faithfulness of one circuit, its `Trace`). With `base` (another
        circuit's trace on this evaluator), each chunk's run resumes from base's residual
        stream at the first layer where the two circuits keep different pairs: nothing
        before that layer differs, so the result is the full run's (`metrics`)."""
        kept = self.space.kept(pairs)
        layer = 0 if base is None else self._first_difference(base.kept, kept)
        rows_out = torch.zeros(self.problem.batch, dtype=torch.float64)
        states = []
        for i, (rows, _) in enumerate(self.chunks):
            earlier = {} if layer == 0 else {k: v for k, v in base.states[i].items() if k < layer}
            run = self._run(i, [kept], None if layer == 0 else base.resume(i, layer), record=True)
            states.append(earlier | run.states)
            rows_out[rows] = self.problem.score(run.logits, rows).double().cpu()
        value = normalized_faithfulness(float(rows_out.mean()), self.m_full, self.m_empty)
        return value, Trace(kept, states, rows_out)

    def _first_difference(self, a: torch.Tensor, b: torch.Tensor) -> int:
        """The first layer with a sender kept at some position in one of the (slot, sender)
        masks and not the other (the last layer where none is: it is then run again)."""
        senders = (a ^ b).any(0).nonzero().flatten().tolist()
        last = self.engine.model.n_layers - 1
        return min([self.engine.graph.senders[s].layer for s in senders], default=last)


@dataclass(frozen=True)
class Trace:
    """One circuit's runs on a `PairEvaluator`'s chunks, kept so that circuits differing from it
    only at later layers resume them: kept (slot, sender) bool; states: per chunk, layer -> the
    residual stream entering it; rows: (batch,) float64 its metric per row."""

    kept: torch.Tensor
    states: list[dict[int, torch.Tensor]]
    rows: torch.Tensor

    def resume(self, chunk: int, layer: int) -> Resume:
        """The state entering `layer` on chunk `chunk` (a node-position run: no outputs)."""
        return Resume(layer, self.states[chunk][layer], None)


def _groups(order: list[int], starts: list[tuple[int | None, int]], step: int) -> list[list[int]]:
    """Consecutive circuit indices in groups of at most `step` with one base each (a stacked
    forward resumes one base)."""
    groups: list[list[int]] = []
    for j in order:
        last = groups[-1] if groups else None
        if last is not None and len(last) < step and starts[last[-1]][0] == starts[j][0]:
            last.append(j)
        else:
            groups.append([j])
    return groups


def pair_metrics(
    model: InstrumentedModel,
    problem: PatchingProblem,
    circuits: Sequence[Sequence[Pair]],
    spec: AblationSpec | str = "counterfactual",
    batch_size: int = 16,
    engine: EdgeForward | None = None,
) -> CircuitMetrics:
    """Exact metrics of circuits of (component, position) pairs: each keeps its pairs (input
    and logits always kept) and ablates every other pair's output at its tokens; full = every
    pair (the clean run), empty = none."""
    if batch_size < 1:
        raise WildcircuitsError(f"batch_size must be >= 1, got {batch_size}")
    evaluator = PairEvaluator(engine or EdgeForward(model), problem, spec, batch_size)
    return CircuitMetrics(
        metric=tuple(evaluator.metrics(list(circuits))),
        m_full=evaluator.m_full,
        m_empty=evaluator.m_empty,
        m_corrupted=evaluator.m_corrupted,
        n_examples=problem.batch,
        forwards=evaluator.forwards,
        provenance={**problem.provenance, **evaluator.spec.describe(), "circuit": "pairs"},
    )
